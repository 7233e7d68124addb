"""Forward passes in batches: length-sorted batches, halving a batch after the device ran
out of memory (warned once per estimator; the smaller size is kept for the rest of the call),
and the one progress bar of a call (:class:`Progress`)."""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch

from ._device import autocast

# Rows per forward pass while a call retries after running out of memory, for the families
# that batch inside ``_forward`` (windows of long documents) and read it through
# ``BaseTokenEmbedder._forward_batch_size``; per thread, so concurrent calls never mix.
BATCH_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "skembed_batch_limit", default=None
)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an accelerator running out of memory (CUDA, and MPS's plain RuntimeError)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


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


def forward_in_batches(
    embedder, model, docs: Sequence[list[str]], index: Sequence[int], batch: BatchSize
) -> list:
    """``embedder._forward(model, part)`` over ``docs[i] for i in index`` in parts of
    ``batch.size`` documents, under the embedder's precision; one state per document.

    Out of memory, the part is halved and tried again (``batch.size`` stays halved); a
    document that does not fit even alone raises the device's error, naming it.
    """
    states: list = []
    start = 0
    while start < len(index):
        size = batch.size
        part = [docs[i] for i in index[start : start + size]]
        token = BATCH_LIMIT.set(size)
        try:
            with torch.inference_mode(), autocast(embedder._device, embedder.precision):
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
        finally:
            BATCH_LIMIT.reset(token)
        # Retry outside the except block, so the failed attempt's tensors can be freed.
        batch.size = max(1, size // 2)
        warn_out_of_memory(embedder, size, batch.size)
        if embedder._device.type == "cuda":
            torch.cuda.empty_cache()
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
        f"{size}; retrying with smaller batches ({new_size}). Set batch_size={new_size} or "
        "lower to avoid the retries.",
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
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "progress" or p.kind is p.VAR_KEYWORD for p in params)
