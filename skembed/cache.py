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

This module holds the caches of the process (``MODELS``, ``STATES``) and what configures and
frees them; their classes are in :mod:`skembed._caches`.
"""

from __future__ import annotations

import numbers

import torch

from ._caches import ModelCache, StateCache
from ._shared import SHARED

_UNSET = object()  # set_cache(directory=None) means "no directory": unset is another value


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
