"""States kept in a directory across processes and sessions: ``set_cache(directory=...)``.

A second process with the same model files, precision, device and documents runs no document
through the network and gets the same numbers bit for bit; concurrent processes compute each
document once among them; a damaged or evicted batch file is computed again and written anew;
the directory holds at most ``max_disk_bytes`` of batch files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import skembed
from skembed import FlairEmbeddings, TransformerEmbeddings
from skembed._shared import SHARED
from skembed.cache import STATES

TEXTS = [f"{w} cell number {i} , the dog sat on the {w} mat" for i, w in enumerate("abcdefgh")]
TEXTS += ["", "xylophones quizzically jabbering over zigzagging wharves"]

_RUN = """
import json, sys
import numpy as np
import skembed
model, directory, out = sys.argv[1:4]
skembed.set_cache(directory=directory)
emb = skembed.TransformerEmbeddings(model, layers="-1,0", pooling_operation="mean", batch_size=3)
np.save(out, emb.fit().transform(json.loads(sys.argv[4])).to_numpy())
print(skembed.cache_info()["documents_computed"])
"""


def run(model, directory, out, texts=TEXTS) -> subprocess.Popen:
    args = [sys.executable, "-c", _RUN, model, str(directory), str(out), json.dumps(texts)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)


def computed(proc: subprocess.Popen) -> int:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0
    return int(out.split()[-1])


@pytest.fixture(scope="module")
def bert(tiny_model) -> str:
    return tiny_model("bert")


def test_a_new_process_reads_what_an_earlier_one_kept(bert, tmp_path):
    folder = tmp_path / "states"
    assert computed(run(bert, folder, tmp_path / "a.npy")) == len(TEXTS) - 1  # "" runs nothing
    assert computed(run(bert, folder, tmp_path / "b.npy")) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    assert not [p for p in folder.iterdir() if p.name.startswith("tmp")]  # atomic writes


def test_concurrent_processes_compute_each_document_once(bert, tmp_path):
    folder = tmp_path / "states"
    procs = [run(bert, folder, tmp_path / f"{k}.npy") for k in range(2)]
    assert sum(computed(p) for p in procs) == len(TEXTS) - 1
    np.testing.assert_array_equal(np.load(tmp_path / "0.npy"), np.load(tmp_path / "1.npy"))


@pytest.fixture
def kept(tmp_path, monkeypatch):
    """This process writing to a kept directory; "a new session" is this process with its
    memory cache cleared."""
    folder = tmp_path / "states"
    folder.mkdir()
    monkeypatch.setattr(SHARED, "root", str(folder))
    monkeypatch.setattr(SHARED, "kept", True)
    monkeypatch.setattr(SHARED, "enabled", True)
    monkeypatch.setattr(SHARED, "_owner_pid", os.getpid())
    monkeypatch.setattr(SHARED, "max_disk_bytes", SHARED.max_disk_bytes)
    skembed.clear_cache(models=False)
    yield folder
    skembed.clear_cache(models=False)


def embed(model, texts=TEXTS):
    emb = TransformerEmbeddings(model, layers="-1,0", pooling_operation="mean", batch_size=2)
    return emb.fit().transform(texts).to_numpy()


def new_session() -> None:
    STATES.clear()  # the memory tier only: the directory stays (clear_cache leaves it too)
    skembed.clear_cache(models=False)


def batch_files(folder):
    return sorted((folder / "batches").iterdir())


def test_a_damaged_batch_file_is_computed_again_and_written_anew(bert, kept):
    first = embed(bert)
    for path in batch_files(kept):
        path.write_bytes(b"not a safetensors file")
    new_session()
    np.testing.assert_array_equal(embed(bert), first)
    assert skembed.cache_info()["documents_computed"] == len(TEXTS) - 1
    new_session()
    np.testing.assert_array_equal(embed(bert), first)
    assert skembed.cache_info()["documents_computed"] == 0  # the new files were kept


def test_the_directory_holds_at_most_its_disk_budget(bert, kept):
    first = embed(bert)
    sizes = [p.stat().st_size for p in batch_files(kept)]
    assert len(sizes) == 5  # 9 documents to run, 2 per batch
    skembed.set_cache(max_disk_bytes=2 * max(sizes))
    new_session()
    embed(bert, [f"other text {i}" for i in range(6)])  # 3 new batch files: the oldest go
    assert sum(p.stat().st_size for p in batch_files(kept)) <= 2 * max(sizes)
    new_session()
    np.testing.assert_array_equal(embed(bert), first)  # evicted documents computed again
    assert 0 < skembed.cache_info()["documents_computed"] <= len(TEXTS) - 1


def test_clear_cache_leaves_the_directory(bert, kept):
    embed(bert)
    skembed.clear_cache()
    assert batch_files(kept)
    embed(bert)
    assert skembed.cache_info()["documents_computed"] == 0


def test_every_network_family_keeps_its_states(tmp_path, kept):
    """The one-tensor-per-document states (Flair, ELMo, Transformer-XL...) too."""
    from tiny_embedders import build_files

    lm = build_files(tmp_path / "files")["flair"]
    first = FlairEmbeddings(lm, device="cpu").fit().transform(TEXTS).to_numpy()
    new_session()
    again = FlairEmbeddings(lm, device="cpu").fit().transform(TEXTS).to_numpy()
    assert skembed.cache_info()["documents_computed"] == 0
    np.testing.assert_array_equal(again, first)


def test_set_cache_directory_exports_it_to_workers_and_back(tmp_path, monkeypatch):
    """Processes started after set_cache(directory=...) use it; None goes back to a
    temporary folder of the session, which is then removed as usual."""
    monkeypatch.setattr(SHARED, "root", SHARED.root)
    monkeypatch.setattr(SHARED, "kept", SHARED.kept)
    monkeypatch.setattr(SHARED, "_owner_pid", SHARED._owner_pid)
    monkeypatch.setenv(_ENV := "SKEMBED_SHARED_STATES", os.environ.get(_ENV, ""))
    SHARED.start()
    skembed.set_cache(directory=tmp_path / "kept")
    child = skembed._shared.SharedStates()  # what a worker started now sees
    assert child.kept and child.root == str(tmp_path / "kept") and child.active
    assert skembed.cache_info()["state_directory"] == str(tmp_path / "kept")
    skembed.set_cache(directory=None)
    child = skembed._shared.SharedStates()
    assert not child.kept and child.root == SHARED.root != str(tmp_path / "kept")
    assert skembed.cache_info()["state_directory"] is None
