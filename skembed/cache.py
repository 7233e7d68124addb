"""Process-wide caches: loaded models, and the expensive per-document states of forward passes.

The model cache makes clones and grid-search candidates share one loaded model per process.
It keeps at most ``max_models`` models (8 by default, see :func:`set_cache`), the least
recently used going first, and a model loaded for files rewritten in place replaces the
model of their older version (model keys hold the files' signatures, see
:func:`skembed.resolve.file_signature`).
The state cache keeps what a network computed for a document (e.g. every layer's sub-token
states), so that parameters that only combine those states (``layers``, ``pooling_operation``,
``use_scalar_mix``, ``embedding_mode``) never run the network again. It also keeps the pooled
rows of documents, one table per layer and pooling setup (see ``DocumentPoolEmbeddings``), so
the folds of a grid search pool a document once per candidate. It is bounded by a byte budget
(states, row tables and the states' keys) with least-recently-used eviction.
"""

from __future__ import annotations

import dataclasses
import hashlib
import numbers
import sys
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import torch

from ._lru import ByteLRU
from ._shared import SHARED
from .resolve import FileSignature

_DEFAULT_STATE_BYTES = 1 << 30  # 1 GiB
_UNSET = object()  # set_cache(directory=None) means "no directory": unset is another value
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


def _key_bytes(key) -> int:
    """Memory held by a ``(..., document digest)`` key, roughly: a fixed part for the tuple
    and the rest of it, and the digest. Other keys count nothing."""
    doc = key[-1] if isinstance(key, tuple) and key else None
    if not isinstance(doc, bytes):
        return 0
    return 150 + sys.getsizeof(doc)


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
    :func:`free_device_memory` drops a device's states at once when it runs out of memory.
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


MODELS = ModelCache()
STATES = StateCache()


def admits(nbytes_per_doc: float, n_docs: int) -> bool:
    """Whether a call should keep the states of its ``n_docs`` documents (``nbytes_per_doc``
    each): only if they all fit in the budget. More would push out everything else, and each
    other before they are read again (least-recently-used eviction on a scan larger than the
    cache hits nothing), so a pass over a corpus too large to cache keeps its memory to a
    batch, while a grid search over documents that fit is served from the cache."""
    return nbytes_per_doc * n_docs <= STATES.max_bytes


def free_device_memory(device, keep=()) -> None:
    """Free what skembed's caches hold on ``device`` (a torch device or its name, such as
    ``"cuda:0"``) after it ran out of memory: the cached states on it, the loaded models on it
    except those in ``keep`` (the ones in use), then torch's cached blocks of the device.
    A no-op for the CPU.

    Examples
    --------
    >>> free_device_memory("cpu")
    """
    device = torch.device(device)
    if device.type == "cpu":
        return
    STATES.drop_device(str(device))
    MODELS.drop_device(str(device), keep)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def set_cache(
    enabled: bool | None = None,
    max_bytes: int | None = None,
    shared: bool | None = None,
    max_models: int | None = None,
    directory=_UNSET,
    max_disk_bytes: int | None = None,
) -> None:
    """Configure the caches of this process.

    Parameters
    ----------
    enabled : bool, optional
        Turn the cache of forward-pass states on or off (on by default). Off, transformer
        models also forget the words they tokenized at the end of each call (on, they keep
        up to ``skembed._hf.words.WORD_CACHE_BYTES`` of them per model, 32 MiB).
    max_bytes : int, optional
        Byte budget of the cache (1 GiB by default); the least recently used states go first.
        States on a GPU have a budget of their own of the same size, and are dropped when
        the GPU runs out of memory (with the models loaded on it that no call is using).
        A call (``transform``) whose documents' states would not all fit in the budget
        keeps none of them: raise the budget for grid searches over large corpora.
    shared : bool, optional
        Whether worker processes started by this one (joblib's, in ``GridSearchCV(...,
        n_jobs=2)``) share states through a temporary folder, so that each document runs
        through the network once among them (on by default; the folder holds at most
        ``max_bytes`` of states in all, and goes when this process exits or clears its
        cache). Set it before the workers start; in a worker, it switches that worker's part.
    max_models : int, optional
        Loaded models kept in the model cache (8 by default); the least recently used go
        first. A model dropped from the cache still serves the estimators that use it; the
        next ``fit`` that needs it loads it again. Models whose files were rewritten in place
        are dropped when the new files are loaded, whatever this number.
    directory : str or path, optional
        Keep forward-pass states in this folder (made if missing), across processes and
        sessions: a notebook run again tomorrow with the same model files, precision, device
        kind and documents runs no document through the network (``cache_info()``'s
        ``documents_computed`` stays 0). Files are safetensors (reading them runs no code),
        written atomically, so concurrent processes (the workers of a grid search, two
        notebooks) can share the folder. Keys hold the model files' paths, sizes and
        modification times: rewritten model files give new states. ``clear_cache()`` leaves the
        folder alone; delete it to drop it. ``None``: back to a temporary folder per session.
        Set it before worker processes start.
    max_disk_bytes : int, optional
        Bytes of batch files the ``directory`` holds at most (10 GiB by default); the files
        read or written longest ago go first, and their documents are computed again when
        needed.

    Examples
    --------
    >>> import skembed
    >>> skembed.set_cache(max_bytes=256 * 2**20)
    >>> skembed.cache_info()["state_max_bytes"]
    268435456
    >>> skembed.set_cache(max_bytes=2**30)
    >>> skembed.set_cache(max_models=2)
    >>> skembed.cache_info()["max_models"]
    2
    >>> skembed.set_cache(max_models=8)
    """
    if enabled is not None:
        STATES.enabled = bool(enabled)
        if not enabled:
            STATES.clear()
            _clear_word_caches()
    if max_bytes is not None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        STATES.resize(max_bytes)
    if shared is not None:
        SHARED.set_enabled(shared)
    if max_disk_bytes is not None:
        if isinstance(max_disk_bytes, bool) or not isinstance(max_disk_bytes, numbers.Integral):
            raise ValueError(f"max_disk_bytes must be an integer, got {max_disk_bytes!r}")
        if max_disk_bytes < 0:
            raise ValueError(f"max_disk_bytes must be >= 0, got {max_disk_bytes}")
        SHARED.max_disk_bytes = int(max_disk_bytes)
    if directory is not _UNSET:
        SHARED.keep_in(directory)
    if max_models is not None:
        if (
            isinstance(max_models, bool)
            or not isinstance(max_models, numbers.Integral)
            or max_models < 0
        ):
            raise ValueError(f"max_models must be an integer >= 0, got {max_models!r}")
        MODELS.resize(max_models)


def clear_cache(models: bool = True, states: bool = True) -> None:
    """Drop cached forward-pass states and/or loaded models of this process (and the states
    its worker processes share, see :func:`set_cache`); ``states`` also drops the words
    transformer tokenizers have seen.

    Examples
    --------
    >>> import skembed
    >>> skembed.clear_cache()
    >>> skembed.cache_info()["state_entries"]
    0
    """
    if states:
        STATES.clear()
        SHARED.clear()
        _clear_word_caches()
    if models:
        MODELS.clear()


def _clear_word_caches() -> None:
    """Forget the words transformer tokenizers have seen (``skembed._hf.words.WordCache``):
    they follow the state cache, off with it and cleared with it."""
    from ._hf.words import clear_word_caches  # deferred: it imports this module

    clear_word_caches()


def cache_info() -> dict:
    """Counts of this process's caches: loads per model, models loaded (and kept at most),
    documents this process ran through a network (``documents_computed``), state entries,
    bytes, hits and misses (a miss read from a sibling process counts in ``shared_hits`` too, one published
    for them in ``shared_writes``; ``shared_states`` says whether this process shares)."""
    return {
        "model_loads": dict(MODELS.loads),
        "models_loaded": len(MODELS),
        "max_models": MODELS.max_models,
        "state_enabled": STATES.enabled,
        "state_entries": len(STATES),
        "state_bytes": STATES.nbytes,
        "state_max_bytes": STATES.max_bytes,
        "state_hits": STATES.hits,
        "state_misses": STATES.misses,
        "documents_computed": STATES.computed,
        "shared_states": SHARED.active,
        "shared_hits": SHARED.hits,
        "shared_writes": SHARED.writes,
        "state_directory": SHARED.root if SHARED.kept else None,
    }


def drop_after_fork() -> None:
    """Empty the model and state caches of a child forked from a process that used CUDA
    (:func:`skembed._device.note_cuda_use` registers the hook): their CUDA tensors are dead
    there. The caches are made anew rather than cleared, since a thread of the parent may have
    held one of their locks at the fork."""
    enabled = STATES.enabled
    MODELS.__init__(MODELS.max_models)
    STATES.__init__(STATES.max_bytes)
    STATES.enabled = enabled
