"""Device handling: the one place that decides where models run.

The ``device`` parameter checked and resolved (``"auto"``, the process default of
:func:`set_default_device` or ``SKEMBED_DEVICE``, one GPU per worker process), the guard
against CUDA in a process forked after its parent used CUDA, and ``forward_context``, the
context of a forward pass on a device in a precision. What dtype models run in is decided in
:mod:`skembed._precision`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import re
import tempfile
import threading
import warnings

import torch

from ._precision import autocast, check_cuda_precision, exact_float32

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), for reports."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


# The device that ``"auto"`` (and, when it is a CUDA device, ``"cuda"``) resolves to in this
# process: None (CUDA when present, on torch's current CUDA device), or what
# :func:`set_default_device` or the environment variable ``SKEMBED_DEVICE`` chose.
_DEFAULT: dict = {}
_CLAIM: dict = {}  # this process's GPU slot: {"group": str, "slot": int, "file": open file}
PER_WORKER = "per-worker"
_LOCK = threading.RLock()  # threads resolving their first device claim one slot between them


def device_for_rank(rank: int, count: int) -> str:
    """The device of the worker of rank ``rank`` when ``count`` CUDA devices are visible.

    >>> device_for_rank(0, 2), device_for_rank(1, 2), device_for_rank(2, 2), device_for_rank(3, 0)
    ('cuda:0', 'cuda:1', 'cuda:0', 'cpu')
    """
    if rank < 0:
        raise ValueError(f"rank must be non-negative, got {rank}.")
    return f"cuda:{rank % count}" if count > 0 else "cpu"


def _claim_slot() -> int:
    """The lowest slot number no other live process of this user on this machine holds.

    Each process claims one lock file for as long as it lives (a lock the system drops when the
    process dies, so a restarted worker takes its predecessor's slot). Processes that see
    different GPUs (``CUDA_VISIBLE_DEVICES``, as dask-cuda sets it per worker) count apart.
    Where file locks are missing (Windows), every process gets slot 0.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if _CLAIM.get("group") == visible:
        return _CLAIM["slot"]
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return 0
    uid = os.getuid() if hasattr(os, "getuid") else 0
    folder = os.path.join(tempfile.gettempdir(), f"skembed-gpu-slots-{uid}")
    os.makedirs(folder, exist_ok=True)
    group = hashlib.sha1(visible.encode()).hexdigest()[:12]
    for slot in range(4096):
        handle = open(os.path.join(folder, f"{group}-{slot}.lock"), "a")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        if _CLAIM:
            _CLAIM["file"].close()
        _CLAIM.update(group=visible, slot=slot, file=handle)
        return slot
    return 0  # pragma: no cover - thousands of processes


def _release_slot() -> None:
    if _CLAIM:
        _CLAIM.pop("file").close()
        _CLAIM.clear()


def set_default_device(device) -> str | None:
    """Choose what ``device="auto"`` (and ``"cuda"``) means in this process; return the choice.

    ``None`` restores the default (``SKEMBED_DEVICE`` when set, else CUDA when present, on
    torch's current CUDA device). A device string (``"cuda:1"``, ``"cpu"``...) is used for
    ``"auto"``, and for ``"cuda"`` when it is a CUDA device; an explicit ``"cuda:<index>"`` is
    never changed. ``"per-worker"`` gives each process on this machine its own GPU: the k-th
    process that asks (counted among live processes that see the same ``CUDA_VISIBLE_DEVICES``)
    gets ``cuda:{k % device_count}``, and the choice is ``None`` where CUDA is missing.
    :class:`skembed.dask.WorkerSetup` calls this in every Dask worker; the environment variable
    ``SKEMBED_DEVICE``, read when an estimator first resolves its device, does the same for
    processes such as joblib's workers. A CUDA choice also becomes torch's current device
    (``torch.cuda.set_device``). Estimators resolve their device once, when they are fitted or
    unpickled.

    Parameters
    ----------
    device : None, "per-worker" or a device string ("cpu", "cuda:1"...)

    Returns
    -------
    str or None
        The device ``"auto"`` now means, or None for the default.

    Examples
    --------
    >>> import skembed
    >>> skembed.set_default_device("cpu")
    'cpu'
    >>> skembed.TransformerEmbeddings("all-MiniLM-L6-v2").fit().device_
    'cpu'
    >>> skembed.set_default_device(None)  # back to the default
    """
    with _LOCK:
        if device is None:
            _DEFAULT.clear()
            _release_slot()
            return None
        if device == PER_WORKER:
            chosen = None
            if torch.cuda.is_available():
                chosen = device_for_rank(_claim_slot(), torch.cuda.device_count())
        else:
            chosen = check_device(device)
            _release_slot()
        _DEFAULT["device"] = None if chosen == "auto" else chosen
        dev = torch.device(chosen) if chosen not in (None, "auto") else None
        if dev is not None and dev.type == "cuda" and dev.index is not None:
            if torch.cuda.is_available() and dev.index < torch.cuda.device_count():
                # Work that names no device (pinned host copies, streams) goes there too,
                # so this process makes no CUDA context on another card.
                torch.cuda.set_device(dev.index)
        return _DEFAULT["device"]


def _default_device() -> str | None:
    if "device" in _DEFAULT:
        return _DEFAULT["device"]
    with _LOCK:
        if "device" in _DEFAULT:
            return _DEFAULT["device"]
        value = os.environ.get("SKEMBED_DEVICE", "").strip()
        if value not in ("", PER_WORKER) and not _DEVICE_RE.match(value):
            raise ValueError(
                f"The environment variable SKEMBED_DEVICE={value!r} is not valid; choose "
                f"'{PER_WORKER}', 'auto', 'cpu', 'cuda', 'cuda:<index>' or 'mps'."
            )
        set_default_device(value or None)
        _DEFAULT.setdefault("device", None)
        return _DEFAULT["device"]


def resolve_device(device) -> torch.device:
    """The torch device for a ``device`` parameter; a CUDA device always with its index.

    ``"auto"`` picks the process default (:func:`set_default_device`) or else CUDA when present;
    ``"cuda"`` is the default's CUDA device, or else torch's current one, as ``cuda:<index>``
    (model, state and shared-file keys name the card, and tensors made later stay on it).
    A CUDA device asked for on a machine without one (for instance a pipeline pickled on a GPU
    machine and loaded on a laptop) falls back to the CPU with a warning, and ``"cuda:<index>"``
    beyond the visible devices (a laptop with one GPU, a worker restricted by
    ``CUDA_VISIBLE_DEVICES``) to the default CUDA device, with a warning, so fitted pipelines
    stay usable everywhere.
    """
    device = check_device(device)
    default = _default_device()
    if device == "auto":
        device = default or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            warnings.warn(
                f"device={device!r} but CUDA is not available on this machine; using the CPU.",
                RuntimeWarning,
                stacklevel=3,
            )
            return torch.device("cpu")
        count = torch.cuda.device_count()
        own = torch.device(default) if default is not None else None
        if own is None or own.type != "cuda" or own.index is None or own.index >= count:
            own = torch.device("cuda", torch.cuda.current_device())
        check_cuda_usable(own)
        note_cuda_use()
        if dev.index is None:
            return own
        if dev.index >= count:
            warnings.warn(
                f"device={device!r} but this process sees {count} CUDA device(s) "
                f"(cuda:0 .. cuda:{count - 1}); using {str(own)!r}.",
                RuntimeWarning,
                stacklevel=3,
            )
            return own
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        warnings.warn("MPS is not available; using the CPU.", RuntimeWarning, stacklevel=3)
        return torch.device("cpu")
    return dev


# Fork after CUDA: a child forked from a process that used CUDA cannot use CUDA (torch fails
# with "Cannot re-initialize CUDA in forked subprocess"), and the CUDA tensors of the caches it
# inherited are dead. The first CUDA use registers a hook that empties them in such a child and
# marks it, so that it refuses CUDA with a message naming the start methods that work.
_CUDA: dict = {"used": False, "hooked": False, "forked_after_use": False}


def note_cuda_use() -> None:
    """Record that this process uses CUDA (a model or forward pass on a CUDA device)."""
    if not _CUDA["used"]:
        _CUDA["used"] = True
        if not _CUDA["hooked"] and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _CUDA["hooked"] = True


def _after_fork_in_child() -> None:
    if not _CUDA["used"]:
        return
    _CUDA["forked_after_use"] = True
    from .cache import drop_after_fork  # deferred: the cache imports torch models lazily

    drop_after_fork()


def check_cuda_usable(device: torch.device) -> None:
    """Refuse CUDA in a process forked after its parent used CUDA, with what to do instead."""
    if device.type == "cuda" and _CUDA["forked_after_use"]:
        raise RuntimeError(
            f"device {str(device)!r} cannot be used in this process: it was forked from a "
            "process that had already used CUDA, and CUDA does not survive a fork. Start "
            "workers with joblib's default 'loky' backend, multiprocessing's 'spawn' or "
            "'forkserver' start method, or Dask, not with 'fork'; or use device='cpu' in them."
        )


@contextlib.contextmanager
def forward_context(device: torch.device, precision: str):
    """The context of skembed's forward passes on ``device``: autocast to ``precision`` (none
    for float32) and, on CUDA, float32 that means float32
    (:func:`~skembed._precision.exact_float32`) for what runs in float32: the whole pass for
    ``"float32"``, the layers autocast keeps in float32 and the recurrent layers
    :func:`~skembed._precision.recurrent_autocast` takes out of it otherwise."""
    check_cuda_usable(device)
    check_cuda_precision(device, precision)
    with contextlib.ExitStack() as stack:
        if device.type == "cuda":
            note_cuda_use()
            stack.enter_context(exact_float32())
        stack.enter_context(autocast(device, precision))
        yield
