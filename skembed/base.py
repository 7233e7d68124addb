"""Shared estimator machinery of every token embedder.

A token embedder is split in two, so that grid searches cost one forward pass:

* ``_forward(model, docs)`` runs the network and returns one *state* per document (for
  instance every layer's sub-token vectors). States are kept per document in the state store:
  :data:`skembed.cache.STATES` in memory, and a folder shared with other processes or kept
  across sessions (:mod:`skembed._shared`).
* ``_combine(model, states)`` turns states into one ``(n_tokens, dim)`` tensor per document,
  using only cheap parameters (``layers``, ``pooling_operation``, ``embedding_mode``...).

Subclasses implement ``_model_key``, ``_load_model``, ``_forward``, ``_combine`` and
``_n_features``; this class does input validation, lazy loading through the process-wide model
cache, device and precision, the progress bar of a call (:class:`skembed._batching.Progress`,
handed down the calls that embed), pickling and tags. A call's states come from the
state store (:mod:`skembed._store`: memory tier, folder tier, or computed), in length-sorted
batches whose forward passes are halved after the device runs out of memory
(:mod:`skembed._batching`); a ``_forward`` that batches internally (e.g. windows of long
documents) takes the current limit as its ``batch_size`` argument.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._batching import Progress, call_progress, length_sorted, takes_progress
from ._device import check_cpu_precision, check_device, check_precision, resolve_device
from ._input import check_documents, document_chunks, read_once, resolve_tokenizer
from ._pooling import pool_tensors
from ._shared import SHARED
from ._store import CallStates
from .cache import MODELS, STATES, doc_key
from .ragged import RaggedEmbeddings, labelled

_VALIDATE_CHUNK = 4096  # documents validated at a time by fit


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


class BaseTokenEmbedder(TextTransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Base class of token embedders: ``transform`` returns :class:`RaggedEmbeddings`."""

    _feature_prefix = "emb"
    # Empty documents get zero rows without running the network (document-level classes
    # that must embed the special tokens of an empty text set this to False).
    _skip_empty = True
    # False for embedders that run no network (lookups): precision is then never probed.
    _runs_network = True

    # -- hooks for subclasses --------------------------------------------------
    def _model_key(self) -> Hashable:
        """Identity of the loaded model (resolved paths...), shared by clones and other classes."""
        raise NotImplementedError

    def _load_model(self, device: torch.device) -> Any:
        """Load the network onto ``device`` (float32 weights). Called once per key per process."""
        raise NotImplementedError

    def _check_params(self, model) -> None:
        """Validate the parameters that need the loaded model (e.g. layer indices)."""

    def _forward_key(self) -> Hashable:
        """Parameters that change what ``_forward`` computes (part of the state-cache key)."""
        return ()

    def _forward(self, model, docs: list[list[str]]) -> list:
        """Run the network on non-empty documents; return one state per document."""
        raise NotImplementedError

    def _combine(self, model, states: list) -> list[torch.Tensor]:
        """Cheap: one ``(n_tokens, n_features)`` tensor per document from its state."""
        raise NotImplementedError

    def _n_features(self, model) -> int:
        raise NotImplementedError

    def _doc_cost(self, doc: list[str]) -> int:
        """Sort key for length-sorted batching (longest documents first)."""
        return sum(len(t) for t in doc) + len(doc)

    # -- model -----------------------------------------------------------------
    def _get_model(self):
        """The loaded model, from the process-wide cache (reloaded after unpickling)."""
        device = resolve_device(self.device) if "_device" not in self.__dict__ else self._device
        key = (self._model_key(), str(device))
        if self.__dict__.get("_model_for") != key or "_model" not in self.__dict__:
            model = MODELS.get(key, lambda: self._load_model(device))
            fitted = self.__dict__.get("n_features_out_")  # fit drops it: a refit may change it
            if fitted is not None and int(self._n_features(model)) != fitted:
                raise ValueError(
                    f"The model files of this {type(self).__name__} changed since it was "
                    f"fitted: the model now gives {self._n_features(model)} features per token, "
                    f"not {fitted}. Fit it again (and the steps after it in a pipeline)."
                )
            self._model, self._model_for = model, key
        self._device = device  # also on a refit, which drops it first
        return self._model

    def _state_prefix(self) -> tuple:
        # The key of the model in use (``_get_model`` sets it): states are filed under the files
        # that model was read from, also when the files change during a call.
        model_for = self.__dict__.get("_model_for")
        model_key = model_for[0] if model_for is not None else self._model_key()
        return (model_key, self.precision, str(self._device), self._forward_key())

    # -- estimator API ---------------------------------------------------------
    def fit(self, X=None, y=None):
        """Load the model (once per process) and validate the parameters.

        Parameters
        ----------
        X : documents, optional
            Validated when given; token embedders learn nothing from the data.
        y : ignored

        Returns
        -------
        self
        """
        self._check_common_params()
        if X is not None:  # validated a chunk at a time: the token lists are not kept
            for chunk in document_chunks(X, _VALIDATE_CHUNK):
                self._documents(chunk)
        self.__dict__.pop("_device", None)
        self.__dict__.pop("n_features_out_", None)
        model = self._get_model()
        if self._runs_network:
            check_cpu_precision(self._device, self.precision)
        self._check_params(model)
        self.n_features_out_ = int(self._n_features(model))
        self.device_ = str(self._device)
        return self

    def transform(self, X) -> RaggedEmbeddings:
        """Embed every token of every document.

        Parameters
        ----------
        X : list, tuple, numpy array, pandas Series or one-column DataFrame
            Documents: strings (split by ``tokenizer``) or lists of token strings.

        Returns
        -------
        RaggedEmbeddings
            One ``(n_tokens_i, n_features)`` block per document.
        """
        check_is_fitted(self, "n_features_out_")
        return labelled(self.embed_documents(self._documents(X)), X)

    def _documents(self, X) -> list[list[str]]:
        """Validate ``X`` into token lists with this embedder's tokenizer."""
        return check_documents(X, getattr(self, "tokenizer", None))

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names of the output features: ``f"{prefix}_{j}"``."""
        check_is_fitted(self, "n_features_out_")
        return np.asarray(
            [f"{self._feature_prefix}_{j}" for j in range(self.n_features_out_)], dtype=object
        )

    def set_output(self, *, transform=None):
        """Accepted for Pipeline compatibility; token-level output is always RaggedEmbeddings.

        Use :meth:`RaggedEmbeddings.to_frame` for a pandas view of token vectors.
        """
        if transform not in (None, "default", "pandas", "polars"):
            raise ValueError(f"transform={transform!r} is not a valid output container.")
        return self

    # -- the batched core --------------------------------------------------------
    # The protocol of token embedders (what DocumentPoolEmbeddings and StackedEmbeddings use).
    # ``n_docs``: the documents of the whole call when ``docs`` is a chunk of it, by which the
    # state store judges whether to keep the call's states (see ``skembed.cache.admits``).
    # ``progress``: the bar of the public call that ``docs`` are part of
    # (``skembed._batching.Progress``), advanced by each batch's documents; None makes one for
    # this call (shown if ``show_progress_bar``). Internal calls always hand theirs down, so a
    # call shows one bar however it is chunked. A family that overrides one of these methods
    # takes ``progress=None`` and hands it to ``super()``; an override without it still works
    # (its batches are counted by the caller) but the method it calls shows a bar of its own.
    def embed_documents(
        self,
        docs: list[list[str]],
        n_docs: int | None = None,
        progress: Progress | None = None,
    ) -> RaggedEmbeddings:
        """Embed already validated token lists (see :func:`skembed.check_documents`)."""
        out: list[torch.Tensor | None] = [None] * len(docs)
        with call_progress(progress, self, len(docs)) as progress:
            for index, tensors in self._counted_batches(docs, n_docs, progress):
                for i, t in zip(index, tensors):
                    out[i] = t
        return RaggedEmbeddings.from_list(
            out, docs, self.get_feature_names_out(), dim=self.n_features_out_
        )

    def iter_batches(
        self,
        docs: list[list[str]],
        n_docs: int | None = None,
        progress: Progress | None = None,
    ) -> Iterator[tuple[list[int], list[torch.Tensor]]]:
        """Yield ``(document indices, token tensors)`` batch by batch, longest documents first."""
        check_is_fitted(self, "n_features_out_")
        model = self._get_model()
        empty = torch.zeros((0, self.n_features_out_), device=self._device)
        with call_progress(progress, self, len(docs)) as progress:
            batches = self._batch_states(
                model, docs, range(len(docs)), n_docs=n_docs, progress=progress
            )
            for batch, index, states in batches:
                with torch.inference_mode():
                    tensors = self._combine(model, states) if index else []
                by_doc = dict(zip(index, tensors))
                yield batch, [by_doc[i].float() if i in by_doc else empty for i in batch]

    def iter_pooled(
        self,
        docs: list[list[str]],
        pooling: str,
        n_docs: int | None = None,
        progress: Progress | None = None,
    ) -> Iterator[tuple[list, torch.Tensor]]:
        """Yield ``(document indices, rows)``: each document's token vectors pooled into one
        row (``pooling`` as for :func:`skembed.document.pool`), batch by batch."""
        with call_progress(progress, self, len(docs)) as progress:
            for index, tensors in self._counted_batches(docs, n_docs, progress):
                yield index, pool_tensors(tensors, pooling)

    def _counted_batches(self, docs, n_docs, progress: Progress):
        """``iter_batches`` counted on ``progress``: by itself, or here when a family
        overrode it without the ``progress`` argument."""
        if takes_progress(self.iter_batches):
            yield from self.iter_batches(docs, n_docs=n_docs, progress=progress)
            return
        for index, tensors in self.iter_batches(docs, n_docs=n_docs):
            progress.update(len(index))
            yield index, tensors

    def pool_documents(
        self,
        docs: list[list[str]],
        pooling: str,
        n_docs: int | None = None,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """One row per document of ``docs``: its token vectors pooled (``"mean"``, ``"max"`` or
        ``"min"``; a document without tokens gives zeros), batch by batch, so that the token
        vectors of a corpus are never all held. What :class:`~skembed.DocumentPoolEmbeddings`
        asks of the embedder it wraps or stands after; an embedder may keep the rows
        (:class:`~skembed.TransformerEmbeddings` keeps them per layer in the state store)."""
        with call_progress(progress, self, len(docs)) as progress:
            return self._pool_batches(docs, pooling, n_docs, progress)

    def _pool_batches(self, docs, pooling, n_docs, progress: Progress) -> torch.Tensor:
        out = None
        for index, rows in self.iter_pooled(docs, pooling, n_docs=n_docs, progress=progress):
            if out is None:
                out = torch.zeros((len(docs), rows.shape[1]), device=rows.device)
            out[torch.as_tensor(index, device=out.device)] = rows
        if out is None:
            out = torch.zeros((0, self.n_features_out_))
        return out

    def _embedded(self, docs: list[list[str]], subset) -> list[int]:
        """The documents of ``subset`` that go through the network (not the empty ones,
        unless ``_skip_empty`` is False)."""
        return [i for i in subset if docs[i] or not self._skip_empty]

    def _state_keys(self, docs: list[list[str]], index) -> list:
        """State-cache keys of ``docs[i] for i in index``."""
        prefix = self._state_prefix()
        return [prefix + (doc_key(docs[i]),) for i in index]

    def _batch_states(
        self,
        model,
        docs: list[list[str]],
        subset,
        count: bool = True,
        keys: dict | None = None,
        n_docs: int | None = None,
        progress: Progress | None = None,
    ):
        """Yield ``(batch, its non-empty documents, their states)`` over the documents
        ``subset`` in length-sorted batches; states missing from the cache are computed (and
        cached) batch by batch, or read from other processes (see
        :class:`skembed._store.CallStates`), whose documents come in batches of their own at
        the end. ``count=False``: the lookups were
        counted already; ``keys``: the state keys of the documents, when the caller has them;
        ``n_docs``: the documents of the whole call (``subset`` when not given);
        ``progress``: the call's bar, advanced by each batch's documents (None: a bar of
        its own over ``subset``, if ``show_progress_bar``)."""
        batches = length_sorted(subset, lambda i: self._doc_cost(docs[i]), self.batch_size)
        n_subset = sum(map(len, batches))
        with call_progress(progress, self, n_subset) as progress:
            work = CallStates(self, model, docs, max(n_subset, n_docs or 0))
            for batch, index, states in self._batches_of_states(batches, docs, work, count, keys):
                progress.update(len(batch))
                yield batch, index, states

    def _batches_of_states(self, batches, docs, work: CallStates, count: bool, keys):
        """The batches of :meth:`_batch_states`, before they are counted."""
        for batch in batches:
            index = self._embedded(docs, batch)
            batch_keys = (
                [keys[i] for i in index] if keys is not None else self._state_keys(docs, index)
            )
            states = STATES.get_many(batch_keys, count=count)
            missing = [j for j, s in enumerate(states) if s is None]
            if missing:
                elsewhere = work.complete(index, batch_keys, states, missing)
                if elsewhere:  # computed by another process: yielded by work.from_others()
                    drop = {index[j] for j in elsewhere}
                    batch = [i for i in batch if i not in drop]
                    kept = [j for j in range(len(index)) if index[j] not in drop]
                    index, states = [index[j] for j in kept], [states[j] for j in kept]
            if batch:
                yield batch, index, states
        yield from work.from_others()

    # -- states shared with sibling processes (skembed._shared) --------------------
    # Families whose forward passes are worth sharing set ``_shares_states``. The hooks below
    # write states that are one tensor per document; other states need their own.
    _shares_states = False

    def _pack_states(self, states: list) -> dict[str, torch.Tensor]:
        """The states of one batch as named tensors (to be written to a file)."""
        return {
            "flat": torch.cat([s.reshape(-1) for s in states]),
            "shapes": torch.tensor([list(s.shape) for s in states], dtype=torch.int64),
        }

    def _unpack_states(self, tensors: dict[str, torch.Tensor]) -> list:
        """The states ``_pack_states`` packed, on this embedder's device."""
        shapes = tensors["shapes"].tolist()
        flat = tensors["flat"].to(self._device)
        sizes = [int(np.prod(shape)) for shape in shapes]
        if sum(sizes) != len(flat):
            raise ValueError("inconsistent packed states")
        return [part.view(shape) for part, shape in zip(torch.split(flat, sizes), shapes)]
