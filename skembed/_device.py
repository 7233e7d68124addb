"""Device and precision handling: the one place that decides where and in what dtype models run."""

from __future__ import annotations

import contextlib
import re
import warnings

import torch

PRECISIONS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device(device) -> str:
    """Validate a ``device`` parameter; return it as a string."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise ValueError(
            f"device={device!r} is not valid; choose one of 'auto', 'cpu', 'cuda', "
            "'cuda:<index>' (e.g. 'cuda:1') or 'mps'."
        )
    return device


def resolve_device(device) -> torch.device:
    """The torch device for a ``device`` parameter.

    ``"auto"`` picks CUDA when present. A CUDA device asked for on a machine without one (for
    instance a pipeline pickled on a GPU machine and loaded on a laptop) falls back to the CPU
    with a warning, so fitted pipelines stay usable everywhere.
    """
    device = check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            warnings.warn(
                f"device={device!r} but CUDA is not available on this machine; using the CPU.",
                RuntimeWarning,
                stacklevel=3,
            )
            return torch.device("cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} but this machine has {torch.cuda.device_count()} CUDA "
                "device(s); choose 'cuda:0' .. "
                f"'cuda:{torch.cuda.device_count() - 1}' or 'auto'."
            )
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        warnings.warn("MPS is not available; using the CPU.", RuntimeWarning, stacklevel=3)
        return torch.device("cpu")
    return dev


def check_precision(precision) -> torch.dtype:
    """The torch dtype for a ``precision`` parameter."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision={precision!r} is not valid; choose one of {sorted(PRECISIONS)}."
        )
    return PRECISIONS[precision]


def autocast(device: torch.device, precision: str):
    """A context that runs the forward pass in ``precision`` (a no-op for float32)."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """Copy a tensor to the CPU, through pinned memory for CUDA tensors."""
    if tensor.device.type != "cuda":
        return tensor
    out = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    out.copy_(tensor, non_blocking=True)
    torch.cuda.current_stream(tensor.device).synchronize()
    return out
