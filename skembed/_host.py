"""Tensors brought to the host: copies from a GPU through one reused pinned buffer
(:func:`to_host`), and views made into compact copies (:func:`compact`) so that a returned
row never keeps a whole batch's tensor alive."""

from __future__ import annotations

import threading

import torch


def compact(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` with storage of its own size: a copy when it is a view into a bigger tensor
    (which it would keep alive), else itself.

    Examples
    --------
    >>> big = torch.zeros(3, 4)
    >>> compact(big[0]).untyped_storage().nbytes(), compact(big) is big
    (16, True)
    """
    if tensor.untyped_storage().nbytes() == tensor.nbytes:
        return tensor
    return tensor.clone()


# Bytes of the one pinned buffer that copies from a GPU pass through (see :func:`to_host`):
# large enough for copies near full bus speed, small enough to pin for the whole process.
STAGING_BYTES = 32 << 20
_staging: dict[str, torch.Tensor] = {}  # the pinned buffer, made on the first copy
_staging_lock = threading.Lock()


def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of a tensor in ordinary (pageable) host memory; the tensor itself when it is on
    the CPU already.

    A CUDA tensor is copied in chunks through one reused pinned buffer of
    :data:`STAGING_BYTES`: a pinned buffer per call would come from torch's caching host
    allocator, which rounds it up to a power of two and never gives it back to the system, and
    the result (often a user's numpy array) would live in pinned memory.
    """
    if tensor.device.type != "cuda":
        return tensor.cpu()
    with _staging_lock:
        staging = _staging.get("buffer")
        if staging is None:
            staging = _staging["buffer"] = torch.empty(
                STAGING_BYTES, dtype=torch.uint8, pin_memory=True
            )
        stream = torch.cuda.current_stream(tensor.device)
        return staged_copy(tensor, staging, stream.synchronize)


def staged_copy(tensor: torch.Tensor, staging: torch.Tensor, synchronize) -> torch.Tensor:
    """``tensor`` copied into a new host tensor, ``len(staging)`` bytes at a time through the
    byte buffer ``staging``: each chunk goes to it asynchronously, ``synchronize()`` waits for
    the copy, then it is copied on into the result. Bit for bit the same values."""
    source = tensor.contiguous().reshape(-1)
    out = torch.empty(tensor.shape, dtype=tensor.dtype)
    if source.numel() == 0:
        return out
    source_bytes = source.view(torch.uint8)
    out_bytes = out.reshape(-1).view(torch.uint8)
    step = len(staging)
    for start in range(0, len(source_bytes), step):
        n = min(step, len(source_bytes) - start)
        staging[:n].copy_(source_bytes[start : start + n], non_blocking=True)
        synchronize()
        out_bytes[start : start + n].copy_(staging[:n])
    return out
