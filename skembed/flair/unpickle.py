"""Read and write Flair's ``.pt`` files without Flair and without unrestricted unpickling.

A Flair language-model file is a ``torch.save`` of a plain dict that holds tensors and one
pickled ``flair.data.Dictionary``. Flair writes it with pickle protocol 4, which torch's own
``weights_only`` loader does not read, so skembed reads it with :class:`RestrictedUnpickler`:
the only globals it resolves are the handful such a file needs, each mapped to something
harmless:

* ``torch._utils._rebuild_tensor_v2`` (and its older/parameter variants): tensors;
  storage types are resolved by torch itself to inert markers;
* ``collections.OrderedDict`` (the state dict) and ``_codecs.encode`` (bytes in protocol 2,
  latin-1 only);
* ``flair.data.Dictionary`` -> :class:`CharDictionary`, a plain class keeping two checked fields;
* ``collections.defaultdict`` -> a function returning an empty dict, and ``builtins.int`` (its
  default factory): Flair stores a lookup cache of that type in dictionaries that were used
  before being saved; skembed drops the cache.

Any other global (``os.system``, a Flair class, ...) stops loading with
:class:`UnsafeModelFileError` the moment it is met, before anything from the file is called.
The allowed globals reach the file as stand-ins that it cannot change (``BUILD``, ``SETITEM``,
``APPENDS``... on one are refused with :class:`UnsafeModelFileError` too): see
:mod:`skembed._unpickle`.
"""

from __future__ import annotations

import io
import pickle
import types
from collections import OrderedDict
from os import PathLike
from pathlib import Path

import numpy as np
import torch

from .._unpickle import AllowListUnpickler


class UnsafeModelFileError(ValueError):
    """A model file refers to code that a Flair language-model file never needs."""


class CharDictionary:
    """The characters of a character LM: ``idx2item`` (UTF-8 bytes) and ``item2idx``.

    Stands in for ``flair.data.Dictionary`` in Flair's files. Index 0 is ``<unk>``: characters
    outside the dictionary map to it.

    Parameters
    ----------
    items : iterable of str
        The entries after ``<unk>``, usually single characters, most frequent first.

    Examples
    --------
    >>> d = CharDictionary("ab ")
    >>> len(d), d.encode("abz").tolist()
    (4, [1, 2, 0])
    """

    def __init__(self, items=()):
        self.idx2item: list[bytes] = [b"<unk>"]
        self.item2idx: dict[bytes, int] = {b"<unk>": 0}
        for item in items:
            key = item.encode("utf-8")
            if key not in self.item2idx:
                self.item2idx[key] = len(self.idx2item)
                self.idx2item.append(key)
        self._build_lookup()

    def __len__(self) -> int:
        return len(self.idx2item)

    def __eq__(self, other) -> bool:
        return isinstance(other, CharDictionary) and self.idx2item == other.idx2item

    __hash__ = None  # mutable container

    @property
    def chars(self) -> list[str]:
        """The entries as strings, in index order."""
        return [b.decode("utf-8", "replace") for b in self.idx2item]

    def _build_lookup(self) -> None:
        # Sorted code points of the single-character entries, for a vectorised lookup.
        pairs = {}
        for key, idx in self.item2idx.items():
            try:
                text = key.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if len(text) == 1:
                pairs[ord(text)] = idx
        cps = np.array(sorted(pairs), dtype=np.int64)
        self._cps = cps
        self._ids = np.array([pairs[c] for c in cps.tolist()], dtype=np.int64)

    def encode(self, text: str) -> np.ndarray:
        """The ids of the characters of ``text``; unknown characters get 0 (``<unk>``)."""
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.int64)
        if len(self._cps) == 0 or len(cps) == 0:
            return np.zeros(len(cps), dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._cps, cps), len(self._cps) - 1)
        return np.where(self._cps[pos] == cps, self._ids[pos], 0)

    # -- pickling in Flair's shape ----------------------------------------------
    def __getstate__(self) -> dict:
        return {
            "item2idx": dict(self.item2idx),
            "idx2item": list(self.idx2item),
            "add_unk": True,
            "multi_label": False,
            "span_labels": False,
        }

    def __setstate__(self, state) -> None:
        # Called by the restricted unpickler with the state of a flair.data.Dictionary:
        # keep the two fields we need, checked, and ignore the rest (flags, lookup caches).
        if not isinstance(state, dict) or not isinstance(state.get("idx2item"), list):
            raise UnsafeModelFileError("The file's character dictionary has no idx2item list.")
        idx2item = state["idx2item"]
        if not all(isinstance(b, bytes) for b in idx2item):
            raise UnsafeModelFileError("The file's character dictionary holds non-bytes items.")
        item2idx = state.get("item2idx")
        if not isinstance(item2idx, dict):
            item2idx = {b: i for i, b in enumerate(idx2item)}
        self.idx2item = list(idx2item)
        self.item2idx = {k: int(v) for k, v in item2idx.items() if isinstance(k, bytes)}
        self._build_lookup()


class _LegacyCharDictionary(CharDictionary):
    """Pickles as a Flair 0.4.x dictionary (only ``item2idx`` and ``idx2item``)."""

    def __getstate__(self) -> dict:
        return {"item2idx": dict(self.item2idx), "idx2item": list(self.idx2item)}


def _empty_dict(*_args) -> dict:
    """Stands in for ``collections.defaultdict``: Flair's lookup cache is rebuilt, not loaded."""
    return {}


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """Stands in for ``_codecs.encode``, which protocol 2 uses to store bytes."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafeModelFileError(f"Unexpected _codecs.encode({encoding!r}) in the file.")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], object] = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("_codecs", "encode"): _latin1_bytes,
    ("flair.data", "Dictionary"): CharDictionary,
    ("collections", "defaultdict"): _empty_dict,
    ("builtins", "int"): int,
}


class _ChangeRefused(UnsafeModelFileError):
    """The file tried to change one of the allowed globals (see :mod:`skembed._unpickle`)."""


class RestrictedUnpickler(AllowListUnpickler):
    """An unpickler that resolves only the globals of :data:`_ALLOWED`; anything else is refused.

    The file gets stand-ins for them that it cannot change (see :mod:`skembed._unpickle`).
    """

    def resolve(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise UnsafeModelFileError(
                f"the file refers to the global '{module}.{name}', which a Flair language-model "
                "file never contains (only tensors, plain containers and flair.data.Dictionary "
                "are allowed); nothing from the file was executed"
            ) from None

    def refused_change(self, message: str) -> Exception:
        return _ChangeRefused(message)


def _load(file, **kwargs):
    return RestrictedUnpickler(file, **kwargs).load()


def load_pt(path: str | PathLike) -> object:
    """Load a Flair ``.pt`` file (new zip or old 0.4.x format) onto the CPU, restricted.

    Raises
    ------
    UnsafeModelFileError
        When the file refers to anything but tensors, plain containers and Flair's dictionary;
        nothing from the file is executed then.
    """
    path = Path(path)
    try:
        return torch.load(
            path, map_location="cpu", pickle_module=_pickle_module, weights_only=False
        )
    except _ChangeRefused as exc:
        raise UnsafeModelFileError(
            f"Refusing to load {path}: {exc}. Only open files from sources you trust."
        ) from None
    except UnsafeModelFileError as exc:
        raise UnsafeModelFileError(
            f"Refusing to load {path}: {exc}. If it is a whole Flair model (e.g. a "
            "SequenceTagger) rather than a language model, save its language model with Flair's "
            "LanguageModel.save first, and only open files from sources you trust."
        ) from None
    except Exception as exc:  # truncated, empty, or not a torch file at all
        raise ValueError(
            f"Could not read {path} ({type(exc).__name__}: {exc}). Expected a Flair language-model "
            "file written by torch.save (Flair's LanguageModel.save or skembed's CharLM.save); it "
            "may be truncated (download it again) or be another kind of file."
        ) from exc


class _FlairPickler(pickle._Pickler):
    """A pickler that writes :class:`CharDictionary` under Flair's name, ``flair.data.Dictionary``."""

    def save_global(self, obj, name=None):
        if isinstance(obj, type) and issubclass(obj, CharDictionary):
            # GLOBAL works under every protocol; Flair's own files reference the class the same way.
            self.write(pickle.GLOBAL + b"flair.data\nDictionary\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def _dump(obj, file, protocol=None) -> None:
    _FlairPickler(file, protocol=protocol).dump(obj)


# torch.save/torch.load take a "pickle module": this one names the dictionary as Flair does
# when writing, and refuses unknown globals when reading.
_pickle_module = types.ModuleType("skembed_flair_pickle")
_pickle_module.Pickler = _FlairPickler
_pickle_module.dump = _dump
_pickle_module.Unpickler = RestrictedUnpickler
_pickle_module.load = _load


def save_pt(obj: dict, path: str | PathLike, legacy: bool = False, protocol: int = 4) -> None:
    """``torch.save`` ``obj`` as Flair does: zip format, or the old format of Flair 0.4.x.

    Flair pickles with protocol 4; ``protocol=2`` (torch's old default) is there for tests of
    files written by other tools. The file is written to a temporary name first, so an interrupted save never leaves a
    truncated model behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(
        obj,
        buf,
        pickle_module=_pickle_module,
        pickle_protocol=protocol,
        _use_new_zipfile_serialization=not legacy,
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
