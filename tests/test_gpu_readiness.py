"""GPU readiness without a GPU: out-of-memory recognition and remembered batch sizes, the
batch-size argument of ``_forward``, TF32 off inside forward passes, recurrent layers out of
autocast, the fork hook, deterministic training and compact outputs.

torch's CUDA queries are replaced where needed; no tensor is moved to a GPU. The checks that
need a real GPU are the ``gpu``-marked tests run by ``scripts/gpu-check.sh``.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from tiny_embedders import EMBEDDERS, build_files, make, rows
from tolerances import CONTRACT_ATOL, proba_atol

import skembed
from skembed import _batching
from skembed._batching import BatchSize, forward_in_batches, is_out_of_memory

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DOCS = [["a", "b", "c"], ["d"], ["e", "f"], ["g", "h", "i", "j"], ["k"], ["l", "m"]] * 2


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return build_files(tmp_path_factory.mktemp("gpu-readiness"))


@pytest.fixture(autouse=True)
def _fresh():
    """No batch size remembered from another test, every transform runs the network."""
    _batching.forget_batch_sizes()
    skembed.set_cache(enabled=False)
    yield
    skembed.set_cache(enabled=True)
    _batching.forget_batch_sizes()


class FakeEmbedder:
    """What ``forward_in_batches`` uses of an estimator; its ``_forward`` fails above ``fits``
    documents with ``error`` and records the sizes it was given."""

    def __init__(self, error, fits: int, batch_size: int = 8, key: str = "fake"):
        self.error, self.fits, self.batch_size, self.key = error, fits, batch_size, key
        self._device = torch.device("cpu")
        self.precision = "float32"
        self.sizes: list[int] = []

    def _state_prefix(self):
        return (self.key, self.precision, str(self._device), ())

    def _forward(self, model, docs):
        self.sizes.append(len(docs))
        if len(docs) > self.fits:
            raise self.error
        return [len(d) for d in docs]


def run(embedder, docs=DOCS):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = forward_in_batches(
            embedder, None, docs, range(len(docs)), BatchSize(embedder.batch_size)
        )
    return out, [w for w in record if "ran out of memory" in str(w.message)]


# -- out of memory: what counts, and the size that works is remembered -----------------------
ALLOCATION_FAILURES = [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("CUDA error: out of memory"),
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
    RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED"),
    RuntimeError("cuFFT error: CUFFT_ALLOC_FAILED"),
    RuntimeError("MPS backend out of memory (MPS allocated: 1.00 GB)"),
]


@pytest.mark.parametrize("error", ALLOCATION_FAILURES, ids=lambda e: str(e)[:28])
def test_allocation_failures_are_out_of_memory_and_retried(error):
    assert is_out_of_memory(error)
    emb = FakeEmbedder(error, fits=2)
    out, warned = run(emb)
    assert out == [len(d) for d in DOCS]
    assert emb.sizes[:3] == [8, 4, 2] and set(emb.sizes[3:]) == {2}
    assert len(warned) == 1


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED"),
        RuntimeError("CUDA error: CUBLAS_STATUS_EXECUTION_FAILED"),
        ValueError("out of memory"),  # not a device error
    ],
)
def test_other_device_errors_are_not_retried(error):
    emb = FakeEmbedder(error, fits=2)
    with pytest.raises(type(error)):
        run(emb)
    assert emb.sizes == [8]


def test_the_working_batch_size_is_remembered_across_calls_and_clones():
    error = torch.OutOfMemoryError("CUDA out of memory")
    first = FakeEmbedder(error, fits=2)
    _, warned = run(first)
    assert len(warned) == 1 and "keeps the smaller size" in str(warned[0].message)
    assert _batching.working_batch_size(first) == 2
    # A later call, and another estimator on the same model, precision and device (a clone
    # made by a grid search), start from the size that worked: no error paid again.
    for again in (first, FakeEmbedder(error, fits=2)):
        again.sizes.clear()
        _, warned = run(again)
        assert again.sizes == [2] * 6 and warned == []
    # Another device, precision, model or batch_size is another memory budget.
    for other in ("cuda:1", "bfloat16", "model", "batch"):
        emb = FakeEmbedder(error, fits=2, batch_size=16 if other == "batch" else 8)
        emb._device = torch.device(other) if other.startswith("cuda") else emb._device
        emb.precision = other if other == "bfloat16" else emb.precision
        emb.key = other if other == "model" else emb.key
        assert _batching.working_batch_size(emb) is None
    _batching.forget_batch_sizes()
    assert _batching.working_batch_size(first) is None


def test_a_clone_of_a_real_family_starts_from_the_working_size(files, tiny_model, monkeypatch):
    emb = make("FlairEmbeddings", files, tiny_model, batch_size=4).fit()
    expected = rows(emb.transform(DOCS))
    real, sizes = type(emb)._forward, []

    def forward(self, model, docs):
        sizes.append(len(docs))
        if len(docs) > 1:
            raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED")
        return real(self, model, docs)

    monkeypatch.setattr(type(emb), "_forward", forward)
    with pytest.warns(RuntimeWarning, match="ran out of memory"):
        first = rows(emb.transform(DOCS))
    assert sizes[:3] == [4, 2, 1]
    sizes.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning: no second out-of-memory error
        again = rows(clone(emb).fit().transform(DOCS))
    assert set(sizes) == {1}
    for a, b, c in zip(expected, first, again):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
        np.testing.assert_allclose(a, c, atol=1e-5, rtol=0)


# -- the batch size reaches a _forward that batches internally as an argument ----------------
def test_forward_gets_the_current_batch_size_as_an_argument():
    error = torch.OutOfMemoryError("CUDA out of memory")

    class Windows(FakeEmbedder):
        """Batches windows itself: fails when asked for more than 2 rows at a time."""

        def _forward(self, model, docs, batch_size):
            self.sizes.append(batch_size)
            if batch_size > 2:
                raise error
            return [len(d) for d in docs]

    emb = Windows(error, fits=2)
    out, _ = run(emb)
    assert out == [len(d) for d in DOCS] and emb.sizes[:3] == [8, 4, 2]
    assert _batching.passes_batch_size(emb._forward)
    assert not _batching.passes_batch_size(FakeEmbedder(error, 1)._forward)
    assert not hasattr(_batching, "BATCH_LIMIT")  # no hidden channel


# -- fork after CUDA: the child drops the caches and refuses CUDA with a clear message --------
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_after_cuda_use_drops_the_caches_and_refuses_cuda(monkeypatch):
    from skembed import _device
    from skembed.cache import MODELS, STATES

    skembed.set_cache(enabled=True)
    MODELS.get(("fork-test", "cuda:0"), lambda: "a model on the GPU")
    STATES.put(("fork-test", 0), torch.zeros(3))
    monkeypatch.setitem(_device._CUDA, "used", False)
    _device.note_cuda_use()  # what the first CUDA forward pass does
    assert _device._CUDA["hooked"]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it sees, then leave without pytest's teardown
        os.close(read)
        try:
            seen = [len(MODELS), len(STATES), STATES.enabled]
            try:
                with _device.forward_context(torch.device("cuda", 0), "float32"):
                    seen.append("ran")
            except RuntimeError as exc:
                seen.append(str(exc))
            with _device.forward_context(torch.device("cpu"), "float32"):
                seen.append("cpu ran")
            os.write(write, json.dumps(seen).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        seen = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert seen[:3] == [0, 0, True]
    assert "forked from a process that had already used CUDA" in seen[3]
    assert "'spawn'" in seen[3] and "loky" in seen[3]
    assert seen[4] == "cpu ran"
    # The parent keeps its caches and its CUDA.
    assert len(MODELS) >= 1 and STATES.get(("fork-test", 0)) is not None
    assert not _device._CUDA["forked_after_use"]
    MODELS.clear()
    STATES.clear()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_before_any_cuda_use_keeps_the_caches(monkeypatch):
    from skembed import _device
    from skembed.cache import STATES

    monkeypatch.setitem(_device._CUDA, "used", False)
    skembed.set_cache(enabled=True)
    STATES.put(("fork-test", 1), torch.zeros(2))
    pid = os.fork()
    if pid == 0:
        os._exit(0 if STATES.get(("fork-test", 1)) is not None else 1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    STATES.clear()


# -- precision: float32 means float32 on CUDA, recurrent layers out of autocast ---------------
def tf32_state() -> tuple:
    b = torch.backends
    return (
        b.cuda.matmul.fp32_precision,
        b.cudnn.conv.fp32_precision,
        b.cudnn.rnn.fp32_precision,
        torch.get_float32_matmul_precision(),
        b.cudnn.allow_tf32,
    )


def tf32_is_off() -> bool:
    b = torch.backends
    return (
        not b.cuda.matmul.allow_tf32
        and not b.cudnn.allow_tf32
        and b.cuda.matmul.fp32_precision == "ieee"
        and b.cudnn.conv.fp32_precision == "ieee"
        and b.cudnn.rnn.fp32_precision == "ieee"
    )


@pytest.fixture
def user_tf32():
    """The user turned TF32 on (the legacy switches, as most code does); put back after."""
    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    yield tf32_state()
    torch.set_float32_matmul_precision(before[0])
    torch.backends.cudnn.allow_tf32 = before[1]


def test_tf32_is_off_inside_a_cuda_forward_pass_and_restored_after(user_tf32, monkeypatch):
    from skembed import _device

    monkeypatch.setitem(_device._CUDA, "used", _device._CUDA["used"])  # no fork hook effect
    seen = []

    class OnCuda(FakeEmbedder):
        def _forward(self, model, docs):
            seen.append(tf32_is_off())
            return [len(d) for d in docs]

    emb = OnCuda(None, fits=99)
    emb._device = torch.device("cuda", 0)  # nothing touches the GPU: the fake runs on the CPU
    run(emb)
    assert seen and all(seen)
    assert tf32_state() == user_tf32 and torch.backends.cuda.matmul.allow_tf32
    # Restored after an error too, and the CPU's settings are never touched.
    with pytest.raises(KeyError), _device.forward_context(torch.device("cuda", 0), "float32"):
        assert tf32_is_off()
        raise KeyError("boom")
    assert tf32_state() == user_tf32
    with _device.forward_context(torch.device("cpu"), "float32"):
        assert tf32_state() == user_tf32


def test_per_operation_tf32_settings_are_restored_exactly():
    from skembed._precision import exact_float32

    b = torch.backends
    before = tf32_state()
    b.cudnn.conv.fp32_precision = "ieee"  # the new API: convolutions exact, RNNs in TF32
    b.cudnn.rnn.fp32_precision = "tf32"
    mixed = (b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision, "tf32")
    try:
        with exact_float32():
            with exact_float32():  # nested (or another thread): the outer one restores
                assert tf32_is_off()
            assert tf32_is_off()
        assert (b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision) == mixed[:2]
        assert b.cudnn.rnn.fp32_precision == "tf32"
    finally:
        b.cudnn.allow_tf32 = before[4]
        b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision = before[1], before[2]
    assert tf32_state() == before


def test_bfloat16_on_a_gpu_without_it_is_refused(monkeypatch):
    from skembed import _device, _precision

    def no_bf16(including_emulation=True):
        return including_emulation  # emulated only, as on a T4 or V100

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", no_bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    cuda = torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"bfloat16.*cuda:0 \(Tesla T4\).*'float16'"):
        _precision.check_cpu_precision(cuda, "bfloat16")
    with pytest.raises(ValueError, match="not supported natively"):
        with _device.forward_context(cuda, "bfloat16"):
            pass
    _precision.check_cuda_precision(cuda, "float16")  # float16 is fine
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    _precision.check_cuda_precision(cuda, "bfloat16")


def test_recurrent_layers_leave_autocast_where_it_picks_the_wrong_dtype():
    from skembed._precision import recurrent_autocast, recurrent_in_float32

    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert recurrent_in_float32(cuda, "bfloat16")  # cuDNN's autocast RNN is float16
    assert not recurrent_in_float32(cuda, "float16")
    assert not recurrent_in_float32(cpu, "bfloat16")  # oneDNN's CPU LSTM is bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with recurrent_autocast(cpu, "bfloat16", in_float32=True):
            assert not torch.is_autocast_enabled("cpu")
        with recurrent_autocast(cpu, "bfloat16"):
            assert torch.is_autocast_enabled("cpu")


def test_flair_carries_its_state_across_chunks_in_float32(files, tiny_model, monkeypatch):
    from skembed._precision import cpu_lstm_works
    from skembed.flair import CharLM

    precision = "bfloat16" if cpu_lstm_works("bfloat16") else "float32"
    emb = make("FlairEmbeddings", files, tiny_model, chars_per_chunk=3, precision=precision)
    emb.fit()
    real, given = CharLM.recurrent, []

    def recurrent(self, ids, hidden=None):
        given.append(None if hidden is None else {h.dtype for h in hidden})
        return real(self, ids, hidden)

    monkeypatch.setattr(CharLM, "recurrent", recurrent)
    emb.transform(DOCS).to_numpy()
    assert given[0] is None and len(given) > 2
    assert all(dtypes == {torch.float32} for dtypes in given[1:])


def test_the_elmo_character_encoder_runs_in_float32(files, tiny_model, monkeypatch):
    from skembed.elmo.model import CharEncoder

    emb = make("ELMoEmbeddings", files, tiny_model, precision="bfloat16").fit()
    real, autocast_on = CharEncoder.forward, []

    def forward(self, char_ids):
        autocast_on.append(torch.is_autocast_enabled("cpu"))
        return real(self, char_ids)

    monkeypatch.setattr(CharEncoder, "forward", forward)
    emb.transform(DOCS).to_numpy()
    assert autocast_on and not any(autocast_on)


# -- CharacterEmbeddings.fit(X, y): no atomics in its pooling; honest tags on a GPU ------------
def test_character_training_pools_without_index_add(monkeypatch):
    X = ["good fine nice", "bad awful", "fine good", "awful bad poor", "nice", "poor bad"]
    y = [1, 0, 1, 0, 1, 0]
    fitted = skembed.CharacterEmbeddings(
        hidden_size_char=4, random_state=0, max_epochs=2, device="cpu"
    ).fit(X, y)

    def index_add_(*args, **kwargs):
        raise AssertionError("index_add_ adds in any order on CUDA")

    monkeypatch.setattr(torch.Tensor, "index_add_", index_add_)
    again = skembed.CharacterEmbeddings(
        hidden_size_char=4, random_state=0, max_epochs=2, device="cpu"
    ).fit(X, y)
    for name, weights in fitted.weights_.items():
        assert torch.equal(weights, again.weights_[name])


def test_character_tags_say_training_on_a_gpu_is_not_reproducible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    tags = skembed.CharacterEmbeddings(device="auto").__sklearn_tags__()
    assert tags.non_deterministic
    assert skembed.CharacterEmbeddings(device="cuda:1").__sklearn_tags__().non_deterministic
    assert not skembed.CharacterEmbeddings(device="cpu").__sklearn_tags__().non_deterministic
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not skembed.CharacterEmbeddings(device="auto").__sklearn_tags__().non_deterministic


# -- outputs own their memory: no view that keeps a bigger state alive ------------------------
@pytest.mark.parametrize(
    "name, params",
    [
        ("ELMoEmbeddings", {"embedding_mode": "top"}),
        ("ELMoEmbeddings", {"embedding_mode": "all"}),
        ("FlairEmbeddings", {"with_whitespace": True}),
        ("FlairEmbeddings", {"with_whitespace": False}),
    ],
)
def test_combined_rows_own_compact_storage(files, tiny_model, name, params):
    emb = make(name, files, tiny_model, **params).fit()
    model = emb._get_model()
    states = emb._forward(model, DOCS)
    for state, out in zip(states, emb._combine(model, states)):
        assert out.untyped_storage().nbytes() == out.nbytes <= state.nbytes


# -- on a real GPU (scripts/gpu-check.sh runs these; skipped without CUDA) -------------------
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
needs_two = pytest.mark.skipif(not CUDA or torch.cuda.device_count() < 2, reason="needs 2 GPUs")
TEXTS = ["the cat sat on the mat", "Berlin is a city", "x", "New York !", "an  odd   spacing"]
# How far a half-precision pass may land from float32, relative to the largest float32 output:
# 4 eps of the half type (the derivation is in tests/test_precision.py's RTOL).
HALF_RTOL = {p: 4 * torch.finfo(getattr(torch, p)).eps for p in ("float16", "bfloat16")}


def flat_rows(out) -> np.ndarray:
    return np.concatenate([np.asarray(r, dtype=np.float64).ravel() for r in rows(out)])


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("name", sorted(EMBEDDERS))
def test_every_family_on_the_gpu_matches_the_cpu(files, tiny_model, name, precision):
    if precision == "bfloat16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("this GPU has no native bfloat16 (skembed refuses it, tested on the CPU)")
    cpu = flat_rows(make(name, files, tiny_model).fit(TEXTS).transform(TEXTS))
    gpu_est = make(name, files, tiny_model, device="cuda", precision=precision).fit(TEXTS)
    out = gpu_est.transform(TEXTS)
    got = flat_rows(out)
    assert got.shape == cpu.shape and np.isfinite(got).all()
    if precision == "float32":  # TF32 off: float32 on the GPU is float32 (the contract's 1e-5)
        np.testing.assert_allclose(got, cpu, atol=CONTRACT_ATOL, rtol=0)
    else:
        assert np.abs(got - cpu).max() <= HALF_RTOL[precision] * np.abs(cpu).max()


@pytest.mark.gpu
@needs_cuda
def test_character_embeddings_train_on_the_gpu():
    X = ["good fine nice", "bad awful", "fine good", "awful bad poor", "nice", "poor bad"]
    y = [1, 0, 1, 0, 1, 0]
    emb = skembed.CharacterEmbeddings(hidden_size_char=4, random_state=0, max_epochs=3)
    emb.set_params(device="cuda").fit(X, y)
    assert emb.__sklearn_tags__().non_deterministic  # cuDNN's LSTM training
    assert all(w.device.type == "cpu" for w in emb.weights_.values())
    first, second = flat_rows(emb.transform(X)), flat_rows(emb.transform(X))
    assert np.isfinite(first).all() and len(first) == 13 * 8  # 13 tokens, 2 x 4 features
    np.testing.assert_array_equal(first, second)


@pytest.mark.gpu
@needs_two
def test_cuda_1_keeps_everything_on_the_second_gpu(tiny_model):
    from skembed.cache import clear_cache

    clear_cache()
    torch.cuda.synchronize(0)
    before = torch.cuda.memory_allocated(0)
    emb = skembed.TransformerEmbeddings(tiny_model("bert"), device="cuda:1").fit()
    out = emb.transform(TEXTS)
    assert {p.device for p in emb._get_model().model.parameters()} == {torch.device("cuda", 1)}
    got = flat_rows(out)
    assert torch.cuda.memory_allocated(0) == before  # nothing landed on cuda:0
    cpu = flat_rows(skembed.TransformerEmbeddings(tiny_model("bert"), device="cpu").fit()
                    .transform(TEXTS))  # fmt: skip
    np.testing.assert_allclose(got, cpu, atol=CONTRACT_ATOL, rtol=0)


@pytest.mark.gpu
@needs_cuda
def test_grid_search_with_two_workers_on_a_gpu(tiny_model):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    X = TEXTS * 4
    y = [0, 1, 0, 1, 1] * 4
    pipe = make_pipeline(
        skembed.DocumentPoolEmbeddings(
            skembed.TransformerEmbeddings(tiny_model("bert"), device="cuda")
        ),
        LogisticRegression(max_iter=200),
    )
    grid = {"documentpoolembeddings__pooling": ["mean", "max"]}
    one = GridSearchCV(pipe, grid, cv=2, n_jobs=1).fit(X, y)
    two = GridSearchCV(pipe, grid, cv=2, n_jobs=2).fit(X, y)  # loky: a CUDA context each
    np.testing.assert_allclose(
        two.cv_results_["mean_test_score"], one.cv_results_["mean_test_score"], atol=1e-12
    )
    np.testing.assert_allclose(
        two.predict_proba(X), one.predict_proba(X), atol=proba_atol(one.best_estimator_[-1])
    )


@pytest.mark.gpu
@needs_cuda
def test_one_dask_worker_per_gpu(tiny_model):
    distributed = pytest.importorskip("distributed")
    from skembed.dask import WorkerSetup

    n = torch.cuda.device_count()
    with (
        distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.register_plugin(WorkerSetup(device="per-worker"))

        def where() -> str:
            return str(skembed._device.resolve_device("auto"))

        devices = sorted(client.run(where).values())
    assert devices == [f"cuda:{i}" for i in range(n)]


def peak_of_transform(emb, docs) -> int:
    """Bytes a cold transform of ``docs`` needs on the GPU above what is allocated before."""
    skembed.clear_cache(models=False)
    torch.cuda.synchronize(emb._device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(emb._device)
    resident = torch.cuda.memory_allocated(emb._device)
    emb.transform(docs).to_numpy()
    torch.cuda.synchronize(emb._device)
    return torch.cuda.max_memory_allocated(emb._device) - resident


@pytest.mark.gpu
@needs_cuda
def test_a_real_out_of_memory_is_recovered(tiny_model):
    """A cap on this process's GPU memory halfway between what a call needs with every window
    in one pass and with 64 windows a pass makes the big pass fail for real; the batch is
    halved until it fits, the size that worked is remembered, and the numbers are the CPU's."""
    docs = [" ".join(["unbelievable tokenization"] * 60)] * 256  # windows of 64 sub-tokens
    emb = skembed.TransformerEmbeddings(tiny_model("bert"), device="cuda", batch_size=64)
    emb.fit()
    device = emb._device
    emb.transform(docs[:2]).to_numpy()  # model, kernels and handles in place
    small = peak_of_transform(emb, docs)
    big = peak_of_transform(emb.set_params(batch_size=4096), docs)
    assert big > 2 * small, (big, small)  # else the cap below could not tell them apart
    skembed.clear_cache(models=False)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(device).total_memory
    cap = torch.cuda.memory_reserved(device) + (big + small) // 2
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total), device)
    try:
        with pytest.warns(RuntimeWarning, match="ran out of memory"):
            got = emb.transform(docs).to_numpy()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
    assert _batching.working_batch_size(emb) < 4096
    cpu = skembed.TransformerEmbeddings(tiny_model("bert"), device="cpu", batch_size=64).fit()
    np.testing.assert_allclose(got, cpu.transform(docs).to_numpy(), atol=CONTRACT_ATOL, rtol=0)
