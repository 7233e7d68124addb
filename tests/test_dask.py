"""skembed on Dask: a LocalCluster of 2 worker processes (1 thread each) and the packaged MiniLM.

What is checked: results equal the single-process ones, the forward passes ran in the workers
(their state-cache counters move, the client's do not), each worker process loaded the model
once, a worker killed mid-job loses and duplicates no rows, and Parquet output round-trips.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import time

import numpy as np
import pandas as pd
import pytest
import torch

dask = pytest.importorskip("dask")
dd = pytest.importorskip("dask.dataframe")
db = pytest.importorskip("dask.bag")
distributed = pytest.importorskip("distributed")
pytest.importorskip("pyarrow")

from tolerances import CONTRACT_ATOL, proba_atol  # noqa: E402

import skembed  # noqa: E402
import skembed.dask as sd  # noqa: E402
from skembed import TransformerDocumentEmbeddings, TransformerEmbeddings  # noqa: E402

N_DOCS = 2000
N_PARTS = 16
STATE_BYTES = 256 * 2**20
WORDS = (
    "the a cat dog sat on mat quick brown fox jumps over lazy river bank money loan walked "
    "along deposit water fish swam under bridge green house city night light rain fell "
    "softly across old stone road people talked about weather markets prices rose again"
).split()


def _corpus(n: int, seed: int = 0) -> pd.Series:
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(2, 11))) for _ in range(n)]
    # A non-default index, so that keeping the partition index is visible.
    return pd.Series(texts, index=pd.Index(np.arange(n) * 3 + 7, name="doc_id"), name="text")


@pytest.fixture(scope="module")
def one_thread():
    """Client-side references with 1 torch thread, as the workers use (dask sets OMP_NUM_THREADS=1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def client(one_thread):
    from distributed import Client, LocalCluster

    saved = dict(os.environ)  # the nanny copies OMP_NUM_THREADS=1 etc. into this process
    env = {
        k: os.environ[k]
        for k in ("HF_HUB_OFFLINE", "SKEMBED_OFFLINE", "ONEDNN_MAX_CPU_ISA", "SKEMBED_HOME")
        if k in os.environ
    }
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env=env,
            silence_logs=logging.CRITICAL,
        ) as cluster,
        Client(cluster) as client,
    ):
        # Applied to every worker process, also to one that restarts after a crash.
        client.register_plugin(sd.WorkerSetup(state_max_bytes=STATE_BYTES, torch_threads=1))
        yield client
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def corpus() -> pd.Series:
    return _corpus(N_DOCS)


@pytest.fixture(scope="module")
def doc_emb(minilm_path):
    return TransformerDocumentEmbeddings(minilm_path, pooling="mean").fit()


@pytest.fixture(scope="module")
def reference(doc_emb, corpus, one_thread) -> np.ndarray:
    """The single-process result: all 2,000 documents in one call, in this process.

    The workers run other batches in other processes, so their rows match it within the
    contract's tolerance, not bit for bit (how close depends on the CPU's kernels).
    """
    skembed.set_cache(enabled=False)  # really run the network, and keep no states here
    try:
        return doc_emb.transform(corpus)
    finally:
        skembed.set_cache(enabled=True)


def _worker_info(client) -> dict:
    return client.run(skembed.cache_info)


def _reset_workers(client) -> None:
    """Forget cached states (not models) in every worker, so forward passes are counted."""
    client.run(skembed.clear_cache, models=False)


def _check_ran_on_workers(client, n_docs: int, client_before: dict) -> None:
    """Every document was looked up (and run) in a worker, none in the client; one load each."""
    info = _worker_info(client)
    looked_up = {w: i["state_hits"] + i["state_misses"] for w, i in info.items()}
    assert sum(looked_up.values()) == n_docs
    assert all(n > 0 for n in looked_up.values()), looked_up  # both workers took partitions
    for worker, i in info.items():
        assert list(i["model_loads"].values()) == [1], (worker, i["model_loads"])
        assert not i["shared_states"] and i["shared_writes"] == 0  # WorkerSetup's default
    after = skembed.cache_info()
    for key in ("state_hits", "state_misses"):
        assert after[key] == client_before[key]


def _check_equal(values: np.ndarray, reference: np.ndarray) -> None:
    assert values.shape == reference.shape
    assert np.abs(values - reference).max() <= CONTRACT_ATOL


def test_fitted_estimator_ships_small_and_meta_runs_nothing(doc_emb, corpus):
    blob = pickle.dumps(doc_emb)
    assert len(blob) < 2_000  # no weights inside
    shipped = pickle.loads(blob)
    before = skembed.cache_info()
    out = sd.transform(shipped, dd.from_pandas(corpus, npartitions=N_PARTS))
    assert "_model" not in shipped.__dict__  # building the graph and meta never loaded it
    after = skembed.cache_info()
    assert (after["state_hits"], after["state_misses"]) == (
        before["state_hits"],
        before["state_misses"],
    )
    assert list(out.columns) == list(doc_emb.get_feature_names_out())
    assert (out.dtypes == np.float32).all()
    assert out._meta.index.name == "doc_id"


def test_map_partitions_on_workers(client, doc_emb, corpus, reference):
    _reset_workers(client)
    emb = pickle.loads(pickle.dumps(doc_emb)).set_output(transform="pandas")
    texts = dd.from_pandas(corpus, npartitions=N_PARTS)
    before = skembed.cache_info()
    out = texts.map_partitions(emb.transform, meta=sd.output_meta(emb, texts._meta.index))
    result = out.compute()
    _check_ran_on_workers(client, N_DOCS, before)
    assert result.index.equals(corpus.index)
    _check_equal(result.to_numpy(), reference)


def test_helper_on_workers_and_parquet(client, doc_emb, corpus, reference, tmp_path):
    _reset_workers(client)
    texts = dd.from_pandas(corpus.to_frame().assign(other=1), npartitions=N_PARTS)
    before = skembed.cache_info()
    out = sd.transform(doc_emb, texts, column="text")
    assert out.divisions == texts.divisions
    # Computed together, so the embedding runs once for all three: the frame, the process
    # that made each partition, and the Parquet files.
    where = out.map_partitions(
        lambda p: pd.Series(os.getpid(), index=p.index[:1]), meta=(None, int)
    )
    written = out.to_parquet(tmp_path / "pooled", compute=False)
    result, pids, _ = dask.compute(out, where, written)
    _check_ran_on_workers(client, N_DOCS, before)
    assert set(pids) == set(client.run(os.getpid).values())
    assert list(result.columns) == list(doc_emb.get_feature_names_out())
    assert result.index.equals(corpus.index)
    _check_equal(result.to_numpy(), reference)
    assert len(list((tmp_path / "pooled").glob("*.parquet"))) == N_PARTS  # one per partition
    pd.testing.assert_frame_equal(dd.read_parquet(tmp_path / "pooled").compute(), result)


def test_token_frames_and_parquet(client, minilm_path, corpus, tmp_path):
    tok = TransformerEmbeddings(minilm_path).fit()
    docs = corpus.iloc[:200]
    small = dd.from_pandas(docs, npartitions=4)
    frame = sd.transform(tok, small).compute()
    ragged = tok.transform(docs)
    assert len(frame) == ragged.shape[0]
    assert frame["token"].tolist() == [t for d in ragged.tokens for t in d]
    assert (frame.index == np.repeat(docs.index, ragged.lengths)).all()
    assert frame["position"].tolist() == [j for n in ragged.lengths for j in range(n)]
    assert np.abs(frame.iloc[:, 2:].to_numpy() - ragged.to_numpy()).max() <= CONTRACT_ATOL
    sd.to_parquet(tok, small, tmp_path / "tokens")
    # A second run on the workers, whose partitions may meet other cached states.
    written = dd.read_parquet(tmp_path / "tokens").compute()
    pd.testing.assert_frame_equal(written, frame, check_exact=False, rtol=0, atol=CONTRACT_ATOL)


def test_delayed_and_bag(client, doc_emb, corpus):
    docs = corpus.iloc[:200].tolist()
    expected = doc_emb.transform(docs)
    _reset_workers(client)
    before = skembed.cache_info()
    chunks = [docs[i : i + 50] for i in range(0, 200, 50)]
    parts = dask.compute(*[dask.delayed(doc_emb.transform)(c) for c in chunks])
    _check_ran_on_workers(client, 200, before)
    _check_equal(np.concatenate(parts), expected)

    _reset_workers(client)
    rows = db.from_sequence(docs, npartitions=4).map_partitions(doc_emb.transform).compute()
    _check_ran_on_workers(client, 200, before)
    assert len(rows) == 200
    _check_equal(np.stack(rows), expected)


def test_fit_on_a_worker(client, minilm_path, corpus, reference):
    """A client without the model: fit on a worker, get back a fitted estimator without weights."""
    unfitted = TransformerDocumentEmbeddings(minilm_path, pooling="mean")
    fitted = client.submit(unfitted.fit).result()
    assert fitted.n_features_out_ == 384 and "_model" not in fitted.__dict__
    out = sd.transform(fitted, dd.from_pandas(corpus.iloc[:100], npartitions=2)).compute()
    assert "_model" not in fitted.__dict__
    _check_equal(out.to_numpy(), reference[:100])


def test_predict_with_a_fitted_pipeline(client, doc_emb, corpus):
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    docs = corpus.iloc[:200]
    labels = np.where(docs.str.contains("river"), "river", "other")
    pipe = make_pipeline(clone(doc_emb), LogisticRegression(max_iter=500)).fit(docs, labels)
    texts = dd.from_pandas(docs, npartitions=4)
    predicted = sd.transform(pipe, texts, method="predict").compute()
    assert predicted.index.equals(docs.index)
    assert (predicted.to_numpy() == pipe.predict(docs)).all()
    proba = sd.transform(pipe, texts, method="predict_proba").compute()
    assert list(proba.columns) == ["other", "river"]
    # Features from the workers are within the contract's tolerance of the client's.
    assert np.abs(proba.to_numpy() - pipe.predict_proba(docs)).max() <= proba_atol(pipe[-1])


def _times_in_memory(dask_scheduler, keys) -> list[int]:
    """How often the scheduler saw each key's result arrive (twice = computed again)."""
    return [sum(t.finish == "memory" for t in dask_scheduler.story(k)) for k in keys]


def test_killed_worker_loses_and_duplicates_no_rows(client, doc_emb, corpus, reference):
    _reset_workers(client)
    pids = client.run(os.getpid)
    victim = sorted(pids)[0]
    # Half the corpus in 8 partitions: enough work to kill a worker in the middle of it.
    half = corpus.iloc[: N_DOCS // 2]
    future = client.compute(sd.transform(doc_emb, dd.from_pandas(half, npartitions=N_PARTS // 2)))
    deadline = time.monotonic() + 60
    while not client.has_what().get(victim) and time.monotonic() < deadline:
        time.sleep(0.05)
    lost = list(client.has_what().get(victim, ()))
    assert lost, "the victim never finished a partition"
    assert not future.done()  # mid-job: the victim's finished partitions die with it
    os.kill(pids[victim], signal.SIGKILL)
    result = future.result(timeout=120)
    assert result.index.equals(half.index)  # one row per document, in order
    _check_equal(result.to_numpy(), reference[: N_DOCS // 2])
    assert min(client.run_on_scheduler(_times_in_memory, keys=lost)) >= 2  # recomputed
    client.wait_for_workers(2, timeout=60)  # the nanny started a new worker process
    assert pids[victim] not in client.run(os.getpid).values()  # the old one really died
    info = _worker_info(client).values()
    assert [i["state_max_bytes"] for i in info] == [STATE_BYTES] * 2  # the plugin ran again


def test_errors_name_the_partition_and_label(doc_emb, corpus):
    bad = corpus.iloc[:40].copy()
    bad.iloc[25] = None
    texts = dd.from_pandas(bad, npartitions=4)
    with dask.config.set(scheduler="sync"), pytest.raises(ValueError) as info:
        sd.transform(doc_emb, texts).compute()
    assert "Dask partition 2" in str(info.value.__notes__)
    assert f"index label {bad.index[25]}" in str(info.value.__notes__)
    with pytest.raises(ValueError, match="column="):
        sd.transform(doc_emb, dd.from_pandas(corpus.to_frame().assign(x=1), npartitions=2))
    with pytest.raises(TypeError, match="from_pandas"):
        sd.transform(doc_emb, corpus)
    with pytest.raises(ValueError, match="method='fit' is not valid"):
        sd.output_meta(doc_emb, method="fit")
