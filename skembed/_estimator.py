"""What every skembed estimator shares: parameters stored as given (:func:`store_params`),
choices checked with a clear message (:func:`check_choice`), and :class:`TextTransformerMixin`
(tags, ``fit_transform`` on any iterable, pickling without the loaded model, with a warning
when another skembed version saved it)."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.base import TransformerMixin

from ._device import check_device
from ._input import read_once, resolve_tokenizer
from ._precision import check_precision
from ._shared import SHARED


def store_params(obj, params: dict) -> None:
    """Store ``__init__`` arguments (``locals()``) as attributes: all an estimator's
    ``__init__`` does, as scikit-learn requires."""
    for name, value in params.items():
        if name not in ("self", "__class__"):
            setattr(obj, name, value)


def check_choice(name: str, value, choices: Sequence) -> None:
    """Raise a ValueError listing ``choices`` when ``value`` is not one of them. A flag is a
    bool (``1`` is not ``True``), and a number or string never matches a bool.

    Examples
    --------
    >>> check_choice("use_scalar_mix", 1, (True, False))
    Traceback (most recent call last):
    ...
    ValueError: use_scalar_mix=1 is not valid; choose one of [True, False].
    """
    if not any(_same_choice(value, choice) for choice in choices):
        raise ValueError(f"{name}={value!r} is not valid; choose one of {list(choices)}.")


def _same_choice(value, choice) -> bool:
    flags = isinstance(value, bool | np.bool_), isinstance(choice, bool)
    if any(flags):
        return all(flags) and bool(value) is choice
    try:
        return bool(value == choice)
    except (TypeError, ValueError):  # an array, or another value that is not one choice
        return False


CONTAINERS = ("default", "pandas", "polars")  # the output containers of set_output


def check_container(transform) -> None:
    """Raise the error of ``set_output(transform=...)`` for a container that is not one of
    :data:`CONTAINERS` (None leaves the output as it is)."""
    if transform is not None and transform not in CONTAINERS:
        raise ValueError(f"transform={transform!r} is not a valid output container.")


class RaggedOutput:
    """``set_output`` of token-level estimators, whose output is always RaggedEmbeddings."""

    def set_output(self, *, transform=None):
        """Accepted for Pipeline compatibility; token-level output is always RaggedEmbeddings.

        Use :meth:`RaggedEmbeddings.to_frame` for a pandas view of token vectors.
        """
        check_container(transform)
        return self


class TextTransformerMixin(TransformerMixin):
    """Tags, ``set_output`` and pickling shared by every skembed estimator."""

    # Attributes holding loaded weights: dropped when pickling, reloaded lazily.
    _transient: tuple[str, ...] = ("_model", "_device", "_model_for", "_oom_warned", "_copy_of")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.target_tags.required = False
        tags.transformer_tags.preserves_dtype = []
        tags.non_deterministic = False
        return tags

    def fit_transform(self, X, y=None, **fit_params):
        """Fit to ``X``, then transform it: one output row (or block) per document of ``X``,
        which may be any iterable of documents, a generator included (read once)."""
        X = read_once(X)
        return self.fit(X, y, **fit_params).transform(X)

    def __sklearn_clone__(self):
        # A grid search clones its estimator before it starts its workers: they inherit the
        # folder of shared states from here (named on first use, not at import).
        SHARED.start()
        return super().__sklearn_clone__()

    def __getstate__(self):
        from . import __version__

        SHARED.start()  # the same for workers an estimator is pickled to
        # A copy: on Python 3.11+ the state is the estimator's own __dict__, which pickling
        # must not change (the loaded model stays with the estimator).
        state = dict(super().__getstate__())
        for name in self._transient:
            state.pop(name, None)
        state["_skembed_version"] = __version__  # checked when loaded, as sklearn's version
        return state

    def __setstate__(self, state):
        """Warn (:class:`skembed.exceptions.InconsistentVersionWarning`) when another skembed
        version pickled this estimator; parameters its pickle lacks get their defaults, and
        any other missing attribute's error names the version (see ``__getattr__``)."""
        import inspect

        from . import __version__
        from .exceptions import InconsistentVersionWarning

        state = dict(state)
        saved = state.pop("_skembed_version", None)
        state.pop("_skembed_pickled_with", None)
        if saved != __version__:
            missing = []
            if hasattr(self, "_get_param_names"):
                params = inspect.signature(type(self).__init__).parameters
                for name in self._get_param_names():
                    if name not in state and params[name].default is not params[name].empty:
                        state[name] = params[name].default
                        missing.append(name)
            warnings.warn(
                InconsistentVersionWarning(
                    estimator_name=type(self).__name__,
                    original_version=saved,
                    current_version=__version__,
                    missing=missing,
                ),
                stacklevel=2,
            )
            state["_skembed_pickled_with"] = (
                f"skembed {saved}" if saved else "an older skembed (its version not recorded)"
            )
        super().__setstate__(state)

    def __getattr__(self, name):
        # Only called for a missing attribute: after loading a pickle of another version,
        # say which one saved it (the attribute may be new since then).
        saved = None if name.startswith("__") else self.__dict__.get("_skembed_pickled_with")
        if saved is None:
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}", name=name, obj=self
            )
        from . import __version__

        raise AttributeError(
            f"{type(self).__name__!r} object has no attribute {name!r}: it was pickled with "
            f"{saved} and loaded with skembed {__version__}, which expects it. Refit "
            f"the estimator with skembed {__version__}, or load it with the version that saved "
            "it.",
            name=name,
            obj=self,
        )

    def _check_common_params(self) -> None:
        SHARED.start()
        check_device(self.device)
        check_precision(self.precision)
        if (
            not isinstance(self.batch_size, numbers.Integral)
            or isinstance(self.batch_size, bool)
            or self.batch_size < 1
        ):
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}.")
        if not isinstance(self.show_progress_bar, bool | np.bool_):
            raise ValueError(
                f"show_progress_bar must be True or False, got {self.show_progress_bar!r}."
            )
        resolve_tokenizer(getattr(self, "tokenizer", None))
