"""Transformer-XL word vocabularies (``vocab.pkl`` / ``vocab.bin``) read without running their code.

Hugging Face saved a Transformer-XL tokenizer by pickling its whole ``__dict__``: the word list
and index (``idx2sym``, ``sym2idx``, ``unk_idx``, ``lower_case``), but also Moses tokenizer
objects, compiled regular expressions, a ``Trie`` and ``AddedToken`` objects. Only the word index
is needed here. The unpickler below rebuilds plain data (dicts, lists, ``OrderedDict``,
``Counter``) and turns the known tokenizer objects into inert records that keep their state and
never run any of their code; every other global in the file is refused. Old ``vocab.bin`` files
(``torch.save`` of the same dict) are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import collections
import functools
import json
import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch

from .._unpickle import AllowListUnpickler

# Real objects a vocabulary may contain: plain containers only.
_DATA_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "Counter"): collections.Counter,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}
# Tokenizer machinery pickled alongside the vocabulary: kept as inert records, never imported.
_INERT_CLASSES = {
    ("sacremoses.normalize", "MosesPunctNormalizer"),
    ("sacremoses.tokenize", "MosesTokenizer"),
    ("sacremoses.tokenize", "MosesDetokenizer"),
    ("transformers.tokenization_utils", "Trie"),
    ("transformers.tokenization_utils_base", "AddedToken"),
    ("tokenizers", "AddedToken"),
}


class UnsafeVocabularyError(pickle.UnpicklingError):
    """A vocabulary file refers to a global that a Transformer-XL vocabulary never needs."""


class _Inert:
    """Stand-in for a pickled tokenizer object: records its arguments and state, nothing else."""

    qualname = "?"

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.args, obj.state = args, None
        return obj

    def __setstate__(self, state):
        self.state = state

    def __repr__(self) -> str:
        return f"<inert {self.qualname}>"


def _inert_pattern(pattern, flags=0):
    """Stand-in for ``re._compile``: the pattern is kept as text and never compiled."""
    record = _Inert()
    record.args = (pattern, flags)
    return record


@functools.cache
def _inert_class(module: str, name: str) -> type:
    return type(name, (_Inert,), {"qualname": f"{module}.{name}"})


class _VocabUnpickler(AllowListUnpickler):
    """Resolves plain containers and inert records; refuses every other global.

    The file gets stand-ins for them that it cannot change (see :mod:`skembed._unpickle`): a
    file that tries raises :class:`UnsafeVocabularyError`.
    """

    def __init__(self, file, path):
        super().__init__(file, encoding="utf-8")
        self.path = path

    def refused_change(self, message: str) -> Exception:
        return UnsafeVocabularyError(f"{self.path}: {message}")

    def resolve(self, module, name):
        if (module, name) in _DATA_GLOBALS:
            return _DATA_GLOBALS[(module, name)]
        if (module, name) in _INERT_CLASSES:
            return _inert_class(module, name)
        if (module, name) == ("re", "_compile"):
            return _inert_pattern
        allowed = sorted(f"{m}.{n}" for m, n in [*_DATA_GLOBALS, *_INERT_CLASSES]) + ["re._compile"]
        raise UnsafeVocabularyError(
            f"{self.path}: refusing to load '{module}.{name}'. A Transformer-XL vocabulary only "
            f"needs {', '.join(allowed)}; this file may run code when unpickled, so it is not "
            "loaded. Use the vocab.pkl written by transformers' TransfoXLTokenizer."
        )

    def persistent_load(self, pid):
        raise UnsafeVocabularyError(
            f"{self.path}: unexpected persistent id {pid!r} in a vocabulary."
        )


def _read_dict(path: Path) -> dict:
    """The pickled vocabulary dict of ``path`` (a plain pickle or a ``torch.save`` file)."""
    if zipfile.is_zipfile(path):
        return _torch_load(path)
    try:
        with open(path, "rb") as f:
            data = _VocabUnpickler(f, path).load()
    except UnsafeVocabularyError:
        raise
    except Exception as exc:
        raise ValueError(f"{path} is not a readable Transformer-XL vocabulary: {exc}") from exc
    if isinstance(data, int):  # the magic number that opens a legacy torch.save file
        return _torch_load(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a pickled dict, found {type(data).__name__}.")
    return data


def _torch_load(path: Path) -> dict:
    try:
        with torch.serialization.safe_globals([collections.Counter]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeVocabularyError(
            f"{path}: refused by torch.load(weights_only=True), which allows plain data only: {exc}"
        ) from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a saved dict, found {type(data).__name__}.")
    return data


class Vocabulary:
    """A Transformer-XL word vocabulary: word -> id, unknown words -> ``<unk>``.

    Parameters
    ----------
    symbols : sequence of str
        The words, in id order.
    unk_id : int or None
        Id of unknown words; None when the vocabulary has no ``<unk>``.
    lower_case : bool
        Lower-case words before looking them up (as the model's tokenizer did).
    added : dict, optional
        Extra ``word -> id`` entries (tokens added to the tokenizer after training).

    Examples
    --------
    >>> v = Vocabulary(["<unk>", "<eos>", "the"], unk_id=0)
    >>> v.ids(["the", "zebra", "<eos>"])
    [2, 0, 1]
    """

    def __init__(self, symbols: Sequence[str], unk_id, lower_case=False, added=None):
        self.symbols = list(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.index.update(added or {})
        self.unk_id = unk_id
        self.lower_case = bool(lower_case)

    def __len__(self) -> int:
        return len(self.index)

    def limit(self, n: int) -> None:
        """Forget words whose id has no embedding in a model of ``n`` words (they become unknown).

        transformers' tokenizer adds ``<formula>`` after the trained words, past the end of
        some models' embedding table.
        """
        self.index = {w: i for w, i in self.index.items() if i < n}
        if self.unk_id is not None and self.unk_id >= n:
            self.unk_id = None

    def ids(self, words: Sequence[str], doc_index: int | None = None) -> list[int]:
        """The id of every word (``unk_id`` for unknown words)."""
        if self.lower_case:
            words = [w.lower() for w in words]
        index, unk = self.index, self.unk_id
        out = [index.get(w, unk) for w in words]
        if unk is None and None in out:
            word = words[out.index(None)]
            where = f" in document {doc_index}" if doc_index is not None else ""
            raise ValueError(
                f"Word {word!r}{where} is not in the Transformer-XL vocabulary, which has no "
                "<unk> symbol to stand for unknown words; remove or replace such words."
            )
        return out

    @classmethod
    def from_dict(cls, data: dict, source="vocabulary") -> Vocabulary:
        """Build from the dict a ``TransfoXLTokenizer`` pickled (``idx2sym``, ``sym2idx``...)."""
        symbols = data.get("idx2sym")
        if symbols is None and "sym2idx" in data:
            symbols = [s for s, _ in sorted(data["sym2idx"].items(), key=lambda kv: kv[1])]
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            raise ValueError(f"{source}: no word list (idx2sym or sym2idx) found.")
        unk = data.get("unk_idx")
        if unk is None:
            unk = next((i for i, s in enumerate(symbols) if s in ("<unk>", "<UNK>")), None)
        added = data.get("_added_tokens_encoder") or data.get("added_tokens_encoder") or {}
        added = {k: int(v) for k, v in added.items() if isinstance(k, str) and k not in symbols}
        return cls(symbols, unk, bool(data.get("lower_case", False)), added)


def load_vocabulary(folder: str | Path) -> Vocabulary:
    """Read the vocabulary of a Transformer-XL model folder (``vocab.pkl``, else ``vocab.bin``).

    Tokens listed in ``added_tokens.json`` are added, as the Hugging Face tokenizer does.
    """
    folder = Path(folder)
    for name in ("vocab.pkl", "vocab.bin"):
        path = folder / name
        if path.is_file():
            break
    else:
        raise FileNotFoundError(
            f"{folder} has no Transformer-XL vocabulary: expected vocab.pkl or vocab.bin "
            "(written by TransfoXLTokenizer.save_pretrained)."
        )
    vocab = Vocabulary.from_dict(_read_dict(path), source=str(path))
    added = folder / "added_tokens.json"
    if added.is_file():
        extra = json.loads(added.read_text(encoding="utf-8"))
        vocab.index.update({k: int(v) for k, v in extra.items() if k not in vocab.index})
    return vocab
