"""States shared by sibling processes (skembed._shared): each document runs through the
network once among the worker processes of a grid search, and what a worker reads from its
siblings is bit for bit what it would have computed.

Most tests make this process act as a worker (``sibling``): a child of the session's first
process sharing a folder of its own; one runs a real ``GridSearchCV(n_jobs=2)``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.linear_model import RidgeClassifier
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline

import skembed
from skembed import DocumentPoolEmbeddings, TransformerEmbeddings, _shared
from skembed._processes import _stat, mark
from skembed._shared import ENV, SHARED, SharedStates, _remove_stale
from skembed._store import state_keys, to_embed
from skembed.cache import STATES

TEXTS = [f"{w} cell number {i} , the dog sat on the {w} mat" for i, w in enumerate("abcdefghij")]
TEXTS += ["", "xylophones quizzically jabbering over zigzagging wharves", "fox"]


@pytest.fixture(scope="module")
def bert(tiny_model) -> str:
    return tiny_model("bert")


@pytest.fixture(autouse=True)
def _fresh_cache():
    budget = STATES.max_bytes
    skembed.clear_cache(models=False)
    yield
    skembed.set_cache(enabled=True, max_bytes=budget)
    skembed.clear_cache(models=False)


@pytest.fixture
def sibling(tmp_path, monkeypatch):
    """This process as a worker sharing the folder ``tmp_path / "shared"``."""
    folder = tmp_path / "shared"
    monkeypatch.setattr(SHARED, "_owner_pid", None)
    monkeypatch.setattr(SHARED, "root", str(folder))
    monkeypatch.setattr(SHARED, "enabled", True)
    SHARED.hits = SHARED.writes = SHARED.bytes = 0
    return folder


def entries(folder) -> dict[str, str]:
    """The folder's document entries and their targets."""
    if not folder.exists():
        return {}
    return {p.name: os.readlink(p) for p in folder.iterdir() if p.is_symlink()}


def published_documents(folder) -> int:
    """Documents in the folder's batch files (each document published once: their count)."""
    files = [p for p in folder.iterdir() if p.name.startswith("states-")]
    return sum(len(load_file(p)["n_sub"]) for p in files)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def embed(model, texts=TEXTS, **params):
    emb = TransformerEmbeddings(model, layers="-1,0", pooling_operation="mean", **params).fit()
    return [np.asarray(a) for a in emb.transform(texts).to_list()]


def names_of(model, texts):
    emb = TransformerEmbeddings(model).fit()
    docs = emb._documents(texts)
    return SHARED.names(state_keys(emb, docs, to_embed(docs, range(len(docs)))))


def test_a_sibling_reads_what_another_published_bit_for_bit(bert, sibling):
    first = embed(bert)
    n = len(TEXTS) - 1  # the empty document runs nothing
    assert skembed.cache_info()["shared_writes"] == n
    assert all(not t.startswith("p") for t in entries(sibling).values())  # no claim left
    assert published_documents(sibling) == n
    STATES.clear()  # as another process: nothing of its own
    again = embed(bert)
    info = skembed.cache_info()
    assert info["shared_hits"] == n and info["shared_writes"] == n  # nothing computed again
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert again[len(TEXTS) - 3].shape == (0, 64)  # the empty document still has its rows


def test_a_document_read_alone_holds_only_its_own_states(bert, sibling):
    embed(bert)  # one batch file of every document
    STATES.clear()
    few = embed(bert, TEXTS[:3])
    assert SHARED.hits == 3
    emb = TransformerEmbeddings(bert).fit()
    docs = emb._documents(TEXTS[:3])
    states = STATES.get_many(state_keys(emb, docs, range(3)), count=False)
    (whole,) = {id(s.pass_states): s.pass_states for s in states}.values()  # one for the three
    assert whole.shape[1] == sum(s.sub.shape[1] + s.special.shape[1] for s in states)
    skembed.set_cache(enabled=False)
    for a, b in zip(few, embed(bert, TEXTS[:3])):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.fixture(scope="module")
def family_files(tmp_path_factory):
    from tiny_embedders import build_files

    return build_files(tmp_path_factory.mktemp("families"))


@pytest.mark.parametrize(
    "name",
    [
        "FlairEmbeddings",
        "ELMoEmbeddings",
        "TransformerXLEmbeddings",
        "CharacterEmbeddings",
        "TransformerDocumentEmbeddings",
    ],
)
def test_every_network_family_shares_bit_for_bit(name, family_files, tiny_model, sibling):
    from tiny_embedders import make, rows

    texts = [t for t in TEXTS if t]
    emb = make(name, family_files, tiny_model).fit(texts)
    first = rows(emb.transform(texts))
    assert SHARED.writes == len(texts)
    STATES.clear()
    again = rows(emb.transform(texts))
    assert SHARED.hits == len(texts) and SHARED.writes == len(texts)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


def test_document_rows_from_siblings_equal_computed_ones(bert, sibling):
    pool = DocumentPoolEmbeddings(TransformerEmbeddings(bert, layers="-1,-2"), pooling="max")
    computed = pool.fit(TEXTS).transform(TEXTS)
    skembed.clear_cache(models=False)  # a worker's clear keeps the shared folder
    assert published_documents(sibling) == len(TEXTS) - 1
    read = pool.fit(TEXTS).transform(TEXTS)
    assert skembed.cache_info()["shared_hits"] == len(TEXTS) - 1
    np.testing.assert_array_equal(computed, read)


def test_a_claim_of_a_gone_process_is_taken_over(bert, sibling):
    sibling.mkdir()
    names = names_of(bert, TEXTS[:3])
    gone = dead_pid()
    for name in names:
        os.symlink(mark(gone), sibling / name)
    out = embed(bert, TEXTS[:3])
    assert skembed.cache_info()["shared_writes"] == 3
    assert all(not entries(sibling)[name].startswith("p") for name in names)
    skembed.set_cache(enabled=False)
    for a, b in zip(out, embed(bert, TEXTS[:3])):
        np.testing.assert_array_equal(a, b)


def test_documents_a_live_sibling_computes_are_awaited_and_read(bert, sibling):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    sibling.mkdir()
    try:
        names = names_of(bert, TEXTS[:4])
        for name in names[:2]:  # the sibling works on the first two
            os.symlink(mark(sleeper.pid), sibling / name)
        # What the sibling will publish: the states of another run, made without sharing.
        emb = TransformerEmbeddings(bert).fit()
        with torch.inference_mode():
            states = emb._forward(emb._get_model(), emb._documents(TEXTS[:2]), emb.batch_size)
        packed = emb._pack_states(states)

        def sibling_finishes():
            time.sleep(0.3)
            assert SHARED.publish(names[:2], packed, 2**30)

        thread = threading.Thread(target=sibling_finishes)
        start = time.perf_counter()
        thread.start()
        out = embed(bert, TEXTS[:4])
        thread.join()
        assert time.perf_counter() - start >= 0.3
        info = skembed.cache_info()
        assert info["shared_hits"] == 2  # read, not computed: the others were
        assert info["shared_writes"] == 2 + 2  # two by the "sibling", two by this call
    finally:
        sleeper.kill()
        sleeper.wait()
    skembed.set_cache(enabled=False)
    for a, b in zip(out, embed(bert, TEXTS[:4])):
        np.testing.assert_allclose(a, b, atol=1e-5)  # other batches: batch invariance only


def test_a_sibling_that_dies_before_publishing_is_replaced(bert, sibling):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    sibling.mkdir()
    names = names_of(bert, TEXTS[:2])
    for name in names:
        os.symlink(mark(sleeper.pid), sibling / name)

    def die():
        time.sleep(0.2)
        sleeper.kill()
        sleeper.wait()  # reaped: its pid is gone

    thread = threading.Thread(target=die)
    thread.start()
    out = embed(bert, TEXTS[:2])
    thread.join()
    assert skembed.cache_info()["shared_writes"] == 2
    assert [a.shape[0] for a in out] == [len(t.split()) for t in TEXTS[:2]]


def test_a_damaged_or_vanished_batch_file_is_computed_again(bert, sibling):
    first = embed(bert)
    files = sorted(p for p in sibling.iterdir() if p.name.startswith("states-"))
    files[0].write_bytes(b"not a safetensors file")
    for extra in files[1:]:
        extra.unlink()
    STATES.clear()
    SHARED.hits = 0
    again = embed(bert)
    assert SHARED.hits == 0  # nothing readable: every document computed, same numbers
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


def test_a_failed_forward_pass_gives_its_claims_up(bert, sibling, monkeypatch):
    emb = TransformerEmbeddings(bert).fit()

    def broken(model, docs):
        raise RuntimeError("boom")

    monkeypatch.setattr(emb, "_forward", broken)
    with pytest.raises(RuntimeError, match="boom"):
        emb.transform(TEXTS).to_numpy()  # the vectors are computed when first read
    assert entries(sibling) == {}  # no claim left for siblings to wait on
    assert SHARED._held == set()


def test_the_folder_holds_at_most_the_budget_of_all_processes(bert, sibling, monkeypatch):
    embed(bert)
    one_call = SHARED.bytes
    assert SHARED.writes == len(TEXTS) - 1
    assert SHARED._usage() == (one_call, one_call)
    # Another process wrote as much: with a budget of 2.5 calls' worth, a call still fits
    # (its states are kept here) but the folder has no room for it.
    (sibling / "usage" / "999999999").write_text(str(one_call))
    skembed.set_cache(max_bytes=int(one_call * 2.5))
    others = [t.replace("cell", "cat") for t in TEXTS]
    out = embed(bert, others)
    assert SHARED.writes == len(TEXTS) - 1 and SHARED.bytes == one_call  # none written
    assert all(not t.startswith("p") for t in entries(sibling).values())  # claims given up
    skembed.set_cache(enabled=False)
    for a, b in zip(out, embed(bert, others)):  # some states from the first call's batches
        np.testing.assert_allclose(a, b, atol=1e-5)
    # The first process cleared the folder: the usage counts start again.
    skembed.set_cache(enabled=True)
    monkeypatch.setattr(SHARED, "_owner_pid", os.getpid())
    skembed.clear_cache(models=False)
    monkeypatch.setattr(SHARED, "_owner_pid", None)
    assert SHARED._usage() == (0, 0)
    embed(bert, others)
    assert SHARED.writes == len(others) - 1


def test_the_first_process_reads_but_never_writes(bert, tmp_path, monkeypatch):
    folder = tmp_path / "shared"
    monkeypatch.setattr(SHARED, "root", str(folder))
    monkeypatch.setattr(SHARED, "_owner_pid", os.getpid())
    assert not skembed.cache_info()["shared_states"]
    embed(bert)
    assert not folder.exists()  # no worker made it: nothing looked at, nothing written
    # A worker published states: the first process reads them (the refit of a search).
    monkeypatch.setattr(SHARED, "_owner_pid", None)
    STATES.clear()
    computed = embed(bert)
    monkeypatch.setattr(SHARED, "_owner_pid", os.getpid())
    STATES.clear()
    SHARED.hits = 0
    read = embed(bert)
    assert SHARED.hits == len(TEXTS) - 1
    assert not [t for t in entries(folder).values() if t.startswith("p")]
    for a, b in zip(computed, read):
        np.testing.assert_array_equal(a, b)
    skembed.clear_cache(models=False)  # the first process owns the folder: gone
    assert not folder.exists()


def test_processes_started_after_switching_sharing_off_do_not_share(monkeypatch):
    SHARED.start()  # in this process, the first of the test session: named on first use
    monkeypatch.setattr(SHARED, "_owner_pid", os.getpid())
    monkeypatch.setitem(os.environ, ENV, SHARED.root)
    skembed.set_cache(shared=False)
    try:
        assert os.environ[ENV] == "off"
        child = SharedStates()  # what a process started now sees on importing skembed
        assert not child.owner and not child.active
    finally:
        skembed.set_cache(shared=True)
    assert os.environ[ENV] == SHARED.root
    child = SharedStates()
    assert not child.owner and child.active and child.root == SHARED.root


def test_folders_of_gone_sessions_are_removed(tmp_path):
    gone = tmp_path / f"skembed-states-{dead_pid()}-abcd"
    live = tmp_path / f"skembed-states-{os.getpid()}-abcd"
    other = tmp_path / "skembed-states-notapid"
    for folder in (gone, live, other):
        folder.mkdir()
    _remove_stale(str(tmp_path))
    assert not gone.exists() and live.exists() and other.exists()


def _scorer(estimator, X, y):
    info = skembed.cache_info()
    return {
        "accuracy": estimator.score(X, y),
        "pid": os.getpid(),
        "shares": int(info["shared_states"]),
    }


def test_grid_search_workers_run_each_document_once_among_them(bert):
    """A real GridSearchCV(n_jobs=2): the workers publish every document once in all (so
    none ran twice), the refit in this process reads them all, and the scores are those of
    n_jobs=1."""
    texts = [f"{t} {k}" for k in range(3) for t in TEXTS if t]
    labels = [i % 2 for i in range(len(texts))]
    pipe = Pipeline(
        [
            ("embed", DocumentPoolEmbeddings(TransformerEmbeddings(bert))),
            ("clf", RidgeClassifier()),
        ]
    )
    grid = {"embed__embeddings__layers": ["-1", "-2"], "embed__pooling": ["mean", "max"]}
    cv = KFold(3, shuffle=True, random_state=0)

    def search(n_jobs):
        skembed.clear_cache(models=False)
        gs = GridSearchCV(pipe, grid, cv=cv, scoring=_scorer, refit="accuracy", n_jobs=n_jobs)
        return gs.fit(texts, labels)

    one = search(1)
    two = search(2)
    pids = {p for k in range(3) for p in two.cv_results_[f"split{k}_test_pid"]}
    assert os.getpid() not in pids
    assert all(two.cv_results_[f"split{k}_test_shares"].all() for k in range(3))
    assert published_documents(Path(SHARED.root)) == len(texts)  # none ran twice
    info = skembed.cache_info()
    assert info["shared_hits"] == len(texts) == info["state_misses"]  # the refit read them
    assert one.best_params_ == two.best_params_
    rows = two.best_estimator_["embed"].transform(texts)
    skembed.set_cache(enabled=False)
    np.testing.assert_allclose(rows, one.best_estimator_["embed"].transform(texts), atol=1e-5)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_process_forked_from_the_first_one_is_a_sibling(monkeypatch, tmp_path):
    """multiprocessing's fork start method copies the first process's module state: the
    copy must share as a worker, and never remove the folder (it does not own it)."""
    monkeypatch.setattr(SHARED, "_owner_pid", os.getpid())
    monkeypatch.setattr(SHARED, "root", str(tmp_path / "shared"))
    (tmp_path / "shared").mkdir()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, try to remove, and leave without running anything else
        try:
            os.write(write, f"{int(SHARED.owner)}{int(SHARED.active)}".encode())
            SHARED.remove()
        finally:
            os._exit(0)
    os.close(write)
    report = os.read(read, 2).decode()
    os.waitpid(pid, 0)
    assert report == "01"  # not the owner; shares
    assert (tmp_path / "shared").exists()  # the child did not remove the folder
    assert SHARED.owner


def test_a_claim_whose_pid_was_reused_by_another_process_is_taken_over(bert, sibling):
    """A pid alone could name a new process after the claimer died: the claim holds the
    claimer's start time too, and one that does not match is a dead claim."""
    sibling.mkdir()
    names = names_of(bert, TEXTS[:2])
    pid, started = mark(os.getpid())[1:].split("-")
    if not started:
        pytest.skip("no /proc: start times cannot be read here")
    for name in names:  # a live pid (this process) with another start time
        os.symlink(f"p{pid}-{int(started) - 1}", sibling / name)
    embed(bert, TEXTS[:2])
    assert SHARED.writes == 2


@contextlib.contextmanager
def fails_instead_of_hanging(seconds: int):
    """Raise in the test after ``seconds`` (pytest-timeout is not installed): a call that
    would wait forever fails instead of hanging the suite."""
    if not hasattr(signal, "SIGALRM"):
        pytest.skip("needs signal.SIGALRM")

    def fail(signum, frame):
        raise TimeoutError(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_claim_of_a_killed_process_not_yet_reaped_is_taken_over(bert, sibling):
    """A sibling killed with SIGKILL (the OOM killer) whose parent has not joined it yet is a
    zombie: its pid still exists, but it is dead and will never publish."""
    if _stat(os.getpid()) is None:
        pytest.skip("no /proc: a zombie cannot be told from a live process here")
    sibling.mkdir()
    names = names_of(bert, TEXTS[:3])
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for name in names:  # claimed while it ran
            os.symlink(mark(victim.pid), sibling / name)
        os.kill(victim.pid, signal.SIGKILL)  # not reaped: no wait() until the end
        deadline = time.monotonic() + 10
        while _stat(victim.pid)[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _stat(victim.pid)[0] == "Z"
        with fails_instead_of_hanging(30):
            out = embed(bert, TEXTS[:3])
        assert SHARED.writes == 3  # taken over, computed and published here
        assert all(not entries(sibling)[name].startswith("p") for name in names)
    finally:
        victim.wait()
    skembed.set_cache(enabled=False)
    for a, b in zip(out, embed(bert, TEXTS[:3])):
        np.testing.assert_array_equal(a, b)


def test_a_live_sibling_that_never_publishes_is_waited_for_a_bounded_time(
    bert, sibling, monkeypatch
):
    """A live sibling that sits on its claims (stopped, deadlocked) holds this call up for
    ``patience`` seconds with nothing arriving, not forever: then the documents run here."""
    monkeypatch.setattr(_shared, "PATIENCE", 0.5)
    monkeypatch.setattr(_shared, "PATIENCE_BATCHES", 1)
    stuck = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    sibling.mkdir()
    try:
        names = names_of(bert, TEXTS[:4])
        for name in names[:2]:
            os.symlink(mark(stuck.pid), sibling / name)
        start = time.perf_counter()
        with fails_instead_of_hanging(30):
            out = embed(bert, TEXTS[:4])
        assert time.perf_counter() - start >= 0.5
        assert SHARED.writes == 2  # its own two; the other two computed, not published
        assert [entries(sibling)[name] for name in names[:2]] == [mark(stuck.pid)] * 2
    finally:
        stuck.kill()
        stuck.wait()
    skembed.set_cache(enabled=False)
    for a, b in zip(out, embed(bert, TEXTS[:4])):
        np.testing.assert_allclose(a, b, atol=1e-5)  # other batches: batch invariance only


def test_the_wait_for_siblings_scales_with_the_batches_run_here():
    assert _shared.patience(0.0) == _shared.PATIENCE == 120.0
    assert _shared.patience(60.0) == 60.0 * _shared.PATIENCE_BATCHES


_IMPORT_CHECK = """
import atexit, json, os, sys, tempfile
for name in json.loads(sys.argv[1]):  # skembed's dependencies first: their own effects
    try:
        __import__(name)
    except Exception:  # a module that is only imported from within its package
        pass
env, hooks = dict(os.environ), atexit._ncallbacks()
temp = sorted(os.listdir(tempfile.gettempdir()))
import skembed
after = sorted(os.listdir(tempfile.gettempdir()))
print(json.dumps([dict(os.environ) == env, atexit._ncallbacks() == hooks, after == temp]))
from sklearn.base import clone
clone(skembed.TransformerEmbeddings())  # first use, as a grid search does before its workers
print(json.dumps([os.environ.get("SKEMBED_SHARED_STATES"), sorted(os.listdir(tempfile.gettempdir()))]))
"""


def test_import_changes_nothing_and_first_use_names_the_folder(tmp_path):
    """``import skembed`` leaves os.environ, the exit hooks and the temp dir as they were; the
    first use (a clone, as in a grid search) exports the folder for workers and removes the
    folders of gone sessions."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env.pop(ENV, None)
    listing = "import json, sys; import skembed; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", listing], env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    deps = [
        m
        for m in loaded
        if m != "skembed" and not m.startswith("_") and m not in sys.builtin_module_names
    ]
    stale = tmp_path / f"skembed-states-{dead_pid()}-abcd"
    stale.mkdir()
    run = subprocess.run(
        [sys.executable, "-c", _IMPORT_CHECK, json.dumps(deps)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    unchanged, (folder, after) = map(json.loads, run.stdout.splitlines())
    assert unchanged == [True, True, True]  # environment, exit hooks, temp dir
    assert folder is not None and Path(folder).parent == tmp_path
    assert stale.name not in after  # gone sessions' folders: removed lazily, on first use
