"""Readers of word-vector files, streamed in chunks of rows.

Formats, detected from the file's first bytes (gzip-compressed files are read as they are):

* ``word2vec-text``: a ``"count dim"`` header line, then ``word v1 ... vdim`` lines (word2vec
  text files, fastText ``.vec`` files).
* ``glove``: the same lines without a header (GloVe ``.txt`` files). Words may contain spaces
  (GloVe 840B has such words): a line's last ``dim`` fields are the vector.
* ``word2vec-binary``: a ``"count dim"`` header line, then for each word its UTF-8 bytes, a
  space and ``dim`` little-endian float32 values (word2vec ``.bin`` files).
* ``gensim``: a file saved by gensim's ``KeyedVectors.save`` (Flair's word embeddings), with its
  large arrays in ``<file>.vectors.npy`` beside it. Read with a restricted unpickler that only
  rebuilds gensim's vocabulary classes and numpy arrays, so the file cannot run code.

Every reader yields ``(words, vectors)`` chunks, ``vectors`` a float32 ``(n, dim)`` array, so a
file is never held in memory whole.
"""

from __future__ import annotations

import copyreg
import gzip
import importlib
import pickle
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._unpickle import AllowListUnpickler

CHUNK_ROWS = 8192
FASTTEXT_MAGIC = 793712314  # first int32 of fastText's full-model ``.bin`` files
_READ = 1 << 22


@dataclass
class VectorFile:
    """A word-vector file opened for streaming: its format, vector size and chunk iterator."""

    path: Path
    format: str
    dim: int
    chunks: Iterator[tuple[list[str], np.ndarray]]
    companions: tuple[Path, ...] = ()


def _open(path: Path):
    """Binary file object; gzip files are decompressed on the fly."""
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _parse_header(line: bytes) -> tuple[int, int] | None:
    parts = line.split()
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def _decode(word: bytes) -> str:
    # Some published files (GoogleNews word2vec) hold a few invalid UTF-8 byte sequences.
    return word.decode("utf-8", errors="replace")


def detect_format(path: Path) -> str:
    """Name the format of a word-vector file from its first bytes (see the module docstring)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:1] == b"\x80":
        return "gensim"
    if len(head) == 4 and int.from_bytes(head, "little") == FASTTEXT_MAGIC:
        raise ValueError(
            f"{path} is a fastText model (.bin), not a vector file; use the .vec file that "
            "fastText publishes with it (or save one with fasttext's get_words/get_word_vector)."
        )
    with _open(path) as f:
        first = f.readline(1 << 16)
        header = _parse_header(first)
        if header is None:
            return "glove"
        # After a header, a text file has `dim` numeric fields on its next line.
        sample = f.read(header[1] * 32 + 1024)
    line = sample.split(b"\n", 1)[0]
    try:
        fields = line.rstrip().rsplit(None, header[1])
        if len(fields) == header[1] + 1:
            [float(v) for v in fields[1:]]
            return "word2vec-text"
    except ValueError:
        pass
    return "word2vec-binary"


def _bad_line(path: Path, number: int, dim: int, line: bytes) -> ValueError:
    return ValueError(
        f"{path}, line {number}: expected a word and {dim} numbers, got "
        f"{_decode(line[:80])!r}{'...' if len(line) > 80 else ''}. Is this a word-vector file?"
    )


def _parse_rows(path: Path, rows: list[tuple[int, bytes]], dim: int) -> np.ndarray:
    """Parse the numeric parts of text rows into a float32 ``(len(rows), dim)`` array."""
    text = b" ".join(r for _, r in rows).decode("ascii", errors="replace")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # partial parse: checked below
        flat = np.fromstring(text, dtype=np.float32, sep=" ")
    if flat.size == len(rows) * dim:
        return flat.reshape(len(rows), dim)
    for number, rest in rows:  # find the offending line for the error message
        try:
            values = [float(v) for v in rest.split()]
        except ValueError:
            values = []
        if len(values) != dim:
            raise _bad_line(path, number, dim, rest)
    raise ValueError(f"{path}: could not parse the vectors")  # pragma: no cover


def _trailing_numbers(fields: list[bytes]) -> int:
    count = 0
    for field in reversed(fields[1:]):  # the first field is always (part of) the word
        try:
            float(field)
        except ValueError:
            break
        count += 1
    return count


def _glove_dim(path: Path, sample_lines: int = 20) -> int:
    """Vector size of a headerless file: the most common count of trailing numbers on its
    first lines (counting from the right lets a word contain spaces or be a number)."""
    dims = []
    with _open(path) as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if fields:
                dims.append(_trailing_numbers(fields))
                if dims[-1] == 0:
                    raise _bad_line(path, number, 1, line.rstrip())
            if len(dims) == sample_lines:
                break
    if not dims:
        raise _bad_line(path, 1, 1, b"")
    return max(set(dims), key=lambda d: (dims.count(d), d))


def iter_text(path: Path, chunk_rows: int | None = None) -> VectorFile:
    """Stream a word2vec text, fastText ``.vec`` or GloVe file."""
    chunk_rows = chunk_rows or CHUNK_ROWS
    f = _open(path)
    first = f.readline()
    header = _parse_header(first)
    if header is None:
        f.close()
        f = _open(path)
        dim, expected, number = _glove_dim(path), None, 0
    else:
        expected, dim = header
        number = 1

    def chunks():
        nonlocal number
        words: list[str] = []
        rows: list[tuple[int, bytes]] = []
        seen = 0
        with f:
            for line in f:
                number += 1
                line = line.rstrip()
                if not line:
                    continue
                word, _, rest = line.partition(b" ")
                if rest.count(b" ") != dim - 1:
                    # A word with spaces, or other separators: the last `dim` fields are the vector.
                    fields = line.rsplit(None, dim)
                    if len(fields) != dim + 1:
                        raise _bad_line(path, number, dim, line)
                    word, rest = fields[0], b" ".join(fields[1:])
                words.append(_decode(word))
                rows.append((number, rest))
                if len(rows) == chunk_rows:
                    yield words, _parse_rows(path, rows, dim)
                    seen += len(rows)
                    words, rows = [], []
            if rows:
                yield words, _parse_rows(path, rows, dim)
                seen += len(rows)
        if expected is not None and seen != expected:
            raise ValueError(
                f"{path}: the header announces {expected} vectors but the file holds {seen}; "
                "the file may be truncated or its header wrong."
            )

    fmt = "glove" if header is None else "word2vec-text"
    return VectorFile(path, fmt, dim, chunks())


def iter_binary(path: Path, chunk_rows: int | None = None) -> VectorFile:
    """Stream a word2vec binary file."""
    chunk_rows = chunk_rows or CHUNK_ROWS
    f = _open(path)
    header = _parse_header(f.readline())
    if header is None:
        f.close()
        raise ValueError(f"{path}: a word2vec binary file starts with a 'count dim' line.")
    count, dim = header
    width = 4 * dim

    def chunks():
        buf, pos, done = b"", 0, 0
        with f:
            while done < count:
                n = min(chunk_rows, count - done)
                words: list[str] = []
                vectors = bytearray()
                for _ in range(n):
                    space = buf.find(b" ", pos)
                    while space < 0 or len(buf) < space + 1 + width:
                        more = f.read(_READ)
                        if not more:
                            raise ValueError(
                                f"{path}: the file ends after {done + len(words)} of the "
                                f"{count} vectors its header announces; it may be truncated."
                            )
                        buf, pos = buf[pos:] + more, 0
                        space = buf.find(b" ", pos)
                    words.append(_decode(buf[pos:space].lstrip(b"\n")))
                    vectors += buf[space + 1 : space + 1 + width]
                    pos = space + 1 + width
                done += n
                yield words, np.frombuffer(bytes(vectors), dtype="<f4").reshape(n, dim)

    return VectorFile(path, "word2vec-binary", dim, chunks())


# -- gensim KeyedVectors -------------------------------------------------------------------
_GENSIM_CLASSES = {
    ("gensim.models.keyedvectors", "KeyedVectors"),
    ("gensim.models.keyedvectors", "Word2VecKeyedVectors"),
    ("gensim.models.keyedvectors", "EuclideanKeyedVectors"),
    ("gensim.models.keyedvectors", "Vocab"),
    ("gensim.models.keyedvectors", "CompatVocab"),
    ("gensim.models.word2vec", "Vocab"),
}
_NUMPY_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype")}
_BUILTINS = {("copyreg", "_reconstructor"), ("builtins", "object")}


def _numpy_global(module: str, name: str):
    # numpy 2 moved numpy.core to numpy._core; files pickled under either name load.
    for mod in (module.replace("numpy.core", "numpy._core"), module):
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy has no {module}.{name}")


class _KeyedVectorsUnpickler(AllowListUnpickler):
    """Rebuilds only gensim's KeyedVectors / Vocab objects, numpy arrays and plain containers.

    The file gets stand-ins for these globals that it cannot change (see
    :mod:`skembed._unpickle`); a file that tries raises ``pickle.UnpicklingError``.
    """

    def resolve(self, module, name):
        if (module, name) in _GENSIM_CLASSES:
            return getattr(importlib.import_module(module), name)
        if (module, name) in _NUMPY_GLOBALS:
            return _numpy_global(module, name)
        if (module, name) in _BUILTINS:
            return copyreg._reconstructor if name == "_reconstructor" else object
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a gensim KeyedVectors file holds no such object."
        )


def _require_gensim(path: Path) -> None:
    try:
        import gensim  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"{path} is a gensim KeyedVectors file (the format of Flair's word embeddings); "
            "reading it needs gensim: pip install 'skembed[gensim]' (or pip install gensim). "
            "Alternatively convert it to a word2vec text or binary file elsewhere."
        ) from exc


def _gensim_array(path: Path, state: dict, names: tuple[str, ...]) -> tuple[np.ndarray, tuple]:
    """The vectors array: inline in the pickle or in ``<path>.<name>.npy`` (memory-mapped)."""
    for name in names:
        value = state.get(name)
        if isinstance(value, np.ndarray):
            return value, ()
    for name in names:
        side = path.with_name(f"{path.name}.{name}.npy")
        if side.is_file():
            try:
                return np.load(side, mmap_mode="r", allow_pickle=False), (side,)
            except ValueError as exc:  # object arrays are pickles: never loaded
                raise ValueError(
                    f"{side} is not a plain numeric array ({exc}); refusing to load it, since "
                    "an array of Python objects is a pickle that may run code."
                ) from exc
    raise FileNotFoundError(
        f"{path}: the vectors of this gensim file are stored beside it, but "
        f"{path.name}.vectors.npy was not found in {path.parent}. Keep both files together."
    )


def iter_gensim(path: Path, chunk_rows: int | None = None) -> VectorFile:
    """Stream a gensim ``KeyedVectors.save`` file (gensim 3 or 4 layout)."""
    chunk_rows = chunk_rows or CHUNK_ROWS
    _require_gensim(path)
    with open(path, "rb") as f:
        try:
            obj = _KeyedVectorsUnpickler(f, encoding="latin1").load()
        except Exception as exc:  # refused, truncated, or not such a file
            raise ValueError(f"{path} is not a readable gensim KeyedVectors file: {exc}") from exc
    state = getattr(obj, "__dict__", None)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a gensim KeyedVectors object.")
    vectors, companions = _gensim_array(path, state, ("vectors", "syn0"))
    words = state.get("index_to_key") or state.get("index2word") or state.get("index2entity")
    if words is None and isinstance(state.get("vocab"), dict):  # gensim 3: word -> Vocab(index)
        words = [None] * len(state["vocab"])
        for word, item in state["vocab"].items():
            words[item.index] = word
    if words is None or len(words) != len(vectors) or vectors.ndim != 2:
        raise ValueError(f"{path}: the vocabulary and the vectors of this gensim file disagree.")
    words = [str(w) for w in words]

    def chunks():
        for start in range(0, len(words), chunk_rows):
            block = np.asarray(vectors[start : start + chunk_rows], dtype=np.float32)
            yield words[start : start + chunk_rows], block

    return VectorFile(path, "gensim", int(vectors.shape[1]), chunks(), companions)


def companions(path: Path) -> tuple[Path, ...]:
    """Files beside ``path`` that belong to it (gensim's separately stored arrays)."""
    return tuple(
        p
        for p in (path.with_name(f"{path.name}.{n}.npy") for n in ("vectors", "syn0"))
        if p.is_file()
    )


def open_vectors(path: Path, chunk_rows: int | None = None) -> VectorFile:
    """Open any supported word-vector file for streaming."""
    fmt = detect_format(path)
    if fmt == "gensim":
        return iter_gensim(path, chunk_rows)
    if fmt == "word2vec-binary":
        return iter_binary(path, chunk_rows)
    return iter_text(path, chunk_rows)
