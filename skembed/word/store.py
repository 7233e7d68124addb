"""The binary cache of word-vector files: a memory-mapped ``.npy`` array plus the vocabulary.

A source file is converted once, chunk by chunk, into ``$SKEMBED_HOME/word-vectors/<name>-<hash>/``:

* ``vectors.npy``: float32 ``(n_words, dim)``, opened with ``mmap_mode="r"`` so a second load
  reads only the vocabulary and the pages of the rows that are looked up;
* ``vocab.json``: the words, in row order;
* ``meta.json``: the source's path, size and modification time (and those of its companion
  files). A source whose size or time changed is converted again.

Conversion streams rows to disk, so it needs memory for the vocabulary and one chunk of rows,
never for the whole file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np

from ..resolve import file_signature, skembed_home
from .formats import companions, open_vectors

CACHE_VERSION = 1
_HEADER_BYTES = 128  # fixed-size .npy header, rewritten in place once the row count is known


def cache_root() -> Path:
    """Folder of converted word-vector files: ``$SKEMBED_HOME/word-vectors``."""
    return skembed_home() / "word-vectors"


def signature(path: Path) -> list:
    """What identifies a source's content cheaply: ``[path, size, mtime_ns]`` of each of its files."""
    return [list(entry) for entry in file_signature(path, *companions(path))]


def cache_dir(path: Path) -> Path:
    """The cache folder of one source path (one per path: a changed file replaces its entry)."""
    digest = hashlib.sha1(str(path).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.name)[:60]
    return cache_root() / f"{stem}-{digest}"


def _npy_header(rows: int, dim: int) -> bytes:
    """A version 1.0 ``.npy`` header for a C-ordered float32 array, padded to a fixed size."""
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    text = text.ljust(_HEADER_BYTES - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode("latin1")


def convert(path: Path, dest: Path) -> None:
    """Convert ``path`` into a cache folder ``dest``, streaming rows to disk."""
    source = open_vectors(path)
    sig = signature(path)
    words: list[str] = []
    with open(dest / "vectors.npy", "wb") as out:
        out.write(_npy_header(0, source.dim))
        for chunk_words, block in source.chunks:
            out.write(np.ascontiguousarray(block, dtype="<f4").tobytes())
            words.extend(chunk_words)
        out.seek(0)
        out.write(_npy_header(len(words), source.dim))
    with open(dest / "vocab.json", "w", encoding="utf-8") as f:
        json.dump(words, f, ensure_ascii=False)
    meta = {
        "version": CACHE_VERSION,
        "format": source.format,
        "shape": [len(words), source.dim],
        "source": sig,
    }
    # meta.json is written last: its presence marks a complete conversion.
    (dest / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def _valid(dest: Path, sig: list) -> bool:
    try:
        meta = json.loads((dest / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("version") == CACHE_VERSION and meta.get("source") == sig


def ensure_cached(path: Path) -> Path:
    """The cache folder of ``path``, converting the file first when needed.

    Parameters
    ----------
    path : Path
        A word-vector file in any supported format (see :mod:`skembed.word.formats`).

    Returns
    -------
    Path
        A folder holding ``vectors.npy``, ``vocab.json`` and ``meta.json``.
    """
    path = Path(path).resolve()
    dest = cache_dir(path)
    sig = signature(path)
    if _valid(dest, sig):
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f"{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
    except OSError as exc:
        raise OSError(
            f"Cannot write the word-vector cache in {dest.parent} ({exc}); set SKEMBED_HOME "
            "to a writable folder."
        ) from exc
    try:
        convert(path, tmp)
        if _valid(dest, sig):  # another process finished the same conversion meanwhile
            return dest
        if dest.exists():  # a stale conversion of an older version of the file
            stale = dest.with_name(f"{dest.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(dest, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, dest)
        except OSError:  # another process put its conversion there first
            if not _valid(dest, sig):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def load_cached(dest: Path) -> tuple[list[str], np.ndarray, dict]:
    """Words, the memory-mapped vectors and the metadata of a cache folder."""
    meta = json.loads((dest / "meta.json").read_text(encoding="utf-8"))
    with open(dest / "vocab.json", encoding="utf-8") as f:
        words = json.load(f)
    vectors = np.load(dest / "vectors.npy", mmap_mode="r", allow_pickle=False)
    if vectors.shape != (len(words), meta["shape"][1]):
        raise ValueError(f"The word-vector cache {dest} is damaged; delete the folder.")
    return words, vectors, meta
