"""skembed on Ray Data: one local Ray (2 CPUs) for the whole file, tiny random models.

What is checked: the output keeps the input's other columns, rows and order, and equals the
single-process result (contract tolerance); each actor process loaded the model once; an actor
killed in the middle of a batch loses and duplicates no rows; predict and predict_proba equal a
single process's; bad arguments and bad documents give clear errors; ``import skembed`` does not
import Ray, and ``skembed.ray`` without Ray says how to install it.
"""

from __future__ import annotations

import doctest
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer  # noqa: E402
from tolerances import CONTRACT_ATOL, proba_atol  # noqa: E402

import skembed  # noqa: E402
import skembed.ray as sr  # noqa: E402
from skembed import TransformerDocumentEmbeddings, TransformerEmbeddings  # noqa: E402

N_DOCS = 400
N_BLOCKS = 8
BATCH = 25
# Two actors of half a CPU each leave a CPU to the tasks that feed them (ray.init(num_cpus=2)).
ACTORS = dict(concurrency=2, num_cpus=0.5, batch_size=BATCH)
# Where the number of actors does not matter: each actor takes seconds to start (imports).
ONE_ACTOR = dict(ACTORS, concurrency=1)
WORDS = (
    "the a cat dog sat on mat quick brown fox jumps over lazy river bank money loan walked "
    "along deposit water fish swam under bridge green house city night light rain fell"
).split()


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the test run: 2 CPUs, no dashboard, no usage reports, no network.

    Only this file uses Ray, so it starts once per test run; it stops when the file is done,
    so that Ray's daemons do not share the CPUs with the tests that come after it."""
    saved = dict(os.environ)
    # The raylet and its workers inherit this environment: no usage stats, the offline settings
    # of conftest.py, and this folder (the workers unpickle the helpers below) and the
    # repository (skembed) on the path.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    here = Path(__file__).parent
    paths = [str(here), str(here.parent), saved.get("PYTHONPATH")]
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    # A short folder: Ray's socket paths in it must stay under the 107 bytes of a Unix socket
    # name, which a folder under pytest's tmp_path (user name, counters) can pass.
    folder = tempfile.mkdtemp(prefix="skembed-ray-")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        _temp_dir=folder,
    )
    ctx = ray.data.DataContext.get_current()
    progress = ctx.enable_progress_bars
    ctx.enable_progress_bars = False
    yield
    ctx.enable_progress_bars = progress
    ray.shutdown()
    shutil.rmtree(folder, ignore_errors=True)
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(1, 9))) for _ in range(N_DOCS)]
    # Ids out of sorted order and a second column, so that keeping rows and order is visible.
    ids = rng.permutation(N_DOCS) * 3 + 11
    return pd.DataFrame({"id": ids, "text": texts, "group": [f"g{i % 5}" for i in range(N_DOCS)]})


@pytest.fixture(scope="module")
def doc_emb(tiny_model):
    return TransformerDocumentEmbeddings(tiny_model("bert"), pooling="mean", device="cpu").fit()


@pytest.fixture(scope="module")
def reference(doc_emb, frame) -> np.ndarray:
    """The single-process result, computed with the network (not the state cache)."""
    skembed.set_cache(enabled=False)
    try:
        return doc_emb.transform(frame["text"])
    finally:
        skembed.set_cache(enabled=True)


def _dataset(frame: pd.DataFrame, n_blocks: int = N_BLOCKS):
    # Blocks cut here: Ray's own split (override_num_blocks) fails on pandas 3's frames.
    bounds = np.linspace(0, len(frame), n_blocks + 1).astype(int)
    return ray.data.from_pandas([frame.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:])])


def _report(X, folder: str, kill_marker: str | None = None):
    """A pipeline step run in the actors after the embedder: note this process's model loads
    and batches; with ``kill_marker``, the first process at its second batch to claim the
    marker kills itself (SIGKILL) before returning that batch."""
    path = Path(folder) / f"{os.getpid()}.json"
    batches = json.loads(path.read_text())["batches"] + 1 if path.exists() else 1
    loads = skembed.cache_info()["model_loads"]
    path.write_text(json.dumps({"batches": batches, "model_loads": list(loads.values())}))
    if kill_marker is not None and batches >= 2:
        try:
            os.remove(kill_marker)  # only one process removes it: the kill happens once
        except FileNotFoundError:
            return X
        Path(folder, "killed").write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return X


def _reporting(doc_emb, folder: Path, kill_marker: Path | None = None):
    step = FunctionTransformer(
        _report,
        kw_args={"folder": str(folder), "kill_marker": kill_marker and str(kill_marker)},
        feature_names_out="one-to-one",
    )
    return make_pipeline(clone(doc_emb), step).fit(["a text"])


def _reports(folder: Path) -> dict[int, dict]:
    return {int(p.stem): json.loads(p.read_text()) for p in folder.glob("*.json")}


def _arrow_type(column: pd.Series):
    """The Arrow type of a column that Ray gave as numpy-backed or Arrow-backed."""
    dtype = column.dtype
    return dtype.pyarrow_dtype if hasattr(dtype, "pyarrow_dtype") else pa.from_numpy_dtype(dtype)


def _check_rows(out: pd.DataFrame, frame: pd.DataFrame, reference: np.ndarray, names) -> None:
    assert list(out.columns) == ["id", "group", *names]
    assert out["id"].tolist() == frame["id"].tolist()  # every row once, in order
    assert out["group"].tolist() == frame["group"].tolist()
    assert {_arrow_type(out[n]) for n in names} == {pa.float32()}
    values = out[names].to_numpy(np.float32)
    assert values.shape == reference.shape
    assert np.abs(values - reference).max() <= CONTRACT_ATOL


def test_transform_keeps_rows_and_loads_once_per_actor(
    ray_session, doc_emb, frame, reference, tmp_path
):
    pipe = _reporting(doc_emb, tmp_path)
    names = list(doc_emb.get_feature_names_out())
    assert sr.output_columns(pipe) == names
    out = sr.transform(pipe, _dataset(frame), **ACTORS).to_pandas()
    _check_rows(out, frame, reference, names)
    reports = _reports(tmp_path)
    assert 1 <= len(reports) <= ACTORS["concurrency"]  # actor processes, none in this one
    assert os.getpid() not in reports
    assert sum(r["batches"] for r in reports.values()) == N_DOCS // BATCH
    assert [r["model_loads"] for r in reports.values()] == [[1]] * len(reports)


def test_an_actor_killed_mid_batch_loses_and_duplicates_no_rows(
    ray_session, doc_emb, frame, reference, tmp_path
):
    marker = tmp_path / "kill-once"
    marker.touch()
    pipe = _reporting(doc_emb, tmp_path, kill_marker=marker)
    # Ray Data restarts a dead actor and retries its batch on it by default.
    out = sr.transform(pipe, _dataset(frame), **ACTORS).to_pandas()
    assert not marker.exists()
    killed = int((tmp_path / "killed").read_text())
    _check_rows(out, frame, reference, list(doc_emb.get_feature_names_out()))
    reports = _reports(tmp_path)
    assert killed in reports and len(reports) >= 2  # the restarted actor is a new process
    assert [r["model_loads"] for r in reports.values()] == [[1]] * len(reports)
    # Ray retries the killed actor's task: the block it was on (the batch it was killed in and
    # the block's batches before it) runs again; the rest ran once.
    ran = sum(r["batches"] for r in reports.values())
    assert N_DOCS // BATCH < ran <= N_DOCS // BATCH + N_DOCS // N_BLOCKS // BATCH


def test_predict_and_predict_proba_equal_a_single_process(ray_session, doc_emb, frame):
    labels = np.where(frame["text"].str.contains("river"), "river", "other")
    pipe = make_pipeline(clone(doc_emb), LogisticRegression(max_iter=500)).fit(
        frame["text"], labels
    )
    data = _dataset(frame)
    proba = sr.predict_proba(pipe, data, **ONE_ACTOR).to_pandas()
    assert list(proba.columns) == ["id", "group", "other", "river"]
    assert proba["id"].tolist() == frame["id"].tolist()
    expected = pipe.predict_proba(frame["text"])
    assert np.abs(proba[["other", "river"]].to_numpy() - expected).max() <= proba_atol(pipe[-1])

    predicted = sr.predict(pipe, data, **ONE_ACTOR).to_pandas()
    assert list(predicted.columns) == ["id", "group", "prediction"]
    assert predicted["id"].tolist() == frame["id"].tolist()
    # Features within CONTRACT_ATOL move a decision value by at most |coef|_1 * CONTRACT_ATOL:
    # beyond that margin the predicted label cannot differ.
    margin = np.abs(pipe[-1].coef_).sum() * CONTRACT_ATOL
    clear = np.abs(pipe.decision_function(frame["text"])) > margin
    assert clear.mean() > 0.9
    assert (predicted["prediction"].to_numpy()[clear] == pipe.predict(frame["text"])[clear]).all()


def test_token_lists_and_other_steps(ray_session, doc_emb, frame):
    from sklearn.decomposition import PCA

    docs = frame.iloc[:60]
    tokens = pd.DataFrame({"id": docs["id"], "text": docs["text"].str.split()})
    pipe = make_pipeline(clone(doc_emb), PCA(n_components=3)).fit(docs["text"])
    out = sr.transform(pipe, _dataset(tokens), **ONE_ACTOR).to_pandas()
    assert list(out.columns) == ["id", "pca0", "pca1", "pca2"]
    assert out["id"].tolist() == docs["id"].tolist()
    expected = pipe.transform(docs["text"])
    assert _arrow_type(out["pca0"]) == pa.from_numpy_dtype(expected.dtype)  # as PCA gives it
    values = out[["pca0", "pca1", "pca2"]].to_numpy(expected.dtype)
    # PCA's rows are projections onto unit vectors: a feature error of CONTRACT_ATOL each moves
    # a component by at most CONTRACT_ATOL times the square root of the input's width.
    atol = CONTRACT_ATOL * np.sqrt(doc_emb.n_features_out_)
    assert np.abs(values - expected).max() <= atol


def test_a_bad_document_names_its_row(ray_session, doc_emb, frame):
    bad = frame.iloc[:40].copy()
    bad.loc[bad.index[30], "text"] = None
    out = sr.transform(doc_emb, _dataset(bad, 2), **ONE_ACTOR)
    # Ray re-raises an actor's error as its own, whose message holds skembed's error and note:
    # the position is within the actor's batch, the note names the row by its other columns.
    with pytest.raises(ray.exceptions.RayTaskError) as info:
        out.to_pandas()
    assert re.search(r"ValueError: Document \d+", str(info.value))
    assert f"the row with {{'id': {bad['id'].iloc[30]}, 'group': 'g0'}}" in str(info.value)


def test_a_batch_without_rows(doc_emb, frame):
    """What an actor returns for an empty block: the columns and dtypes of a full one."""
    names = sr.output_columns(doc_emb)
    batches = sr._Batches(doc_emb, "text", "transform", names, np.dtype(np.float32))
    empty = batches(frame.iloc[:0])
    assert list(empty.columns) == ["id", "group", *names] and len(empty) == 0
    assert (empty[names].dtypes == np.float32).all()
    # An estimator whose rows do not match its feature names is refused, not misaligned.
    short = sr._Batches(doc_emb, "text", "transform", names[:-1], np.dtype(np.float32))
    with pytest.raises(ValueError, match=f"one row of {len(names) - 1} values"):
        short(frame.iloc[:3])


def test_lazy_and_ordered_without_touching_the_callers_context(ray_session, doc_emb, frame):
    data = ray.data.from_pandas(frame)
    before = skembed.cache_info()["state_misses"]
    out = sr.transform(doc_emb, data, map_batches_args={"memory": 2**28})
    assert skembed.cache_info()["state_misses"] == before  # nothing ran
    assert out.context.execution_options.preserve_order
    assert not data.context.execution_options.preserve_order
    assert not ray.data.DataContext.get_current().execution_options.preserve_order


def test_argument_errors(ray_session, doc_emb, frame, tiny_model):
    data = ray.data.from_pandas(frame)
    with pytest.raises(ValueError, match="no column 'body'.*column="):
        sr.transform(doc_emb, data, column="body")
    clash = ray.data.from_pandas(frame.assign(**{doc_emb.get_feature_names_out()[0]: 1.0}))
    with pytest.raises(ValueError, match=r"already has columns named like the output"):
        sr.transform(doc_emb, clash)
    with pytest.raises(NotFittedError):
        sr.transform(TransformerDocumentEmbeddings(tiny_model("bert")), data)
    token_level = TransformerEmbeddings(tiny_model("bert"), device="cpu").fit()
    with pytest.raises(TypeError, match="DocumentPoolEmbeddings"):
        sr.transform(token_level, data)
    with pytest.raises(TypeError, match="DocumentPoolEmbeddings"):
        sr.transform(make_pipeline(token_level), data)
    for bad in (0, -1, 1.5, True, (3, 1), (0, 2), "2"):
        with pytest.raises(ValueError, match="concurrency="):
            sr.transform(doc_emb, data, concurrency=bad)
    for bad in (0, 2.5, None):
        with pytest.raises(ValueError, match="batch_size="):
            sr.transform(doc_emb, data, batch_size=bad)
    for name, bad in (("num_gpus", -1), ("num_gpus", None), ("num_cpus", "1"), ("num_cpus", -0.5)):
        with pytest.raises(ValueError, match=f"{name}="):
            sr.transform(doc_emb, data, **{name: bad})
    with pytest.raises(TypeError, match="from_pandas"):
        sr.transform(doc_emb, frame)
    with pytest.raises(ValueError, match="method='fit' is not valid"):
        sr.transform(doc_emb, data, method="fit")


def test_docstring_examples_run_on_ray(ray_session):
    """The examples marked +SKIP (they need a Ray cluster) run here, on the session's Ray."""
    runner = doctest.DocTestRunner()
    tests = doctest.DocTestFinder().find(sr)
    skipped = 0
    for test in tests:
        for example in test.examples:
            skipped += example.options.pop(doctest.SKIP, False)
        runner.run(test)
    assert skipped >= 9  # transform, predict and predict_proba run on Ray here
    assert runner.failures == 0
    assert runner.tries == sum(len(t.examples) for t in tests)


def test_import_skembed_does_not_import_ray():
    code = "import sys, skembed; skembed.TransformerDocumentEmbeddings; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_missing_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    monkeypatch.setitem(sys.modules, "ray.data", None)
    monkeypatch.delitem(sys.modules, "skembed.ray")
    with pytest.raises(ImportError, match=r"pip install 'skembed\[ray\]'"):
        import skembed.ray  # noqa: F401
