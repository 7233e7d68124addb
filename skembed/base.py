"""The base class of token embedders, and the protocol that poolers and stacks use.

A token embedder is a :class:`skembed._network.NetworkEstimator` (model, device, precision,
fit; the family's ``_forward`` computes one state per document, kept in the state store of
:mod:`skembed._store`) with one more hook, the cheap part: ``_combine(model, states)`` turns
states into one ``(n_tokens, n_features)`` tensor per document, using only parameters such
as ``layers``, ``pooling_operation`` or ``embedding_mode``, so that a grid search over them
runs the network once per document.

The protocol (what :class:`~skembed.DocumentPoolEmbeddings` and
:class:`~skembed.StackedEmbeddings` call, and what a user-written token embedder implements):
``embed_documents``, ``iter_batches``, ``iter_pooled`` and ``pool_documents``, each taking
validated token lists, ``n_docs`` (the documents of the whole call when these are a chunk of
it) and ``progress`` (the call's one progress bar).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ._batching import Progress, call_progress, takes_progress
from ._estimator import RaggedOutput, TextTransformerMixin, check_choice, store_params
from ._host import to_host
from ._network import NetworkEstimator
from ._pooling import pool_tensors
from ._precision import cheap_operations
from ._store import state_batches
from .ragged import RaggedEmbeddings, labelled

# Helpers of every family module, importable from here as from the estimator base.
__all__ = ["BaseTokenEmbedder", "TextTransformerMixin", "check_choice", "store_params"]


class BaseTokenEmbedder(RaggedOutput, NetworkEstimator, auto_wrap_output_keys=None):
    """Base class of token embedders: ``transform`` returns :class:`RaggedEmbeddings`.

    A family implements the hooks of :class:`skembed._network.NetworkEstimator` and
    ``_combine``; see docs/architecture.md ("How to add a family") for a complete example.
    """

    def _combine(self, model, states: list) -> list[torch.Tensor]:
        """Cheap: one ``(n_tokens, n_features)`` tensor per document from its state."""
        raise NotImplementedError

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
        """Embed already validated token lists (see :func:`skembed.check_documents`).

        Each batch goes to the host as soon as it is combined, into one preallocated array
        of the call's token vectors: device memory holds a batch, never the whole output,
        and nothing is concatenated at the end. (Use ``iter_batches`` for tensors on the
        device.)"""
        check_is_fitted(self, "n_features_out_")
        offsets = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum([len(doc) for doc in docs], out=offsets[1:])
        data = torch.empty((int(offsets[-1]), self.n_features_out_))
        with call_progress(progress, self, len(docs)) as progress:
            for index, tensors in self._counted_batches(docs, n_docs, progress):
                for i, t in zip(index, tensors):
                    if t.shape != (len(docs[i]), self.n_features_out_):
                        raise ValueError(
                            f"{type(self).__name__} gave a {tuple(t.shape)} block for document "
                            f"{i}, which has {len(docs[i])} tokens and should get "
                            f"({len(docs[i])}, {self.n_features_out_})."
                        )
                if any(len(t) for t in tensors):  # one copy from the device per batch
                    host = to_host(torch.cat(tensors) if len(tensors) > 1 else tensors[0])
                    start = 0
                    for i, t in zip(index, tensors):
                        data[offsets[i] : offsets[i + 1]] = host[start : start + len(t)]
                        start += len(t)
        return RaggedEmbeddings(data, offsets, docs, self.get_feature_names_out())

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
            batches = state_batches(self, model, docs, range(len(docs)), progress, n_docs=n_docs)
            for batch, index, states in batches:
                with torch.inference_mode(), cheap_operations(self._device):
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
