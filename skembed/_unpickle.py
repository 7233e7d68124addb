"""The restricted unpickler behind every pickled model file skembed reads.

Flair ``.pt`` files, gensim ``KeyedVectors`` files and Transformer-XL ``vocab.pkl`` files are
pickles. Each family lists the few globals its files need (:meth:`AllowListUnpickler.resolve`);
anything else is refused before it is called. That alone is not enough: the pickle opcodes
``BUILD`` (set state or attributes), ``SETITEM(S)``, ``APPEND(S)`` and ``ADDITEMS`` act on
whatever object is on the stack, and if the unpickler handed out the real module-level function
or class, a file could change it for the whole process (give
``torch._utils._rebuild_tensor_v2`` new defaults, replace a method of ``collections.Counter``).

So the unpickler never hands out the real object. Each allowed global is given to the file as a
*stand-in*: a small class that is called, and instantiated (``NEWOBJ``), exactly like its target
and returns what the target returns, but refuses every change: setting or deleting an attribute,
``BUILD``, item assignment, ``append``/``extend``/``add``. A refusal raises
:class:`RefusedChange`, which each family turns into its own error naming the file. What is
left for those opcodes are the objects the unpickler itself created (new dicts, lists, instances,
and what the allowed targets return: new objects, or immutable ones such as ints and bytes;
numpy ignores a new state for its shared built-in dtypes): no object that existed before the
file was opened can be changed by it.

Stand-ins are built once per target and shared (they cannot be changed, so sharing is safe). The
unpickler is still the C ``pickle.Unpickler``; the only added cost is one Python call per object
a stand-in creates or rebuilds.
"""

from __future__ import annotations

import pickle
import threading


class RefusedChange(pickle.UnpicklingError):
    """A pickle tried to change an object it did not create (a global handed out to it)."""


def _refuse(cls: type, action: str) -> RefusedChange:
    return RefusedChange(
        f"the file tries to {action} the global '{cls._skembed_name}', which a model file never "
        "does; nothing was changed and nothing from the file was executed"
    )


def _unwrap(args: tuple) -> tuple:
    """``args`` with every stand-in replaced by its target (e.g. a class passed to a rebuilder)."""
    return tuple(a._skembed_target if type(a) is _StandIn else a for a in args)


class _StandIn(type):
    """Metaclass of stand-ins: calling one calls its target; changing one is refused."""

    def __call__(cls, *args, **kwargs):  # REDUCE, INST/OBJ with arguments
        return cls._skembed_target(*_unwrap(args), **kwargs)

    def __setattr__(cls, name, value):
        raise _refuse(cls, f"set the attribute {name!r} of")

    def __delattr__(cls, name):
        raise _refuse(cls, f"delete the attribute {name!r} of")

    def __setitem__(cls, key, value):  # SETITEM, SETITEMS
        raise _refuse(cls, "store items in")

    def __delitem__(cls, key):
        raise _refuse(cls, "delete items of")

    def __repr__(cls) -> str:
        return f"<stand-in for {cls._skembed_name}>"


def _instantiator(target: object, name: str):
    """The ``__new__`` of a stand-in: a new instance of ``target`` itself (never of the stand-in)."""
    if not isinstance(target, type):

        def __new__(cls, *args, **kwargs):
            raise pickle.UnpicklingError(f"the file instantiates '{name}', which is not a class")

        return __new__
    new = target.__new__

    def __new__(cls, *args, **kwargs):  # NEWOBJ, NEWOBJ_EX, INST/OBJ without arguments
        if args:
            return new(target, *_unwrap(args), **kwargs)
        return new(target, **kwargs)

    return __new__


def _refuse_build(cls, *_args):  # BUILD looks up __setstate__ on the object first
    raise _refuse(cls, "set the state of")


def _refuse_add(cls, *_args):  # APPEND(S) looks up extend, then append; ADDITEMS add
    raise _refuse(cls, "add items to")


_STAND_INS: dict[tuple[int, str], type] = {}
_LOCK = threading.Lock()


def stand_in(target: object, name: str) -> type:
    """The stand-in handed to a pickle for the global ``name`` resolved to ``target``."""
    key = (id(target), name)
    found = _STAND_INS.get(key)
    if found is None:
        namespace = {
            "__slots__": (),  # no instance state, and no __class__ assignment to a stand-in
            "__module__": __name__,
            "__new__": _instantiator(target, name),
            "__setstate__": classmethod(_refuse_build),
            "extend": classmethod(_refuse_add),
            "append": classmethod(_refuse_add),
            "add": classmethod(_refuse_add),
            "_skembed_target": target,
            "_skembed_name": name,
        }
        with _LOCK:
            found = _STAND_INS.setdefault(key, _StandIn(name.rpartition(".")[2], (), namespace))
    return found


class AllowListUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that resolves only allowed globals, each to a stand-in.

    Subclasses implement :meth:`resolve` (the real object for an allowed global; raise for any
    other) and may override :meth:`refused_change` to turn a refused change into their own
    error. See the module docstring for why globals are never handed out themselves.
    """

    def resolve(self, module: str, name: str) -> object:
        """The real object for the global ``module.name``; raise the family's error if refused."""
        raise NotImplementedError

    def refused_change(self, message: str) -> Exception:
        """The exception raised when the file tries to change a global (``message`` says how)."""
        return pickle.UnpicklingError(message)

    def find_class(self, module, name):
        return stand_in(self.resolve(module, name), f"{module}.{name}")

    def load(self):
        try:
            return super().load()
        except RefusedChange as exc:
            raise self.refused_change(str(exc)) from None
