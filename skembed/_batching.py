"""Forward passes in batches: length-sorted batches, and halving a batch after the device ran
out of memory (warned once per estimator; the smaller size is kept for the rest of the call)."""

from __future__ import annotations

import contextvars
import warnings
from collections.abc import Callable, Sequence

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
