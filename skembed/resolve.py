"""Model names to local files, with errors that say where we looked and how to get the files.

Resolution order for every family: an existing local path; the skembed cache
(``$SKEMBED_HOME``, default ``~/.cache/skembed``); the caches of tools users already have
(Hugging Face, Flair); a download only when allowed. Downloads are off when ``SKEMBED_OFFLINE``
or ``HF_HUB_OFFLINE`` is set to a true value: then no network call is attempted.

When downloads are allowed but fail (no internet, a name the server does not know), the error is
still :class:`ModelNotFoundError`, raised after one attempt that gives up within
:data:`NETWORK_TIMEOUT` seconds without a reply; it names the model, every place looked, how to
get the files, the reason in one line, and close names found locally ("did you mean ...?").
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from collections.abc import Iterable, Sequence
from difflib import get_close_matches
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}

#: Seconds a download waits for the server (to connect, and for each read) before it gives up.
#: There is one attempt, never a retry loop: a machine without internet fails at once.
NETWORK_TIMEOUT = 15


class ModelNotFoundError(FileNotFoundError):
    """A model name could not be resolved to local files (and could not be downloaded).

    When a download was tried and failed, ``download_error`` holds that error (it is not
    chained to this one, so that the traceback stays short; the message gives its reason).
    """

    download_error: BaseException | None = None


class FileSignature(tuple):
    """``(path, size, mtime_ns)`` of each file of a model: what changes when the files change,
    found without reading them. Part of every model key (and so of every state key), so that
    files rewritten in place are a new model, loaded afresh, and their states new states.

    Examples
    --------
    >>> FileSignature([("/m/a.bin", 10, 1), ("/m/b.json", 2, 1)]).paths
    ('/m/a.bin', '/m/b.json')
    """

    __slots__ = ()

    @property
    def paths(self) -> tuple[str, ...]:
        """The files, whatever their content: equal for two versions of the same files."""
        return tuple(entry[0] for entry in self)


def file_signature(*paths: str | os.PathLike) -> FileSignature:
    """The :class:`FileSignature` of model files; a folder stands for the files directly in it,
    in name order (subfolders are not looked into). One ``stat`` per file: nothing is read, so
    this is cheap enough for every ``transform``."""
    out = []
    for path in map(os.fspath, paths):
        if not os.path.isdir(path):
            st = os.stat(path)
            out.append((path, st.st_size, st.st_mtime_ns))
            continue
        with os.scandir(path) as entries:
            files = sorted(entry.path for entry in entries if entry.is_file())
        for file in files:
            try:
                st = os.stat(file)
            except FileNotFoundError:  # removed meanwhile (a folder being rewritten)
                continue
            out.append((file, st.st_size, st.st_mtime_ns))
    return FileSignature(out)


def skembed_home() -> Path:
    """The skembed cache folder: ``$SKEMBED_HOME`` or ``~/.cache/skembed``."""
    return Path(os.environ.get("SKEMBED_HOME", Path.home() / ".cache" / "skembed")).expanduser()


def offline() -> bool:
    """True when downloads are disabled (``SKEMBED_OFFLINE`` or ``HF_HUB_OFFLINE``)."""
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE
        for var in ("SKEMBED_OFFLINE", "HF_HUB_OFFLINE")
    )


def flair_cache() -> Path:
    """Flair's model cache: ``$FLAIR_CACHE_ROOT/embeddings`` or ``~/.flair/embeddings``."""
    root = os.environ.get("FLAIR_CACHE_ROOT")
    return (Path(root) if root else Path.home() / ".flair").expanduser() / "embeddings"


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The reason of an error in one line: the first line of its message, then its type.

    Examples
    --------
    >>> one_line(OSError("[Errno -2] Name or service not known\\nPlease check ..."))
    '[Errno -2] Name or service not known (OSError)'
    """
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else ""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{text} ({type(exc).__name__})" if text else type(exc).__name__


def close_names(
    name: str, candidates: Iterable[str], n: int = 3, cutoff: float = 0.75
) -> list[str]:
    """Names among ``candidates`` close to ``name`` (case-insensitive; an ``org/name`` also
    matches by its last part), best first.

    Examples
    --------
    >>> close_names("all-MiniLM-L6-v3", ["sentence-transformers/all-MiniLM-L6-v2", "gpt2"])
    ['sentence-transformers/all-MiniLM-L6-v2']
    """
    key = str(name).strip().lower()
    by_key: dict[str, list[str]] = {}
    for cand in dict.fromkeys(candidates):
        low = cand.lower()
        for k in {low, low.rsplit("/", 1)[-1]}:
            by_key.setdefault(k, []).append(cand)
    out: list[str] = []
    for k in get_close_matches(key, by_key, n=n, cutoff=cutoff):
        out += [c for c in by_key[k] if c not in out and c.lower() != key]
    return out[:n]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``"Did you mean 'x'?"`` for the names of ``candidates`` close to ``name``, or ``""``."""
    close = close_names(name, candidates)
    return f"Did you mean {' or '.join(map(repr, close))}?" if close else ""


def not_found(
    kind: str,
    name: str,
    looked: Sequence,
    urls: Sequence[str] = (),
    hint: str = "",
    *,
    failed: BaseException | None = None,
    candidates: Iterable[str] = (),
) -> ModelNotFoundError:
    """Build the error for a model that is nowhere: names it, every place looked, and the fix.

    ``failed`` is the error of a download attempt (its reason goes in the message, the error
    itself in ``download_error``; raise the result ``from None``); ``candidates`` are names
    seen locally, offered when close to ``name``.
    """
    lines = [f"Could not find {kind} {name!r}. Looked in:"]
    lines += [f"  - {p}" for p in looked]
    if failed is not None:
        lines.append(f"The download failed: {one_line(failed)}")
    suggestion = did_you_mean(name, candidates)
    if suggestion:
        lines.append(suggestion)
    if urls:
        lines.append("Download it from:")
        lines += [f"  {u}" for u in urls]
        dest = skembed_home()
        lines.append(f"and put the file(s) in {dest} (or pass the local path instead of the name).")
    if offline():
        lines.append("Downloads are disabled (SKEMBED_OFFLINE or HF_HUB_OFFLINE is set).")
    if hint:
        lines.append(hint)
    error = ModelNotFoundError("\n".join(lines))
    error.download_error = failed
    return error


def download(url: str, dest: Path) -> Path:
    """Download ``url`` to ``dest`` atomically (a partial file never takes the final name)."""
    if offline():
        raise ModelNotFoundError(f"Not downloading {url}: offline mode is set.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(url, timeout=NETWORK_TIMEOUT) as resp,
        ):
            shutil.copyfileobj(resp, out)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def find_file(
    kind: str, name: str, filename: str, urls: Sequence[str], extra_dirs: Sequence[Path] = ()
) -> Path:
    """Resolve a single-file model: local path, skembed cache, ``extra_dirs``, then download.

    Parameters
    ----------
    kind : str
        What is looked for, for the error message (e.g. "Flair language model").
    name : str
        The id or path given by the user.
    filename : str
        The file's name in the caches (usually the last segment of its URL).
    urls : sequence of str
        Where it can be downloaded from (the first is used).
    extra_dirs : sequence of Path
        Other caches to look in, e.g. :func:`flair_cache`.
    """
    path = Path(name).expanduser()
    if path.is_file():
        return path
    looked = [path]
    for folder in (skembed_home(), *extra_dirs):
        candidate = Path(folder) / filename
        looked.append(candidate)
        if candidate.is_file():
            return candidate
    if urls and not offline():
        try:
            return download(urls[0], skembed_home() / filename)
        except Exception as exc:  # network errors become the not-found error below
            raise not_found(kind, name, looked, urls, failed=exc) from None
    raise not_found(kind, name, looked, urls)
