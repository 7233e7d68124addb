"""Device and precision handling: the one place that decides where and in what dtype models run."""

from __future__ import annotations

import contextlib
import functools
import re
import subprocess
import sys
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


@functools.cache
def _cpu_matmul_works(precision: str) -> bool:
    """Probe, in a child process, that a reduced-precision matrix product runs on this CPU.

    Some virtual machines advertise AMX tiles that they do not enable: oneDNN then dies with
    an illegal instruction, which no exception handler can catch, so it is tried elsewhere.
    """
    code = (
        f"import torch; a = torch.ones(64, 64, dtype=torch.{precision}); "
        "l = torch.nn.Linear(64, 64).to(a.dtype); l(a @ a)"
    )
    try:
        return subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return True  # could not probe: let the real computation speak


def check_cpu_precision(device: torch.device, precision: str) -> None:
    """Refuse, with a clear error, a CPU precision that would crash this machine."""
    if device.type != "cpu" or precision == "float32" or _cpu_matmul_works(precision):
        return
    raise ValueError(
        f"precision={precision!r} crashes on this CPU (it advertises instructions, such as AMX, "
        "that this machine does not enable). Use precision='float32', or set the environment "
        "variable ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 before torch is imported."
    )


@functools.cache
def cpu_lstm_works(precision: str) -> bool:
    """Whether torch runs an LSTM on this CPU under autocast to ``precision``.

    Under CPU autocast, torch's LSTM is oneDNN's, in the autocast dtype: oneDNN has no float16
    LSTM on any CPU, and a bfloat16 one only where it has AVX-512 (not on AVX2-only CPUs).
    It fails with a RuntimeError (no crash), so it is tried here, on a tiny LSTM, once per
    process; call it after :func:`check_cpu_precision`, which rules out the crashing machines.
    """
    if precision == "float32":
        return True
    lstm = torch.nn.LSTM(4, 4)
    try:
        with torch.inference_mode(), autocast(torch.device("cpu"), precision):
            lstm(torch.zeros(2, 1, 4))
    except RuntimeError:
        return False
    return True


def autocast(device: torch.device, precision: str):
    """A context that runs the forward pass in ``precision`` (a no-op for float32)."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """Copy a tensor to the CPU, through pinned memory for CUDA tensors."""
    if tensor.device.type != "cuda":
        return tensor.cpu()  # the tensor itself when it is on the CPU already
    out = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    out.copy_(tensor, non_blocking=True)
    torch.cuda.current_stream(tensor.device).synchronize()
    return out
