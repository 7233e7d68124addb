"""The classes of skembed's caches, and what they read off the keys and values they hold.

``ModelCache`` keeps loaded models by key; ``StateCache`` keeps forward-pass states (and row
tables) under a byte budget, least recently used out, with a budget of its own on each
accelerator. Their helpers give a document's part of cache keys (``doc_key``), the bytes of a
key or a state, the device of a state, and the files of a model key. The caches of the process
(``MODELS``, ``STATES``) and the functions that configure them are in :mod:`skembed.cache`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import torch

from ._lru import ByteLRU
from .resolve import FileSignature

_DEFAULT_STATE_BYTES = 1 << 30  # 1 GiB
_DEFAULT_MODELS = 8


def doc_key(tokens: list[str]) -> bytes:
    """A document's part of cache keys: a 128-bit digest of its tokens (a key holds 49 bytes
    for it, not the tokens: the keys of a large corpus's states and rows stay small).

    Examples
    --------
    >>> doc_key(["a", "b"]) == doc_key(["a", "b"]) != doc_key(["a b"])
    True
    """
    text = "\x00".join(tokens)
    if text.count("\x00") != len(tokens) - 1:  # a token holds NUL: spell the list out
        text = repr(list(tokens))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


# A state key's tuple and its entry in the LRU's dictionary, roughly (the prefix it shares
# with the other keys of its model is not counted).
_KEY_OVERHEAD_BYTES = 150


def _key_bytes(key) -> int:
    """Memory held by a ``(..., document digest)`` key, roughly: a fixed part for the tuple
    and the rest of it, and the digest. Other keys count nothing."""
    doc = key[-1] if isinstance(key, tuple) and key else None
    if not isinstance(doc, bytes):
        return 0
    return _KEY_OVERHEAD_BYTES + sys.getsizeof(doc)


def _nbytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.element_size() * obj.nelement()
    if hasattr(obj, "nbytes"):
        return int(obj.nbytes)
    if isinstance(obj, tuple | list):
        return sum(_nbytes(o) for o in obj) + 8 * len(obj)
    if isinstance(obj, dict):
        return sum(_nbytes(o) for o in obj.values())
    return 64


def _files_of(key):
    """``key`` with each file signature in it replaced by its paths: the same for every
    version of the same files."""
    if isinstance(key, FileSignature):
        return ("files", key.paths)
    if isinstance(key, tuple):
        return tuple(map(_files_of, key))
    return key


class ModelCache:
    """Loaded models by key, each loaded once per process, even under threads.

    At most ``max_models`` are kept, the least recently used going first; a model loaded for
    files whose signature changed (rewritten in place) replaces the models of their older
    versions. An estimator keeps a reference to its model, so one dropped from here still
    serves the estimators that loaded it; the next load of its key reads the files again.
    """

    def __init__(self, max_models: int = _DEFAULT_MODELS):
        self.max_models = int(max_models)
        self._models: OrderedDict[Hashable, Any] = OrderedDict()
        # One lock per key ever loaded (kept: dropping one a thread waits on would let two
        # threads load the same key; a lock is small, like the key's count in ``loads``).
        self._locks: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()
        self.loads: Counter = Counter()

    def _find(self, key: Hashable) -> Any:
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
            return model

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        model = self._find(key)
        if model is not None:
            return model
        with self._lock:
            key_lock = self._locks.setdefault(key, threading.Lock())
        with key_lock:
            model = self._find(key)
            if model is None:
                model = load()
                with self._lock:
                    files = _files_of(key)
                    for old in [k for k in self._models if _files_of(k) == files]:
                        del self._models[old]  # an older version of the same files
                    self._models[key] = model
                    self.loads[key] += 1
                    self._evict()
        return model

    def _evict(self) -> None:
        while len(self._models) > self.max_models:
            self._models.popitem(last=False)

    def resize(self, max_models: int) -> None:
        with self._lock:
            self.max_models = int(max_models)
            self._evict()

    def drop_device(self, device: str, keep=()) -> int:
        """Drop the models loaded onto ``device`` (their keys end with it), except the
        objects in ``keep`` (the models in use); return how many. An estimator holding a
        dropped model still serves it; the others' memory is freed."""
        kept = {id(model) for model in keep}
        with self._lock:
            gone = [
                key
                for key, model in self._models.items()
                if isinstance(key, tuple) and key and key[-1] == device and id(model) not in kept
            ]
            for key in gone:
                del self._models[key]
        return len(gone)

    def __len__(self) -> int:
        return len(self._models)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
            self._locks.clear()


class StateCache:
    """An LRU mapping ``key -> state`` bounded by the total bytes of the stored tensors and
    their keys, with hit, miss and computed-document counters.

    States on the host and states on each accelerator are kept apart, each under its own
    budget of ``max_bytes``: GPU memory is not filled by what the host budget allows, and
    :func:`skembed.cache.free_device_memory` drops a device's states at once when it runs out
    of memory.
    """

    def __init__(self, max_bytes: int = _DEFAULT_STATE_BYTES):
        self.enabled = True
        self._lru = ByteLRU(max_bytes)  # states on the host, row tables
        self._on_device: dict[str, ByteLRU] = {}  # "cuda:0" -> its states
        self._lock = threading.Lock()  # for the counters
        self.hits = 0
        self.misses = 0
        self.computed = 0  # documents this process ran through a network

    @property
    def max_bytes(self) -> int:
        return self._lru.max_bytes

    def count_computed(self, n: int) -> None:
        with self._lock:
            self.computed += n

    def get(self, key: Hashable, count: bool = True):
        """The state stored under ``key``, or None; ``count=False`` leaves the hit and miss
        counters (which count forward-pass states) alone."""
        return self.get_many([key], count)[0]

    def get_many(self, keys: list[Hashable], count: bool = True) -> list:
        """The states stored under ``keys`` (None for each one missing), looked up under one
        lock; ``count=False`` leaves the hit and miss counters alone."""
        if not self.enabled:
            return [None] * len(keys)
        found = self._lru.get_many(keys)
        for tier in list(self._on_device.values()):
            missing = [k for k, state in enumerate(found) if state is None]
            if not missing:
                break
            for k, state in zip(missing, tier.get_many([keys[k] for k in missing])):
                found[k] = state
        if count:
            hits = len(keys) - found.count(None)
            with self._lock:
                self.hits += hits
                self.misses += len(keys) - hits
        return found

    def put(self, key: Hashable, state) -> None:
        if not self.enabled:
            return
        device = _device_of(state)
        tier = self._lru
        if device != "cpu":
            with self._lock:
                tier = self._on_device.get(device)
                if tier is None:
                    tier = self._on_device[device] = ByteLRU(self.max_bytes)
        # The key counts too: for small states it is much of the memory.
        tier.put(key, state, _nbytes(state) + _key_bytes(key))

    def _tiers(self) -> list[ByteLRU]:
        return [self._lru, *list(self._on_device.values())]

    def resize(self, max_bytes: int) -> None:
        for tier in self._tiers():
            tier.resize(max_bytes)

    def drop_device(self, device: str) -> int:
        """Forget the states on ``device`` (such as ``"cuda:0"``); return how many."""
        with self._lock:
            tier = self._on_device.pop(device, None)
        return 0 if tier is None else len(tier)

    def device_bytes(self) -> dict[str, int]:
        """Bytes of states per accelerator, such as ``{"cuda:0": 1234}``."""
        return {device: tier.nbytes for device, tier in list(self._on_device.items())}

    def clear(self) -> None:
        for tier in self._tiers():
            tier.clear()
        with self._lock:
            self._on_device.clear()
            self.hits = self.misses = self.computed = 0

    @property
    def nbytes(self) -> int:
        return sum(tier.nbytes for tier in self._tiers())

    def __len__(self) -> int:
        return sum(map(len, self._tiers()))


def _device_of(state) -> str:
    """Where a state's tensors are (the first tensor found in it): ``"cpu"``, ``"cuda:0"``..."""
    if isinstance(state, torch.Tensor):
        return str(state.device)
    if isinstance(state, tuple | list):
        return _device_of(state[0]) if state else "cpu"
    if isinstance(state, dict):
        return _device_of(next(iter(state.values()))) if state else "cpu"
    if dataclasses.is_dataclass(state):
        for field in dataclasses.fields(state):
            value = getattr(state, field.name)
            if isinstance(value, torch.Tensor):
                return str(value.device)
    return "cpu"
