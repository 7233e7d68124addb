"""Document-level embeddings: pool token vectors into one row per document."""

from __future__ import annotations

import numpy as np
import torch
from sklearn import get_config
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from ._batching import Progress, new_progress, takes_argument, takes_progress
from ._estimator import TextTransformerMixin, check_choice, check_container, store_params
from ._hf.network import HFNetwork
from ._hf.words import in_call
from ._host import to_host
from ._input import document_chunks
from ._layers import parse_layers
from ._network import NetworkEstimator
from ._pooling import pool, pool_tensors
from ._store import state_batches
from .ragged import RaggedEmbeddings

POOLINGS = ("mean", "max", "min")
_CHUNK_BATCHES = 64  # documents validated and pooled at a time: 64 batches' worth
OUTPUTS = ("numpy", "torch")


class _DocumentOutput:
    """Output handling of document-level estimators: numpy, torch, or pandas via set_output."""

    def set_output(self, *, transform=None):
        """Set the output container: ``"default"`` (numpy), ``"pandas"`` or ``"polars"``."""
        check_container(transform)
        if transform is None:
            return self
        self._sklearn_output_config = {"transform": transform}
        return self

    def _finish(self, pooled: torch.Tensor, device=None):
        """The output container for ``pooled``; a torch result goes to ``device`` if given."""
        container = getattr(self, "_sklearn_output_config", {}).get("transform", "default")
        wants_torch = self.output == "torch" or get_config().get("array_api_dispatch", False)
        if wants_torch and container == "default":
            return pooled if device is None else pooled.to(device)
        return to_host(pooled.detach()).numpy()


class DocumentPoolEmbeddings(_DocumentOutput, TextTransformerMixin, BaseEstimator):
    """One vector per document: the mean, max or min of its token vectors.

    Use it as a step after a token embedder (it then receives :class:`RaggedEmbeddings`), or
    wrap an embedder with ``embeddings=``; then it streams batch by batch and never holds the
    token vectors of the whole corpus.

    Parameters
    ----------
    embeddings : token embedder, optional
        The embedder to wrap (cloned in ``fit``); None to stand after one in a Pipeline.
    pooling : {"mean", "max", "min"}, default="mean"
        Element-wise pooling over the document's tokens. A document without tokens pools to
        a zero vector.
    output : {"numpy", "torch"}, default="numpy"
        ``"torch"`` returns a tensor on the embedder's device (as does sklearn's array API
        dispatch); ``set_output(transform="pandas")`` returns a DataFrame.

    A call shows one progress bar over its documents when the token embedder has
    ``show_progress_bar=True``, however many chunks it reads.

    Attributes
    ----------
    embeddings_ : token embedder
        The fitted clone of ``embeddings`` (when given).
    n_features_in_ : int
        Size of the token vectors.

    Examples
    --------
    >>> from skembed import DocumentPoolEmbeddings, TransformerEmbeddings
    >>> pooled = DocumentPoolEmbeddings(TransformerEmbeddings("all-MiniLM-L6-v2"))
    >>> pooled.fit_transform(["a short text", "another one", ""]).shape
    (3, 384)
    """

    def __init__(self, embeddings=None, pooling="mean", output="numpy"):
        self.embeddings = embeddings
        self.pooling = pooling
        self.output = output

    def fit(self, X=None, y=None):
        """Fit the wrapped embedder (passing ``X`` and ``y`` on), or record the size of the
        token vectors.

        Parameters
        ----------
        X : documents, RaggedEmbeddings or None
            Wrapping an embedder: documents, optional as for the token embedders (an embedder
            that learns from them, such as ``CharacterEmbeddings``, needs them). Standing after
            a token embedder: its ``RaggedEmbeddings``, required.
        y : passed on to the wrapped embedder

        Returns
        -------
        self
        """
        check_choice("pooling", self.pooling, POOLINGS)
        check_choice("output", self.output, OUTPUTS)
        if self.embeddings is None:
            if X is None:
                raise TypeError(
                    "DocumentPoolEmbeddings without `embeddings` stands after a token embedder "
                    "and is fitted on its RaggedEmbeddings: fit(embedder.transform(texts)), or "
                    "in a Pipeline. To fit without data, wrap the embedder: "
                    "DocumentPoolEmbeddings(embedder).fit()."
                )
            ragged = self._check_ragged(X, fitted=False)
            self.n_features_in_ = ragged.dim
            self.feature_names_in_ = np.asarray(ragged.feature_names, dtype=object)
        else:
            if not hasattr(self.embeddings, "iter_batches"):
                raise TypeError(
                    "embeddings must be a skembed token embedder (e.g. TransformerEmbeddings), "
                    f"got {type(self.embeddings).__name__}."
                )
            self.embeddings_ = clone(self.embeddings).fit(X, y)
            self.n_features_in_ = int(self.embeddings_.n_features_out_)
        return self

    def _check_ragged(self, X, fitted=True) -> RaggedEmbeddings:
        if not isinstance(X, RaggedEmbeddings):
            raise TypeError(
                "DocumentPoolEmbeddings without `embeddings` expects the RaggedEmbeddings of a "
                f"token embedder placed before it, got {type(X).__name__}. Put a token embedder "
                "before it in the Pipeline, or pass one: DocumentPoolEmbeddings(embedder)."
            )
        if fitted and X.dim != self.n_features_in_:
            raise ValueError(
                f"The token vectors have {X.dim} features, but this pooler was fitted on "
                f"{self.n_features_in_}."
            )
        return X

    def transform(self, X):
        """Pool each document's token vectors into one row.

        Returns
        -------
        ndarray of shape (n_docs, n_features), or a tensor / DataFrame (see ``output``).
        """
        check_is_fitted(self, "n_features_in_")
        if self.embeddings is None:
            ragged = self._check_ragged(X)
            if ragged.source is None:
                return self._finish(pool(ragged.data.float(), ragged.lengths, self.pooling))
            # The deferred output of a token embedder before this step: pooled as if this
            # step wrapped it (rows from the state store; the token rows are never made).
            emb, docs = ragged.source
            with new_progress(emb, len(docs)) as progress:
                rows = self._pool_rows(emb, docs, len(docs), progress)
            return self._finish(rows, device=emb._device)
        emb = self.embeddings_
        out = None
        progress = None  # one bar for the whole input, made when its size is known
        # A chunk of documents at a time: the token lists of a large input are never all held.
        size = _CHUNK_BATCHES * getattr(emb, "batch_size", 32)  # a stack has no batch size
        try:
            for chunk in document_chunks(X, size):
                if progress is None:
                    progress = new_progress(emb, chunk.total)
                rows = self._pool_rows(emb, emb._documents(chunk), chunk.total, progress)
                if out is None:  # rows of the cache are on the host; computed ones on the device
                    out = (
                        rows
                        if chunk.total == len(rows)
                        else rows.new_empty((chunk.total, rows.shape[1]))
                    )
                if out is not rows:
                    out[chunk.start : chunk.start + len(rows)] = rows
        finally:
            if progress is not None:
                progress.close()
        if out is None:
            out = torch.zeros((0, self.n_features_in_))
        return self._finish(out, device=getattr(emb, "_device", None))

    def _pool_rows(
        self, emb, docs: list[list[str]], total: int, progress: Progress
    ) -> torch.Tensor:
        """The pooled rows of ``docs``, part of an input of ``total`` documents (by which the
        state store judges whether to keep the states), from the embedder's
        ``pool_documents`` (see :meth:`skembed.BaseTokenEmbedder.pool_documents`), counted
        on the call's ``progress`` (handed to the embedder when its method accepts it)."""
        if hasattr(emb, "pool_documents"):
            if takes_progress(emb.pool_documents):
                return emb.pool_documents(docs, self.pooling, n_docs=total, progress=progress)
            rows = emb.pool_documents(docs, self.pooling, n_docs=total)
            progress.update(len(docs))
            return rows
        # An embedder of another kind that only gives token vectors, batch by batch.
        counted = takes_progress(emb.iter_batches)
        kwargs = {"progress": progress} if counted else {}
        if takes_argument(emb.iter_batches, "n_docs"):
            kwargs["n_docs"] = total
        out = torch.zeros((len(docs), self.n_features_in_))
        for index, tensors in emb.iter_batches(docs, **kwargs):
            rows = pool_tensors(tensors, self.pooling)
            out = out.to(rows.device)
            out[torch.as_tensor(index, device=out.device)] = rows
            if not counted:
                progress.update(len(index))
        return out

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """``f"{pooling}_{token feature}"`` for each feature."""
        check_is_fitted(self, "n_features_in_")
        if self.embeddings is not None:
            names = self.embeddings_.get_feature_names_out()
        elif input_features is not None:
            names = input_features
        else:
            names = self.feature_names_in_
        return np.asarray([f"{self.pooling}_{n}" for n in names], dtype=object)


class TransformerDocumentEmbeddings(_DocumentOutput, HFNetwork, NetworkEstimator):
    """Document embeddings pooled directly from a transformer's sub-token states.

    With ``pooling="mean", normalize=True`` and the packaged MiniLM this gives the vectors of
    ``sentence_transformers.SentenceTransformer(...).encode()``.

    Parameters
    ----------
    model : str or path, default="all-MiniLM-L6-v2"
        As for :class:`TransformerEmbeddings`.
    pooling : {"cls", "mean"}, default="cls"
        ``"cls"``: the state of the model's CLS token (the last sub-token for models without
        one, e.g. GPT-2, whose last position has seen the whole text). ``"mean"``: the mean of
        all sub-tokens, special tokens included (as sentence-transformers computes it).
    normalize : bool, default=False
        Scale each vector to unit L2 norm.
    layers : str, int or tuple of int, default="-1"
        Layers to pool, concatenated.
    output : {"numpy", "torch"}, default="numpy"
        See :class:`DocumentPoolEmbeddings`.
    tokenizer, device, batch_size, precision, show_progress_bar
        As for :class:`TransformerEmbeddings`.

    Notes
    -----
    A document longer than the model's maximum length is embedded in overlapping windows; the
    pooled sub-token states are those of :class:`TransformerEmbeddings`, plus the special
    tokens of the first window. Words the tokenizer reduces to nothing (``"\\u200b"``) have no
    sub-tokens to pool: a document of only such words gets the row of the empty text (the
    model run on its special tokens).

    Examples
    --------
    >>> from skembed import TransformerDocumentEmbeddings
    >>> emb = TransformerDocumentEmbeddings(pooling="mean", normalize=True)
    >>> emb.fit_transform(["A sentence.", "Another one."]).shape
    (2, 384)
    """

    _feature_prefix = "doc"

    def __init__(
        self,
        model="all-MiniLM-L6-v2",
        pooling="cls",
        normalize=False,
        layers="-1",
        output="numpy",
        tokenizer=None,
        device="auto",
        batch_size=32,
        precision="float32",
        show_progress_bar=False,
    ):
        store_params(self, locals())

    def _check_params(self, model):
        check_choice("pooling", self.pooling, ("cls", "mean"))
        check_choice("normalize", self.normalize, (True, False))
        check_choice("output", self.output, OUTPUTS)
        parse_layers(self.layers, model.n_layers)

    def _n_features(self, model):
        return len(parse_layers(self.layers, model.n_layers)) * model.hidden_size

    def _pool_states(self, model, states) -> torch.Tensor:
        """One row per document: its states pooled (``pooling``) over the chosen layers."""
        index = torch.tensor(parse_layers(self.layers, model.n_layers), device=states[0].sub.device)
        out = []
        for s in states:
            sub = s.sub.index_select(0, index).float()
            special = s.special.index_select(0, index).float()
            if sub.shape[1] + special.shape[1] == 0:
                vec = torch.zeros(sub.shape[0], sub.shape[2], device=sub.device)
            elif self.pooling == "mean":
                vec = (sub.sum(1) + special.sum(1)) / max(sub.shape[1] + special.shape[1], 1)
            elif model.cls_index is not None:
                vec = special[:, model.cls_index]
            else:
                vec = sub[:, -1] if sub.shape[1] else special[:, -1]
            out.append(vec.reshape(1, -1))
        return torch.cat(out)

    def transform(self, X):
        """One row per document.

        Returns
        -------
        ndarray of shape (n_docs, n_features), or a tensor / DataFrame (see ``output``).
        """
        check_is_fitted(self, "n_features_out_")
        docs = self._documents(X)
        model = self._get_model()
        pooled = torch.zeros((len(docs), self.n_features_out_), device=self._device)
        with new_progress(self, len(docs)) as progress:
            # Empty documents too: their row is the model's output on the special tokens.
            batches = state_batches(self, model, docs, range(len(docs)), progress, skip_empty=False)
            for _, index, states in in_call(model, batches):
                with torch.inference_mode():
                    pooled[torch.as_tensor(index, device=pooled.device)] = self._pool_states(
                        model, states
                    )
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return self._finish(pooled)
