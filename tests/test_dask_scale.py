"""Resumable Parquet output of skembed.dask (``write_parquet``) and states kept across runs
(``WorkerSetup(state_directory=...)``), on Dask's synchronous scheduler with a tiny random BERT.

What is checked: one file per partition, rows and index (ids) in input order, the same vectors
as one call over the whole input; a job cut short and run again embeds only the partitions
whose file is missing (``documents_computed`` counts them) and ends with the same files; a
folder written with another partitioning or output is refused; ``resume=False`` writes
everything again; states kept in a directory spare the forward pass of a re-run.
benchmarks/bench_scale.py runs the same at scale on a LocalCluster, with workers killed.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

dask = pytest.importorskip("dask")
dd = pytest.importorskip("dask.dataframe")
pytest.importorskip("distributed")
pytest.importorskip("pyarrow")

import skembed  # noqa: E402
import skembed.dask as sd  # noqa: E402
from skembed import TransformerDocumentEmbeddings  # noqa: E402
from skembed._shared import SHARED  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_caches")

N_DOCS, N_PARTS = 120, 6
WORDS = "the quick brown fox jumps over lazy dog a cell phone in prison near blood".split()


@pytest.fixture(autouse=True)
def sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


@pytest.fixture(scope="module")
def corpus() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    # Distinct documents (a number in each), so that documents_computed counts each once.
    texts = [" ".join([*rng.choice(WORDS, size=rng.integers(0, 8)), str(i)]) for i in range(N_DOCS)]
    # Ids that are neither sorted like the texts nor a RangeIndex: keeping them is visible.
    ids = rng.permutation(N_DOCS) * 7 + 1000
    return pd.DataFrame({"text": texts, "lang": "en"}, index=pd.Index(ids, name="id"))


@pytest.fixture
def emb(tiny_model):
    return TransformerDocumentEmbeddings(tiny_model("bert"), pooling="mean", batch_size=8).fit()


def _texts(corpus):
    return dd.from_pandas(corpus, npartitions=N_PARTS, sort=False)


def _files(folder) -> dict[str, bytes]:
    return {
        name: (folder / name).read_bytes()
        for name in sorted(os.listdir(folder))
        if name.endswith(".parquet")
    }


def test_one_file_per_partition_rows_ids_and_vectors_kept(emb, corpus, tmp_path):
    expected = emb.transform(corpus["text"])
    skembed.clear_cache(models=False)
    report = sd.write_parquet(emb, _texts(corpus), tmp_path, column="text")
    assert report == {"written": list(range(N_PARTS)), "skipped": [], "rows": N_DOCS}
    names = [f"part.{i:05d}.parquet" for i in range(N_PARTS)]
    assert list(_files(tmp_path)) == names
    out = dd.read_parquet(tmp_path).compute()
    assert out.index.equals(corpus.index)  # every id once, in input order
    assert list(out.columns) == list(emb.get_feature_names_out())
    # The same documents in other batches: the contract's tolerance, measured 0 here.
    np.testing.assert_allclose(out.to_numpy(), expected, rtol=0, atol=1e-5)
    assert skembed.cache_info()["documents_computed"] == N_DOCS


def test_a_job_cut_short_resumes_with_the_missing_partitions_only(emb, corpus, tmp_path):
    sd.write_parquet(emb, _texts(corpus), tmp_path, column="text")
    complete = _files(tmp_path)
    # What a killed job leaves: some partitions written, others not, a half-written file.
    for number in (1, 4):
        os.remove(tmp_path / f"part.{number:05d}.parquet")
    leftover = tmp_path / ".part.00004.parquet.0123abcd.tmp"
    leftover.write_bytes(b"PAR1 half a file")
    skembed.clear_cache(models=False)  # documents_computed from 0, nothing in memory
    report = sd.write_parquet(emb, _texts(corpus), tmp_path, column="text")
    assert report["written"] == [1, 4] and report["skipped"] == [0, 2, 3, 5]
    per_part = N_DOCS // N_PARTS
    assert report["rows"] == 2 * per_part
    assert skembed.cache_info()["documents_computed"] == 2 * per_part
    assert not leftover.exists()
    assert _files(tmp_path) == complete  # byte for byte what one run wrote
    skembed.clear_cache(models=False)
    done = sd.write_parquet(emb, _texts(corpus), tmp_path, column="text")
    assert done == {"written": [], "skipped": list(range(N_PARTS)), "rows": 0}
    assert skembed.cache_info()["documents_computed"] == 0


def test_predict_goes_to_a_prediction_column(emb, corpus, tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    labels = (corpus["text"].str.len() > 20).to_numpy()
    pipe = make_pipeline(emb, LogisticRegression()).fit(corpus["text"], labels)
    sd.write_parquet(pipe, _texts(corpus), tmp_path, column="text", method="predict")
    out = pd.read_parquet(tmp_path)
    assert list(out.columns) == ["prediction"] and out.index.equals(corpus.index)
    np.testing.assert_array_equal(out["prediction"].to_numpy(), pipe.predict(corpus["text"]))


def test_another_partitioning_or_output_is_refused_and_resume_false_rewrites(emb, corpus, tmp_path):
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline

    sd.write_parquet(emb, _texts(corpus), tmp_path, column="text")
    other = dd.from_pandas(corpus, npartitions=N_PARTS // 2, sort=False)
    with pytest.raises(ValueError, match="different npartitions.*resume=False"):
        sd.write_parquet(emb, other, tmp_path, column="text")
    reduced = make_pipeline(emb, PCA(n_components=4)).fit(corpus["text"])
    with pytest.raises(ValueError, match="different columns \\("):
        sd.write_parquet(reduced, _texts(corpus), tmp_path, column="text")
    report = sd.write_parquet(emb, other, tmp_path, column="text", resume=False)
    assert report["written"] == list(range(N_PARTS // 2))
    assert len(_files(tmp_path)) == N_PARTS // 2  # the six files of the first run are gone
    assert pd.read_parquet(tmp_path).index.equals(corpus.index)
    with pytest.raises(ValueError, match="resume=1 is not valid"):
        sd.write_parquet(emb, other, tmp_path, column="text", resume=1)
    with pytest.raises(ValueError, match="column="):
        sd.write_parquet(emb, other, tmp_path)


@pytest.fixture
def restore_shared(monkeypatch):
    """Put the folder tier back as it was after a test that keeps a directory."""
    for name in ("root", "kept", "_owner_pid", "enabled"):
        monkeypatch.setattr(SHARED, name, getattr(SHARED, name))
    monkeypatch.setenv("SKEMBED_SHARED_STATES", os.environ.get("SKEMBED_SHARED_STATES", ""))
    yield
    skembed.set_cache(directory=None, shared=True, max_bytes=2**30)


def test_worker_setup_state_directory_spares_the_forward_pass_of_a_rerun(
    emb, corpus, tmp_path, restore_shared
):
    plugin = sd.WorkerSetup(state_directory=tmp_path / "states", state_max_bytes=2**20)
    plugin.setup()  # what a worker does when the plugin is registered
    assert skembed.cache_info()["state_directory"] == str(tmp_path / "states")
    first = sd.write_parquet(emb, _texts(corpus), tmp_path / "out", column="text")
    assert skembed.cache_info()["documents_computed"] == N_DOCS == first["rows"]
    expected = pd.read_parquet(tmp_path / "out")
    skembed.clear_cache(models=False)  # a new run: nothing in memory, the folder kept
    sd.write_parquet(emb, _texts(corpus), tmp_path / "out", column="text", resume=False)
    assert skembed.cache_info()["documents_computed"] == 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out"), expected)
    with pytest.raises(ValueError, match="state_directory needs state_cache=True"):
        sd.WorkerSetup(state_cache=False, state_directory=tmp_path)


def test_a_task_run_again_reads_its_written_file_instead_of_embedding(emb, corpus, tmp_path):
    """Dask runs a task again when the worker holding its result died: the partition's file,
    written by this call, is counted, not embedded and written a second time."""
    from skembed.dask import _write_partition

    part = corpus["text"].iloc[:20]
    path = str(tmp_path / "part.00000.parquet")
    assert _write_partition(part, emb, path, "transform", np.float32, 0) == 20
    written = os.stat(path).st_mtime_ns
    skembed.clear_cache(models=False)
    assert _write_partition(part, emb, path, "transform", np.float32, 0) == 20
    assert skembed.cache_info()["documents_computed"] == 0
    assert os.stat(path).st_mtime_ns == written
