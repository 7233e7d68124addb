"""Forward passes in batches: length-sorted batches, halving a batch after the device ran
out of memory (warned once per estimator; the smaller size is kept for the rest of the call and
remembered for later calls on the same model and device), and the one progress bar of a call
(:class:`Progress`)."""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch

from ._device import forward_context
from .cache import free_device_memory

# How a device says it ran out of memory besides torch.OutOfMemoryError: CUDA's and MPS's
# plain RuntimeError ("out of memory"), cuBLAS (CUBLAS_STATUS_ALLOC_FAILED, e.g. creating a
# handle), cuDNN before and after version 9 (CUDNN_STATUS_ALLOC_FAILED,
# CUDNN_STATUS_INTERNAL_ERROR_{HOST,DEVICE}_ALLOCATION_FAILED) and cuFFT (CUFFT_ALLOC_FAILED).
_OUT_OF_MEMORY = re.compile(
    r"out of memory|\b(CUBLAS|CUDNN|CUSOLVER|CUSPARSE)_STATUS_ALLOC_FAILED\b"
    r"|\bCUDNN_STATUS_\w*ALLOCATION_FAILED\b|\bCUFFT_ALLOC_FAILED\b",
    re.IGNORECASE,
)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an accelerator running out of memory: torch's ``OutOfMemoryError``, or a
    ``RuntimeError`` from CUDA, MPS, cuBLAS, cuDNN or cuFFT that says an allocation failed.

    Examples
    --------
    >>> is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling "
    ...                               "`cublasCreate(handle)`"))
    True
    >>> is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED"))
    False
    """
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and _OUT_OF_MEMORY.search(str(exc)) is not None


def length_sorted(subset, cost: Callable[[int], int], size: int) -> list[list[int]]:
    """The documents ``subset`` in batches of ``size``, most costly (longest) first, so that a
    batch holds documents of similar length (little padding).

    Examples
    --------
    >>> length_sorted([0, 1, 2], cost=[5, 9, 1].__getitem__, size=2)
    [[1, 0], [2]]
    """
    order = sorted(subset, key=lambda i: -cost(i))
    return [order[s : s + size] for s in range(0, len(order), size)]


class BatchSize:
    """The rows of one forward pass in a call: the estimator's ``batch_size``, halved each time
    the device runs out of memory, and kept halved for the rest of the call (one
    out-of-memory error is not paid again on every later batch)."""

    def __init__(self, size: int):
        self.size = int(size)


# Batch sizes that worked after running out of memory, by the estimator's state prefix
# (model, precision, device, forward parameters) and its ``batch_size``: later calls, clones
# (every fold and candidate of a grid search) and copies start from there instead of paying the
# error again. Per process, as the memory a device has left is.
_WORKING_SIZES: dict = {}
_SIZES_LOCK = threading.Lock()


def _size_key(embedder) -> tuple:
    return (embedder._state_prefix(), int(embedder.batch_size))


def working_batch_size(embedder) -> int | None:
    """The batch size this process found to fit for ``embedder``'s model, precision and
    device after running out of memory with its ``batch_size`` (None: it never did)."""
    with _SIZES_LOCK:
        return _WORKING_SIZES.get(_size_key(embedder))


def forget_batch_sizes() -> None:
    """Forget the batch sizes remembered after running out of memory (the next call starts
    from each estimator's ``batch_size`` again)."""
    with _SIZES_LOCK:
        _WORKING_SIZES.clear()


def _remember(embedder, size: int) -> None:
    key = _size_key(embedder)
    with _SIZES_LOCK:
        _WORKING_SIZES[key] = min(size, _WORKING_SIZES.get(key, size))


def passes_batch_size(forward) -> bool:
    """Whether a family's ``_forward`` takes ``batch_size`` (it batches internally, e.g. the
    windows of long documents); one that runs its documents in one pass need not."""
    try:
        params = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False
    return "batch_size" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def forward_in_batches(
    embedder, model, docs: Sequence[list[str]], index: Sequence[int], batch: BatchSize
) -> list:
    """``embedder._forward(model, part)`` over ``docs[i] for i in index`` in parts of
    ``batch.size`` documents, in the embedder's precision (:func:`skembed._device.forward_context`);
    one state per document. A ``_forward`` that takes ``batch_size`` (it batches internally)
    gets the current size as that argument.

    Out of memory, the part is halved and tried again (``batch.size`` stays halved, and the
    size that works is remembered for later calls on the same model, precision and device:
    :func:`working_batch_size`); a document that does not fit even alone raises the device's
    error, naming it.
    """
    known = working_batch_size(embedder)
    if known is not None:
        batch.size = min(batch.size, known)
    with_size = passes_batch_size(embedder._forward)
    states: list = []
    start = 0
    while start < len(index):
        size = batch.size
        part = [docs[i] for i in index[start : start + size]]
        try:
            with torch.inference_mode(), forward_context(embedder._device, embedder.precision):
                if with_size:
                    states.extend(embedder._forward(model, part, batch_size=size))
                else:
                    states.extend(embedder._forward(model, part))
            start += len(part)
            continue
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if size == 1:
                doc = index[start]
                raise type(exc)(
                    f"Document {doc} ({len(docs[doc])} tokens) does not fit in the memory of "
                    f"{embedder._device} even alone. Split it, use a smaller model or "
                    "precision='float16', or run on device='cpu'."
                ) from exc
        # Retry outside the except block, so the failed attempt's tensors can be freed.
        batch.size = max(1, size // 2)
        _remember(embedder, batch.size)
        warn_out_of_memory(embedder, size, batch.size)
        free_device_memory(embedder._device, keep=(model,))  # cached states, idle models
    return states


def warn_out_of_memory(embedder, size: int, new_size: int) -> None:
    """Warn once per estimator (a copy made for a deferred result warns for the one it
    copies) that its batches were halved."""
    origin = embedder.__dict__.get("_copy_of", embedder)
    if origin.__dict__.get("_oom_warned"):
        return
    origin._oom_warned = True
    warnings.warn(
        f"{type(embedder).__name__} ran out of memory on {embedder._device} with a batch of "
        f"{size}; retrying with smaller batches ({new_size}). This process keeps the smaller "
        "size for later calls with this model, precision and device (clones too); set "
        f"batch_size={new_size} or lower to avoid the retries in new processes.",
        RuntimeWarning,
        stacklevel=5,
    )


class Progress:
    """The progress bar of one public call: a tqdm bar over the call's documents (unit
    ``"doc"``), or nothing when ``show`` is False.

    The public entry point that embeds documents makes one (:func:`call_progress`) and hands it
    down as the ``progress=`` argument of ``embed_documents``, ``iter_batches``,
    ``pool_documents`` and ``_batch_states``; whoever settles documents (computed, read from
    the state store, or empty) calls :meth:`update` with their number, so the bar reaches the
    call's total once, however the work is chunked.

    Examples
    --------
    >>> bar = Progress(3)  # shows nothing
    >>> bar.update(2); bar.update(1); bar.n
    3
    >>> [part.n for part in bar.shares(4, 2)]
    [0, 0]
    """

    def __init__(self, total: int = 0, desc: str | None = None, show: bool = False):
        self.n = 0
        self.bar = None
        if show:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="doc")

    def update(self, n: int) -> None:
        """``n`` more documents of the call are done."""
        if n:
            self.n += n
            if self.bar is not None:
                self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def shares(self, n: int, parts: int) -> list[_Share]:
        """``parts`` views of this bar that each go through the same ``n`` documents (the
        members of a stack): together they advance it by ``n``, each by its share."""
        return [_Share(self, n, k, parts) for k in range(parts)]


class _Share(Progress):
    """Part ``k`` of ``parts`` of ``n`` documents of a :class:`Progress`: ``m`` documents
    done here move the bar to ``(k * n + m) // parts``."""

    def __init__(self, parent: Progress, n: int, k: int, parts: int):
        self.parent, self.total, self.k, self.parts = parent, n, k, parts
        self.n = 0
        self.bar = None

    def update(self, n: int) -> None:
        before = (self.k * self.total + self.n) // self.parts
        self.n += n
        self.parent.update((self.k * self.total + self.n) // self.parts - before)

    def finish(self) -> None:
        """Count whatever this part has not counted (a method that takes no bar)."""
        self.update(self.total - self.n)


@contextlib.contextmanager
def call_progress(progress: Progress | None, estimator, total: int) -> Iterator[Progress]:
    """The bar of a call: ``progress`` when the caller handed one down (the caller closes
    it), else a new one over ``total`` documents, shown when the estimator shows bars
    (:func:`shows_progress`) and closed when the call ends."""
    if progress is not None:
        yield progress
        return
    own = new_progress(estimator, total)
    try:
        yield own
    finally:
        own.close()


def new_progress(estimator, total: int) -> Progress:
    """A bar over the ``total`` documents of a call of ``estimator``, shown when it shows bars
    (:func:`shows_progress`); the caller closes it."""
    return Progress(total, type(estimator).__name__, shows_progress(estimator))


def shows_progress(estimator) -> bool:
    """Whether ``estimator`` shows bars: its ``_shows_progress()`` (a stack: any member's),
    else its ``show_progress_bar`` parameter, if any."""
    shows = getattr(estimator, "_shows_progress", None)
    if callable(shows):
        return bool(shows())
    return bool(getattr(estimator, "show_progress_bar", False))


def takes_progress(method) -> bool:
    """Whether ``method`` accepts ``progress=``: skembed's own protocol methods do; one written
    by a user (``embed_documents(docs)``, ``iter_batches(docs)``) may not, and is then called
    without it (the caller counts its documents when it returns)."""
    return takes_argument(method, "progress")


def takes_argument(method, name: str) -> bool:
    """Whether ``method`` accepts the keyword argument ``name`` (or any keyword)."""
    function = getattr(method, "__func__", method)  # a method's answer is its function's
    try:
        return _accepts(function, name)
    except TypeError:  # an unhashable callable: asked afresh
        return _accepts.__wrapped__(function, name)


@functools.lru_cache(maxsize=256)
def _accepts(function, name: str) -> bool:
    # Asked on every call of a pooler (a grid search makes hundreds): a signature costs more.
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)
