"""A model file cannot change any object of the process (see docs/security.md).

skembed's restricted unpicklers (Flair ``.pt``, gensim ``KeyedVectors``, Transformer-XL
``vocab.pkl``) resolve a few allowed globals. The pickle opcodes ``BUILD``, ``SETITEM(S)``,
``APPEND(S)`` and ``ADDITEMS`` act on whatever is on the stack, so a file that puts an allowed
global there could change it for the whole process: ``BUILD`` with the slot state
``{"__defaults__": ({"neg": True},)}`` on ``torch._utils._rebuild_tensor_v2`` makes every later
``torch.load(weights_only=True)`` in the process return sign-flipped tensors.

Each test crafts such a file by hand (raw opcodes), for every family, several allowed globals
(functions, Python classes, C types) and every mutating opcode, and checks that loading it is
refused with the family's error, that the global is unchanged, and that ``torch.load`` still
gives the right numbers.
"""

from __future__ import annotations

import collections
import copyreg
import io
import pickle
import struct
import types

import numpy as np
import pytest
import torch

from skembed.flair import CharDictionary, UnsafeModelFileError
from skembed.flair import unpickle as flair_unpickle
from skembed.flair.unpickle import load_pt, save_pt
from skembed.transfo_xl import UnsafeVocabularyError
from skembed.transfo_xl import vocab as vocab_module
from skembed.transfo_xl.vocab import load_vocabulary
from skembed.word.formats import _KeyedVectorsUnpickler, iter_gensim


# -- crafting pickles ----------------------------------------------------------------------------
def _str(text: str) -> bytes:
    data = text.encode("utf-8")
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


# ({"neg": True},): as the defaults of _rebuild_tensor_v2, it flips the sign of every tensor
# torch.load rebuilds without metadata of its own.
_NEG_DEFAULTS = pickle.EMPTY_DICT + _str("neg") + pickle.NEWTRUE + pickle.SETITEM + pickle.TUPLE1
_STATE = pickle.EMPTY_DICT + _str("__defaults__") + _NEG_DEFAULTS + pickle.SETITEM

# What follows the global on the stack, for each opcode that changes the object under it.
OPS = {
    # state dict: written into the object's __dict__
    "BUILD-dict": _STATE + pickle.BUILD,
    # (None, slot state): setattr(obj, "__defaults__", ...), the sign-flip of the issue
    "BUILD-slots": pickle.NONE + _STATE + pickle.TUPLE2 + pickle.BUILD,
    "SETITEM": _str("key") + _str("value") + pickle.SETITEM,
    "SETITEMS": pickle.MARK + _str("key") + _str("value") + pickle.SETITEMS,
    "APPEND": _str("item") + pickle.APPEND,
    "APPENDS": pickle.MARK + _str("item") + pickle.APPENDS,
    "ADDITEMS": pickle.MARK + _str("item") + pickle.ADDITEMS,
}


def _payload(module: str, name: str, op: str) -> bytes:
    global_ = pickle.GLOBAL + f"{module}\n{name}\n".encode()
    return pickle.PROTO + bytes([4]) + global_ + OPS[op] + pickle.STOP


class _RawPickler:
    """A ``torch.save`` pickler that writes the bytes it is given as the file's pickle."""

    def __init__(self, file, protocol=None):
        self.file = file

    def dump(self, obj: bytes) -> None:
        self.file.write(obj)


_RAW = types.ModuleType("raw_pickle")
_RAW.Pickler = _RawPickler


# -- the three families --------------------------------------------------------------------------
def _load_flair(tmp_path, payload):
    path = tmp_path / "crafted.pt"
    torch.save(payload, path, pickle_module=_RAW)  # a real torch zip file around the pickle
    load_pt(path)
    return path


def _load_vocab(tmp_path, payload):
    (tmp_path / "vocab.pkl").write_bytes(payload)
    load_vocabulary(tmp_path)
    return tmp_path / "vocab.pkl"


def _load_gensim(tmp_path, payload):
    pytest.importorskip("gensim")
    path = tmp_path / "crafted.gensim"
    path.write_bytes(payload)
    iter_gensim(path)
    return path


def _gensim_class():
    pytest.importorskip("gensim")
    from gensim.models.keyedvectors import KeyedVectors

    return KeyedVectors


# family -> (loader, expected error, {global: real object (or a function returning it)})
FAMILIES = {
    "flair": (
        _load_flair,
        UnsafeModelFileError,
        {
            "torch._utils._rebuild_tensor_v2": lambda: torch._utils._rebuild_tensor_v2,
            "flair.data.Dictionary": lambda: CharDictionary,
            "collections.OrderedDict": lambda: collections.OrderedDict,
            "_codecs.encode": lambda: flair_unpickle._latin1_bytes,
        },
    ),
    "vocab": (
        _load_vocab,
        UnsafeVocabularyError,
        {
            "collections.Counter": lambda: collections.Counter,
            "re._compile": lambda: vocab_module._inert_pattern,
            "collections.OrderedDict": lambda: collections.OrderedDict,
            "sacremoses.tokenize.MosesTokenizer": lambda: vocab_module._inert_class(
                "sacremoses.tokenize", "MosesTokenizer"
            ),
        },
    ),
    "gensim": (
        _load_gensim,
        ValueError,
        {
            "copyreg._reconstructor": lambda: copyreg._reconstructor,
            "gensim.models.keyedvectors.KeyedVectors": _gensim_class,
            "numpy.dtype": lambda: np.dtype,
            "builtins.object": lambda: object,
        },
    ),
}
CASES = [
    pytest.param(family, global_, op, id=f"{family}-{global_}-{op}")
    for family, (_, _, globals_) in FAMILIES.items()
    for global_ in globals_
    for op in OPS
]

_FUNCTION_ATTRS = ("__defaults__", "__kwdefaults__", "__code__")


def _snapshot(obj) -> dict:
    state = dict(vars(obj)) if hasattr(obj, "__dict__") else {}
    for attr in _FUNCTION_ATTRS:
        if hasattr(obj, attr):
            state[attr] = getattr(obj, attr)
    return state


def _changes(obj, before: dict) -> list[str]:
    after = _snapshot(obj)
    return sorted(k for k in before.keys() | after.keys() if before.get(k) is not after.get(k))


def _restore(obj, before: dict) -> None:
    """Undo what a file did to ``obj`` (only ever needed before the fix: keeps the session sane)."""
    for key in _changes(obj, before):
        try:
            if key in before:
                setattr(obj, key, before[key])
            else:
                delattr(obj, key)
        except (AttributeError, TypeError):
            pass


@pytest.fixture
def tensor_file(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.tensor([1.0, -2.0, 3.0]), path)
    return path


def _assert_torch_load_intact(tensor_file) -> None:
    loaded = torch.load(tensor_file, weights_only=True)
    assert loaded.tolist() == [1.0, -2.0, 3.0]
    assert not loaded.is_neg()


@pytest.mark.parametrize(("family", "global_", "op"), CASES)
def test_a_file_cannot_change_an_allowed_global(tmp_path, tensor_file, family, global_, op):
    loader, error, globals_ = FAMILIES[family]
    real = globals_[global_]()
    before = _snapshot(real)
    module, name = global_.rsplit(".", 1)
    try:
        with pytest.raises(error, match="tries to") as info:
            loader(tmp_path, _payload(module, name, op))
        message = str(info.value)
        assert str(tmp_path) in message and global_ in message
        assert "nothing was changed" in message
        assert _changes(real, before) == []
    finally:
        _restore(real, before)
    _assert_torch_load_intact(tensor_file)


def test_the_sign_flip_of_the_issue_is_refused(tmp_path, tensor_file):
    """BUILD on torch._utils._rebuild_tensor_v2 used to load and flip every later tensor."""
    rebuild = torch._utils._rebuild_tensor_v2
    defaults = rebuild.__defaults__
    try:
        with pytest.raises(UnsafeModelFileError, match="_rebuild_tensor_v2"):
            _load_flair(tmp_path, _payload("torch._utils", "_rebuild_tensor_v2", "BUILD-slots"))
        assert torch._utils._rebuild_tensor_v2 is rebuild and rebuild.__defaults__ == defaults
    finally:
        rebuild.__defaults__ = defaults
    _assert_torch_load_intact(tensor_file)


# -- real files still give real objects ----------------------------------------------------------
def test_flair_objects_are_of_the_real_classes(tmp_path):
    dictionary = CharDictionary("ab")
    state = collections.OrderedDict(weight=torch.arange(3.0))
    for legacy, protocol in [(False, 4), (True, 2)]:
        path = tmp_path / f"lm-{legacy}.pt"
        save_pt({"dictionary": dictionary, "state_dict": state}, path, legacy, protocol)
        loaded = load_pt(path)
        assert type(loaded["dictionary"]) is CharDictionary and loaded["dictionary"] == dictionary
        assert type(loaded["state_dict"]) is collections.OrderedDict
        assert loaded["state_dict"]["weight"].tolist() == [0.0, 1.0, 2.0]


def test_vocab_objects_are_of_the_real_classes(tmp_path):
    data = {
        "idx2sym": ["<unk>", "the"],
        "sym2idx": collections.OrderedDict([("<unk>", 0), ("the", 1)]),
        "counter": collections.Counter({"the": 3}),
        "sets": [{1, 2}, frozenset({3})],
    }
    path = tmp_path / "vocab.pkl"
    for protocol in (3, 4):  # transformers wrote protocol 4
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        loaded = vocab_module._read_dict(path)
        assert loaded == data
        assert type(loaded["sym2idx"]) is collections.OrderedDict
        assert type(loaded["counter"]) is collections.Counter
        assert [type(s) for s in loaded["sets"]] == [set, frozenset]


@pytest.mark.parametrize("protocol", [1, 2, 4])
def test_gensim_objects_are_of_the_real_classes(protocol):
    """Protocol 1 goes through copyreg._reconstructor, which gets the real class, not a stand-in."""
    pytest.importorskip("gensim")
    import gensim.models.keyedvectors as gkv

    vocab = gkv.CompatVocab(count=2, index=7)
    data = pickle.dumps(vocab, protocol=protocol, fix_imports=False)
    loaded = _KeyedVectorsUnpickler(io.BytesIO(data)).load()
    assert type(loaded) is gkv.CompatVocab and (loaded.count, loaded.index) == (2, 7)
    array = np.arange(4, dtype=np.float32)
    data = pickle.dumps({"a": array}, protocol=max(protocol, 3))  # bytes need protocol 3
    loaded = _KeyedVectorsUnpickler(io.BytesIO(data), encoding="latin1").load()
    assert type(loaded["a"]) is np.ndarray and loaded["a"].tolist() == array.tolist()


def test_build_on_a_shared_numpy_dtype_changes_nothing(tmp_path):
    """``numpy.dtype("f8", False, False)`` is numpy's shared float64: numpy ignores a new state."""
    pytest.importorskip("gensim")
    dtype = (
        pickle.GLOBAL
        + b"numpy\ndtype\n"
        + _str("f8")
        + pickle.NEWFALSE
        + pickle.NEWFALSE
        + pickle.TUPLE3
        + pickle.REDUCE
    )
    state = b"".join(
        [pickle.MARK, pickle.BININT1 + bytes([3]), _str(">")]
        + [pickle.NONE] * 3
        + [pickle.BININT1 + bytes([16])] * 2
        + [pickle.BININT1 + bytes([0]), pickle.TUPLE]
    )
    path = tmp_path / "dtype.gensim"
    path.write_bytes(pickle.PROTO + bytes([4]) + dtype + state + pickle.BUILD + pickle.STOP)
    with pytest.raises(ValueError, match="KeyedVectors"):
        iter_gensim(path)
    assert np.dtype("f8").byteorder == "=" and np.dtype("f8").itemsize == 8
    assert np.zeros(2).tobytes() == bytes(16)
