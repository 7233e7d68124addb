"""The estimator side of every embedder that runs a network through the state store.

A family implements a few hooks and nothing else:

* ``_model_key()`` and ``_load_model(device)``: which model, and how to load it (once per
  process and device, in :data:`skembed.cache.MODELS`);
* ``_forward(model, docs)``: the expensive part, one *state* per document (e.g. every layer's
  sub-token vectors), kept per document in the state store (:mod:`skembed._store`); a
  ``_forward`` that batches internally (windows of long documents) also takes ``batch_size``,
  the rows it may run at once (smaller after the device ran out of memory);
* ``_n_features(model)``, and ``_check_params(model)`` for parameters that need the model;
* optionally ``_forward_key()`` (parameters that change the states), ``_doc_cost(doc)``
  (length-sorted batching; or ``_doc_costs(model, docs)`` for all of a call's documents
  that may go through the network at once) and, to share states with other processes,
  ``_shares_states`` with ``_pack_states``/``_unpack_states`` (one tensor per document by
  default).

:class:`NetworkEstimator` does the rest: parameters, input validation, model loading, device
and precision, fit and feature names. Token embedders (:class:`skembed.BaseTokenEmbedder`)
add the cheap ``_combine`` of states into token rows; document-level estimators
(:class:`skembed.TransformerDocumentEmbeddings`) pool the states into one row per document.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Hashable
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ._device import resolve_device
from ._estimator import TextTransformerMixin
from ._input import check_documents, validate_documents
from ._precision import check_cpu_precision
from ._store import pack_tensors, unpack_tensors
from .cache import MODELS
from .resolve import FileSignature

_VALIDATE_CHUNK = 4096  # documents validated at a time by fit


@functools.lru_cache(maxsize=64)
def _feature_names(prefix: str, n: int) -> tuple[str, ...]:
    # Every transform names its columns (a grid search makes hundreds of calls): made once.
    return tuple(f"{prefix}_{j}" for j in range(n))


def _files_removed(model_key) -> bool:
    """Whether a model key names files (its :class:`~skembed.resolve.FileSignature`) of which
    one no longer exists."""
    if isinstance(model_key, FileSignature):
        return not all(map(os.path.exists, model_key.paths))
    return isinstance(model_key, tuple) and any(map(_files_removed, model_key))


class NetworkEstimator(TextTransformerMixin, BaseEstimator):
    """Parameters, model loading, device, precision and ``fit`` of an embedder whose states
    come from a network (see the module's docstring for the hooks a family implements)."""

    _feature_prefix = "emb"
    # False for embedders that run no network (lookups): precision is then never probed.
    _runs_network = True
    # Families whose forward passes are worth sharing with other processes set this.
    _shares_states = False
    # False for families whose model is made anew by each fit (trained weights): it is kept
    # on the estimator only, so a grid search does not fill the process-wide model cache
    # with one model per candidate.
    _caches_model = True

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

    def _n_features(self, model) -> int:
        raise NotImplementedError

    def _doc_cost(self, doc: list[str]) -> int:
        """Sort key for length-sorted batching (longest documents first)."""
        return sum(len(t) for t in doc) + len(doc)

    def _doc_costs(self, model, docs: list[list[str]]) -> list[int]:
        """The sort keys of the documents a call may run through ``model``, at once."""
        return list(map(self._doc_cost, docs))

    # -- model -----------------------------------------------------------------
    def _get_model(self):
        """The loaded model, from the process-wide cache (reloaded after unpickling)."""
        device = resolve_device(self.device) if "_device" not in self.__dict__ else self._device
        try:
            key = (self._model_key(), str(device))
        except (OSError, ValueError):
            # The model files were removed (or moved) since this estimator loaded them: the
            # model it holds still serves; only one that must load them again fails (and so
            # does a model parameter changed since to a name that does not resolve).
            held = self.__dict__.get("_model_for")
            if (
                held is None
                or held[1] != str(device)
                or "_model" not in self.__dict__
                or not _files_removed(held[0])
            ):
                raise
            key = held
        if self.__dict__.get("_model_for") != key or "_model" not in self.__dict__:
            if self._caches_model:
                model = MODELS.get(key, lambda: self._load_model(device))
            else:
                model = self._load_model(device)
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
        if X is not None:  # the token lists are not kept
            validate_documents(X, getattr(self, "tokenizer", None), _VALIDATE_CHUNK)
        self.__dict__.pop("_device", None)
        self.__dict__.pop("n_features_out_", None)
        model = self._get_model()
        if self._runs_network:
            check_cpu_precision(self._device, self.precision)
        self._check_params(model)
        self.n_features_out_ = int(self._n_features(model))
        self.device_ = str(self._device)
        return self

    def _documents(self, X) -> list[list[str]]:
        """Validate ``X`` into token lists with this embedder's tokenizer."""
        return check_documents(X, getattr(self, "tokenizer", None))

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names of the output features: ``f"{prefix}_{j}"``."""
        check_is_fitted(self, "n_features_out_")
        return np.array(_feature_names(self._feature_prefix, self.n_features_out_), dtype=object)

    def __copy__(self):
        # A copy shares the loaded model and device (copy's default goes through pickling's
        # __getstate__, which drops them: the copy would look its model up again); setting
        # the copy's parameters leaves this estimator alone.
        copied = type(self).__new__(type(self))
        copied.__dict__.update(self.__dict__)
        return copied

    def _pack_states(self, states: list) -> dict[str, torch.Tensor]:
        """The states of one batch as named tensors (to be written to a file)."""
        return pack_tensors(states)

    def _unpack_states(self, tensors: dict[str, torch.Tensor]) -> list:
        """The states ``_pack_states`` packed, on this embedder's device."""
        return unpack_tensors(tensors, self._device)
