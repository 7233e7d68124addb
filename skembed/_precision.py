"""Precision: what dtype models run in, and the process-wide settings of skembed's work.

The ``precision`` parameter as a torch dtype, the checks that refuse a precision this CPU or
GPU cannot run, autocast, and the settings global to the process that skembed holds while it
works (TF32 off for float32 on CUDA, one torch thread for cheap operations on the CPU).
Where models run is decided in :mod:`skembed._device`, whose ``forward_context`` combines the
two for a forward pass.
"""

from __future__ import annotations

import contextlib
import functools
import subprocess
import sys
import threading

import torch

PRECISIONS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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
    """Refuse, with a clear error, a precision this machine cannot run: one that would crash
    this CPU, or bfloat16 on a GPU without native bfloat16 (:func:`check_cuda_precision`)."""
    if device.type == "cuda":
        check_cuda_precision(device, precision)
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


def check_cuda_precision(device: torch.device, precision: str) -> None:
    """Refuse ``precision="bfloat16"`` on a CUDA device without native bfloat16 (before
    Ampere), where torch would emulate it slowly or fail inside a kernel."""
    if precision != "bfloat16" or device.type != "cuda":
        return
    try:
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch before 2.3 has no emulation argument
        native = torch.cuda.is_bf16_supported()
    if not native:
        name = torch.cuda.get_device_name(device)
        raise ValueError(
            f"precision='bfloat16' is not supported natively by {device} ({name}); "
            "use precision='float16' or 'float32' on this GPU."
        )


class _ProcessSetting:
    """A process-wide setting held while any thread is inside :meth:`held`: the first thread
    to enter saves the current value (``save()``) and applies the setting (``apply()``), the
    last to leave puts the saved value back (``restore(saved)``), also after an error. For
    switches global to the process (torch's TF32 flags, its thread count) changed for the
    span of skembed's own work."""

    def __init__(self, save, apply, restore):
        self._save, self._apply, self._restore = save, apply, restore
        self._lock = threading.Lock()
        self._depth = 0  # threads inside
        self._saved = None

    @contextlib.contextmanager
    def held(self):
        with self._lock:
            if self._depth == 0:
                self._saved = self._save()
                self._apply()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    self._restore(self._saved)
                    self._saved = None


# TF32 switches of torch's CUDA backends (cuBLAS matmuls, cuDNN convolutions and RNNs): on
# Ampere and newer GPUs, cuDNN uses TF32 (10-bit mantissa) for float32 by default. While any
# thread runs a forward pass they are off and the values found before the first are put back
# after the last (``_EXACT_FLOAT32``, defined after its functions): the switches are global to
# the process, not per thread.


def _tf32_leaves() -> list:
    """The per-operation precision settings of torch >= 2.9 (``fp32_precision``), if any."""
    b = torch.backends
    leaves = [b.cuda.matmul, getattr(b.cudnn, "conv", None), getattr(b.cudnn, "rnn", None)]
    if not hasattr(b, "fp32_precision") or not all(
        hasattr(leaf, "fp32_precision") for leaf in leaves
    ):
        return []
    return leaves


def _save_tf32() -> dict:
    saved: dict = {"leaves": [leaf.fp32_precision for leaf in _tf32_leaves()]}
    # torch refuses to read the old switches when the new per-operation ones were set to a mix
    # that they cannot express; those are then restored through the new settings alone.
    with contextlib.suppress(RuntimeError):
        saved["matmul"] = torch.get_float32_matmul_precision()
    with contextlib.suppress(RuntimeError):
        saved["cudnn"] = bool(torch.backends.cudnn.allow_tf32)
    return saved


def _tf32_off() -> None:
    # The old switches set the old and the new state together (torch checks they agree),
    # then each operation's own setting, which may override an "all" setting of cuDNN.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for leaf in _tf32_leaves():
        leaf.fp32_precision = "ieee"


def _restore_tf32(saved: dict) -> None:
    if "matmul" in saved:
        torch.set_float32_matmul_precision(saved["matmul"])
    if "cudnn" in saved:
        torch.backends.cudnn.allow_tf32 = saved["cudnn"]
    for leaf, value in zip(_tf32_leaves(), saved["leaves"]):
        leaf.fp32_precision = value


_EXACT_FLOAT32 = _ProcessSetting(_save_tf32, _tf32_off, _restore_tf32)


@contextlib.contextmanager
def exact_float32():
    """A context in which float32 on CUDA is IEEE float32: TF32 off for cuBLAS matmuls and
    cuDNN convolutions and RNNs, the user's settings restored afterwards (also after an error).

    Examples
    --------
    >>> before = torch.backends.cudnn.allow_tf32
    >>> with exact_float32():
    ...     torch.backends.cudnn.allow_tf32
    False
    >>> torch.backends.cudnn.allow_tf32 == before
    True
    """
    with _EXACT_FLOAT32.held():
        yield


# While any thread runs skembed's cheap operations on the CPU (reading word vectors out of
# stored states, pooling them) torch runs them on one thread: they are small, and split over
# threads they wait at every operation for a thread the system gave to another process (a
# classifier's BLAS threads, which spin for a while after each call). Held like TF32's
# switches, since torch's thread count is global to the process.
_ONE_THREAD = _ProcessSetting(
    torch.get_num_threads, lambda: torch.set_num_threads(1), torch.set_num_threads
)


@contextlib.contextmanager
def cheap_operations(device: torch.device):
    """The context of skembed's cheap operations (combining and pooling stored states): on
    the CPU, torch on one thread, its thread count put back after the last concurrent one.

    Examples
    --------
    >>> before = torch.get_num_threads()
    >>> with cheap_operations(torch.device("cpu")):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    if device.type != "cpu":
        yield
        return
    with _ONE_THREAD.held():
        yield


def recurrent_in_float32(device: torch.device, precision: str) -> bool:
    """Whether a cuDNN LSTM/GRU must leave autocast and run in float32: on CUDA, autocast runs
    cuDNN's RNN in float16 whatever dtype it was given, so ``"bfloat16"`` would mean float16
    for the recurrent layers (another range, overflow); they run in float32 instead."""
    return device.type == "cuda" and precision == "bfloat16"


def recurrent_autocast(device: torch.device, precision: str, in_float32: bool = False):
    """The context of a recurrent layer's call inside :func:`~skembed._device.forward_context`:
    autocast off (float32) when ``in_float32`` or :func:`recurrent_in_float32`, else unchanged."""
    if in_float32 or recurrent_in_float32(device, precision):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()
