"""Who holds GPU memory: cached states on an accelerator under a budget of their own, and
skembed.cache.free_device_memory (called on out-of-memory before a retry) dropping that
device's states and idle models. On a machine without a GPU, states on the "meta" device
stand for GPU tensors and torch's CUDA calls are faked."""

from __future__ import annotations

import pytest
import torch
from tiny_embedders import build_files, make

from skembed import _batching, cache
from skembed._caches import ModelCache, StateCache
from skembed._hf.doc_state import DocState
from skembed.cache import free_device_memory

DOC = b"d" * 16  # a document digest, as in real keys


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return build_files(tmp_path_factory.mktemp("gpu-memory"))


def test_states_on_an_accelerator_have_their_own_budget():
    states = StateCache(max_bytes=2500)  # four entries of about 600 bytes
    for i in range(4):
        states.put(("host", i, DOC), torch.zeros(100))  # 400 bytes and the key each
    for i in range(4):
        states.put(("gpu", i, DOC), torch.zeros(100, device="meta"))
    assert states.device_bytes() == {"meta": states.nbytes - states._lru.nbytes}
    assert states._lru.nbytes <= 2500 and states.device_bytes()["meta"] <= 2500
    assert len(states) == 8  # neither pushed the other out
    found = states.get_many([("host", 0, DOC), ("gpu", 3, DOC), ("gpu", 9, DOC)])
    assert found[0].device.type == "cpu" and found[1].device.type == "meta"
    assert found[2] is None and (states.hits, states.misses) == (2, 1)
    for i in range(4, 8):  # more GPU states: the least recent GPU ones go, not the host's
        states.put(("gpu", i, DOC), torch.zeros(100, device="meta"))
    assert states.get(("gpu", 0, DOC)) is None and states.get(("host", 0, DOC)) is not None
    states.resize(0)
    assert len(states) == 0 and states.nbytes == 0


def test_the_device_of_a_transformer_state_is_found():
    states = StateCache()
    tensor = torch.zeros(2, 3, 4, device="meta")
    spans = torch.zeros(1, 2, dtype=torch.int64, device="meta")
    state = DocState(sub=tensor, special=tensor[:, :0], spans=spans)
    states.put(("m", DOC), state)
    states.put(("list", DOC), [torch.zeros(3)])
    assert set(states.device_bytes()) == {"meta"} and len(states._lru) == 1


def test_drop_device_forgets_only_that_device():
    states = StateCache()
    states.put(("host", DOC), torch.zeros(10))
    states.put(("gpu", DOC), torch.zeros(10, device="meta"))
    assert states.drop_device("meta") == 1 and states.drop_device("cuda:1") == 0
    assert states.get(("gpu", DOC)) is None and states.get(("host", DOC)) is not None
    assert states.device_bytes() == {}


def test_model_cache_drops_the_device_models_except_those_in_use():
    models = ModelCache()
    loaded = {}
    for name, device in [("a", "cuda:0"), ("b", "cuda:0"), ("c", "cuda:1"), ("d", "cpu")]:
        loaded[name] = models.get((name, device), object)
    assert models.drop_device("cuda:0", keep=(loaded["b"],)) == 1
    assert models.get(("b", "cuda:0"), object) is loaded["b"]  # kept: not loaded again
    assert models.get(("c", "cuda:1"), object) is loaded["c"]
    assert models.get(("a", "cuda:0"), object) is not loaded["a"]  # dropped: loaded again
    assert models.loads[("a", "cuda:0")] == 2


def test_free_device_memory_drops_states_and_idle_models_then_empties_torch_cache(
    monkeypatch,
):
    states, models, emptied = StateCache(), ModelCache(), []
    monkeypatch.setattr(cache, "STATES", states)
    monkeypatch.setattr(cache, "MODELS", models)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    states.put(("gpu", DOC), torch.zeros(10, device="meta"))
    states.put(("cuda", DOC), torch.zeros(10))
    states._on_device["cuda:0"] = states._on_device.pop("meta")  # as if it were on cuda:0
    states.put(("host", DOC), torch.zeros(10))
    busy = models.get(("busy", "cuda:0"), object)
    idle = models.get(("idle", "cuda:0"), object)
    other = models.get(("other", "cuda:1"), object)
    free_device_memory(torch.device("cuda:0"), keep=(busy,))
    assert emptied == [1]
    assert states.device_bytes() == {} and len(states) == 2
    assert models.get(("busy", "cuda:0"), object) is busy
    assert models.get(("other", "cuda:1"), object) is other
    assert models.get(("idle", "cuda:0"), object) is not idle
    free_device_memory("cpu")  # nothing to free on the host
    assert emptied == [1] and len(states) == 2


def test_out_of_memory_frees_the_device_before_the_retry(files, tiny_model, monkeypatch):
    monkeypatch.setattr(cache.STATES, "enabled", False)  # every call runs the network
    emb = make("TransformerEmbeddings", files, tiny_model, batch_size=4).fit()
    calls, real_forward = [], type(emb)._forward

    def forward(self, model, docs, *args, **kwargs):
        if len(docs) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(self, model, docs, *args, **kwargs)

    monkeypatch.setattr(type(emb), "_forward", forward)
    monkeypatch.setattr(
        _batching, "free_device_memory", lambda device, keep: calls.append((device, keep))
    )
    with pytest.warns(RuntimeWarning, match="ran out of memory"):
        emb.transform(["one two", "three four five", "six"]).to_numpy()
    model = emb._get_model()
    assert calls and all(d == emb._device and k == (model,) for d, k in calls)
