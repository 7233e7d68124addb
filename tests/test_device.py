"""Where models run: CUDA devices always with their index, fallbacks, one GPU per worker.

No GPU is needed: torch's CUDA queries are replaced, and no tensor is moved to a GPU.
"""

from __future__ import annotations

import pickle
import warnings

import pytest
import torch
from sklearn.base import clone

import skembed._device as _device
from skembed import TransformerEmbeddings
from skembed._caches import ModelCache
from skembed._device import device_for_rank, resolve_device, set_default_device


@pytest.fixture(autouse=True)
def _fresh_default(monkeypatch, tmp_path):
    """No process default, no GPU slot held, slot files in a folder of this test only."""
    monkeypatch.delenv("SKEMBED_DEVICE", raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    set_default_device(None)
    _device._DEFAULT.clear()
    yield
    set_default_device(None)
    _device._DEFAULT.clear()


def gpus(monkeypatch, count: int, current: int = 0) -> None:
    """Pretend this process sees ``count`` CUDA devices, ``current`` being torch's current."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    monkeypatch.setattr(torch.cuda, "set_device", SET_DEVICE.append)


SET_DEVICE: list = []  # the indices given to torch.cuda.set_device


@pytest.mark.parametrize(
    "count, current, asked, expected",
    [
        (2, 0, "auto", "cuda:0"),
        (2, 0, "cuda", "cuda:0"),
        (2, 0, "cuda:0", "cuda:0"),
        (2, 0, "cuda:1", "cuda:1"),
        (2, 1, "auto", "cuda:1"),  # after torch.cuda.set_device(1)
        (2, 1, "cuda", "cuda:1"),
        (2, 1, "cuda:0", "cuda:0"),
        (1, 0, "cpu", "cpu"),
        (0, 0, "auto", "cpu"),
    ],
)
def test_cuda_resolves_to_an_indexed_device(monkeypatch, count, current, asked, expected):
    gpus(monkeypatch, count, current)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = resolve_device(asked)
    assert got == torch.device(expected) and str(got) == expected


@pytest.mark.parametrize("asked", ["cuda:1", "cuda:7"])
def test_a_missing_cuda_index_falls_back_with_a_warning(monkeypatch, asked):
    gpus(monkeypatch, 1)
    with pytest.warns(RuntimeWarning, match=rf"device='{asked}' but this process sees 1 CUDA") as w:
        assert resolve_device(asked) == torch.device("cuda:0")
    assert "using 'cuda:0'" in str(w[0].message)


def test_no_cuda_falls_back_to_the_cpu(monkeypatch):
    gpus(monkeypatch, 0)
    for asked in ("cuda", "cuda:1"):
        with pytest.warns(RuntimeWarning, match="CUDA is not available"):
            assert resolve_device(asked) == torch.device("cpu")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda:-1", "per-worker", 1])
def test_device_strings_are_still_validated(monkeypatch, bad):
    gpus(monkeypatch, 2)
    with pytest.raises(ValueError, match="is not valid; choose one of 'auto', 'cpu'"):
        resolve_device(bad)


def test_cuda_and_cuda0_share_the_model_and_the_state_keys(monkeypatch, minilm_path):
    gpus(monkeypatch, 1)
    models = ModelCache()
    monkeypatch.setattr("skembed._network.MODELS", models)
    loaded = []

    def load(self, device):  # stands in for loading onto the GPU
        loaded.append(device)
        return object()

    monkeypatch.setattr(TransformerEmbeddings, "_load_model", load)
    embs = [TransformerEmbeddings(minilm_path, device=d) for d in ("cuda", "cuda:0", "auto")]
    got = [emb._get_model() for emb in embs]
    assert got[0] is got[1] is got[2] and loaded == [torch.device("cuda:0")]
    assert {emb._model_for for emb in embs} == {(embs[0]._model_key(), "cuda:0")}
    assert len({emb._state_prefix() for emb in embs}) == 1
    assert all(str(emb._device) == "cuda:0" for emb in embs)
    # The index is fixed when the device is resolved: torch's current device changing later
    # (torch.cuda.set_device) moves neither the model nor the tensors made for it.
    gpus(monkeypatch, 2, current=1)
    assert embs[0]._get_model() is got[0] and embs[0]._device == torch.device("cuda:0")
    # A clone or an unpickled copy resolves again, in the process it runs in.
    assert str(resolve_device(clone(embs[0]).device)) == "cuda:1"
    restored = pickle.loads(pickle.dumps(embs[0]))
    assert "_device" not in restored.__dict__


@pytest.mark.parametrize(
    "rank, count, expected",
    [
        (0, 1, "cuda:0"),
        (3, 1, "cuda:0"),
        (0, 4, "cuda:0"),
        (1, 4, "cuda:1"),
        (5, 4, "cuda:1"),
        (0, 0, "cpu"),
        (2, 0, "cpu"),
    ],
)
def test_device_for_rank(rank, count, expected):
    assert device_for_rank(rank, count) == expected


def test_device_for_a_negative_rank_is_an_error():
    with pytest.raises(ValueError, match="rank must be non-negative"):
        device_for_rank(-1, 2)


def test_a_default_device_changes_auto_and_cuda_only(monkeypatch):
    gpus(monkeypatch, 2)
    assert set_default_device("cuda:1") == "cuda:1"
    assert [str(resolve_device(d)) for d in ("auto", "cuda", "cuda:0", "cpu")] == [
        "cuda:1",
        "cuda:1",
        "cuda:0",
        "cpu",
    ]
    set_default_device("cpu")
    assert [str(resolve_device(d)) for d in ("auto", "cuda", "cuda:1")] == [
        "cpu",
        "cuda:0",
        "cuda:1",
    ]
    set_default_device(None)
    assert str(resolve_device("auto")) == "cuda:0"
    with pytest.raises(ValueError, match="is not valid"):
        set_default_device("gpu")


def test_a_default_beyond_the_visible_devices_falls_back(monkeypatch):
    gpus(monkeypatch, 1)
    SET_DEVICE.clear()
    set_default_device("cuda:3")
    assert SET_DEVICE == []
    with pytest.warns(RuntimeWarning, match=r"device='cuda:3' .* using 'cuda:0'"):
        assert resolve_device("auto") == torch.device("cuda:0")
    assert resolve_device("cuda") == torch.device("cuda:0")


def test_per_worker_gives_live_processes_distinct_slots(monkeypatch):
    """The slot counter: flock locks conflict between open files, so one process can play
    several (each claim is a process's, kept while it lives)."""
    gpus(monkeypatch, 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    SET_DEVICE.clear()
    assert set_default_device("per-worker") == "cuda:0"
    assert set_default_device("per-worker") == "cuda:0"  # the same process keeps its slot
    first = dict(_device._CLAIM)
    _device._CLAIM.clear()  # "another process": the first claim stays held
    assert set_default_device("per-worker") == "cuda:1"
    assert SET_DEVICE == [0, 0, 1]  # torch's current device follows: no context on cuda:0
    second = dict(_device._CLAIM)
    _device._CLAIM.clear()
    assert set_default_device("per-worker") == "cuda:0"  # third worker, two GPUs: wraps
    assert _device._CLAIM["slot"] == 2 and str(resolve_device("auto")) == "cuda:0"
    _device._release_slot()
    first["file"].close()  # the first worker dies: a new one takes its slot
    assert set_default_device("per-worker") == "cuda:0" and _device._CLAIM["slot"] == 0
    second["file"].close()


def test_per_worker_counts_apart_by_visible_devices(monkeypatch):
    """dask-cuda gives each worker its own CUDA_VISIBLE_DEVICES, its GPU first: each is then
    the first of its kind and uses cuda:0, its own card."""
    gpus(monkeypatch, 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert set_default_device("per-worker") == "cuda:0"
    held = dict(_device._CLAIM)
    _device._CLAIM.clear()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    assert set_default_device("per-worker") == "cuda:0"
    held["file"].close()


def test_per_worker_without_cuda_uses_the_cpu(monkeypatch):
    gpus(monkeypatch, 0)
    assert set_default_device("per-worker") is None
    assert resolve_device("auto") == torch.device("cpu")


def test_the_environment_variable_sets_the_default(monkeypatch):
    gpus(monkeypatch, 2)
    monkeypatch.setenv("SKEMBED_DEVICE", "cuda:1")
    assert str(resolve_device("auto")) == "cuda:1"
    _device._DEFAULT.clear()
    monkeypatch.setenv("SKEMBED_DEVICE", "per-worker")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert str(resolve_device("cuda")) == "cuda:0" and _device._CLAIM["slot"] == 0
    _device._DEFAULT.clear()
    monkeypatch.setenv("SKEMBED_DEVICE", "gpu")
    with pytest.raises(ValueError, match="SKEMBED_DEVICE='gpu' is not valid"):
        resolve_device("auto")


def test_worker_setup_sets_the_device_of_the_worker(monkeypatch):
    pytest.importorskip("distributed")
    from skembed.dask import WorkerSetup

    gpus(monkeypatch, 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setattr("skembed.cache.set_cache", lambda **kwargs: None)
    with pytest.raises(ValueError, match="device='gpu' is not valid"):
        WorkerSetup(device="gpu")
    plugin = pickle.loads(pickle.dumps(WorkerSetup(device="per-worker")))
    plugin.setup()
    assert str(resolve_device("auto")) == "cuda:0"
    plugin.teardown()
    assert _device._DEFAULT.get("device") is None and not _device._CLAIM
    WorkerSetup(device="cuda:1").setup()
    assert str(resolve_device("cuda")) == "cuda:1"
    WorkerSetup().setup()  # no device: the worker's default stays as it was
    assert str(resolve_device("auto")) == "cuda:1"


def test_cheap_operations_run_on_one_thread_and_give_the_threads_back(
    tiny_model, monkeypatch, request
):
    """Combining and pooling stored states runs torch on one thread on the CPU (small
    operations split over threads wait on each other when another process holds a core);
    the forward passes between them keep every thread, and the count is restored after the
    last concurrent section, also after an error."""
    from skembed import DocumentPoolEmbeddings, TransformerEmbeddings, _precision, transformer
    from skembed._hf.network import HFNetwork

    threads = torch.get_num_threads()
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    torch.set_num_threads(2)
    seen = {"combine": [], "forward": []}
    combine, forward = (
        transformer.TransformerEmbeddings._combine_pooled,
        HFNetwork._forward,
    )

    def spy_combine(self, *args, **kwargs):
        seen["combine"].append(torch.get_num_threads())
        return combine(self, *args, **kwargs)

    def spy_forward(self, *args, **kwargs):
        seen["forward"].append(torch.get_num_threads())
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(transformer.TransformerEmbeddings, "_combine_pooled", spy_combine)
    monkeypatch.setattr(HFNetwork, "_forward", spy_forward)
    texts = [f"document number {i} " * (1 + i % 5) for i in range(12)]
    pooled = DocumentPoolEmbeddings(TransformerEmbeddings(tiny_model("bert"), batch_size=3))
    pooled.fit().transform(texts)
    assert set(seen["combine"]) == {1} and set(seen["forward"]) == {2}
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="boom"):
        with _precision.cheap_operations(torch.device("cpu")):
            with _precision.cheap_operations(torch.device("cpu")):
                assert torch.get_num_threads() == 1
            assert torch.get_num_threads() == 1  # the outer section still runs
            raise RuntimeError("boom")
    assert torch.get_num_threads() == 2
