"""StackedEmbeddings: several token embedders side by side, one concatenated vector per token."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from sklearn.pipeline import _name_estimators
from sklearn.utils import Bunch
from sklearn.utils.metaestimators import _BaseComposition
from sklearn.utils.validation import check_is_fitted

from ._batching import Progress, call_progress, shows_progress, takes_argument, takes_progress
from ._estimator import RaggedOutput, TextTransformerMixin
from ._input import check_documents, resolve_tokenizer
from .ragged import RaggedEmbeddings, labelled

_CHUNK = 256  # documents per step of iter_batches; each member batches inside a step


def _is_pair(item) -> bool:
    return isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)


class StackedEmbeddings(
    RaggedOutput, TextTransformerMixin, _BaseComposition, auto_wrap_output_keys=None
):
    """Concatenate the token vectors of several embedders, as ``FeatureUnion`` does for features.

    Parameters
    ----------
    embeddings : list of embedders, or list of ``(name, embedder)`` pairs
        Token embedders (each returns :class:`RaggedEmbeddings`). Unnamed members are named as
        :func:`sklearn.pipeline.make_union` names them (the lower-cased class name, numbered
        when repeated). A member set to ``"drop"`` is left out. Members' parameters are reached
        as ``<name>__<param>`` through ``get_params``/``set_params``, e.g. in ``GridSearchCV``.
    tokenizer : None, "whitespace" or callable, default=None
        How string documents are split. With None, each member splits them with its own
        ``tokenizer`` and they must agree (an error names the first member and document that
        differ). Otherwise the stack splits once and every member receives the token lists.

    Notes
    -----
    A call shows one progress bar over its documents when any member has
    ``show_progress_bar=True``; each member advances it by its share of each document.

    Attributes
    ----------
    n_features_out_ : int
        Sum of the members' vector sizes.
    named_embeddings : Bunch
        The members by name.

    Examples
    --------
    >>> import os, tempfile
    >>> from skembed import StackedEmbeddings, WordEmbeddings
    >>> folder = tempfile.mkdtemp()
    >>> for name, text in [("a.txt", "cat 1 0\\n"), ("b.txt", "cat 0 0 7\\n")]:
    ...     with open(os.path.join(folder, name), "w") as f:
    ...         _ = f.write(text)
    >>> stack = StackedEmbeddings([
    ...     ("a", WordEmbeddings(os.path.join(folder, "a.txt"), device="cpu")),
    ...     ("b", WordEmbeddings(os.path.join(folder, "b.txt"), device="cpu")),
    ... ]).fit()
    >>> stack.transform(["cat dog"])[0]
    array([[1., 0., 0., 0., 7.],
           [0., 0., 0., 0., 0.]], dtype=float32)
    >>> list(stack.get_feature_names_out()[:3])
    ['a__word_0', 'a__word_1', 'b__word_0']
    >>> stack.set_params(b="drop").fit().n_features_out_
    2
    """

    def __init__(self, embeddings, tokenizer=None):
        self.embeddings = embeddings
        self.tokenizer = tokenizer

    # -- named members (the machinery of sklearn's FeatureUnion) ---------------------
    @property
    def _embeddings(self) -> list[tuple[str, object]]:
        items = list(self.embeddings) if isinstance(self.embeddings, list | tuple) else []
        if items and all(_is_pair(item) for item in items):
            return items
        if any(_is_pair(item) for item in items):
            return []  # mixed: reported by _check_members
        return _name_estimators(items)

    @_embeddings.setter
    def _embeddings(self, pairs) -> None:
        # Replacing one member stores explicit pairs, so the other members keep their names.
        self.embeddings = list(pairs)

    def get_params(self, deep: bool = True) -> dict:
        """Parameters of the stack and, with ``deep``, of each member as ``<name>__<param>``."""
        return self._get_params("_embeddings", deep=deep)

    def set_params(self, **params):
        """Set parameters, replace a member by name (``glove=...``, ``glove="drop"``), or set a
        member's parameter (``glove__embeddings="crawl"``)."""
        self._set_params("_embeddings", **params)
        return self

    @property
    def named_embeddings(self) -> Bunch:
        """The members by name (``"drop"`` included)."""
        return Bunch(**dict(self._embeddings))

    def _active(self) -> list[tuple[str, object]]:
        return [(n, e) for n, e in self._embeddings if not (isinstance(e, str) and e == "drop")]

    def _check_members(self) -> None:
        if not isinstance(self.embeddings, list | tuple) or not self.embeddings:
            raise ValueError(
                "embeddings must be a non-empty list of token embedders or of (name, embedder) "
                f"pairs, got {self.embeddings!r}."
            )
        if not self._embeddings:
            raise ValueError(
                "embeddings mixes (name, embedder) pairs and bare embedders; use one form."
            )
        names, members = zip(*self._embeddings)
        self._validate_names(names)
        self._check_estimators_are_instances(members)
        for name, member in zip(names, members):
            if isinstance(member, str):
                if member != "drop":
                    raise ValueError(f"Member {name!r} is {member!r}; only 'drop' is accepted.")
            elif not hasattr(member, "transform"):
                raise TypeError(
                    f"Member {name!r} ({type(member).__name__}) is not a token embedder: it "
                    "has no transform method."
                )
        if not self._active():
            raise ValueError("Every member is 'drop': a stack needs at least one embedder.")
        resolve_tokenizer(self.tokenizer)

    # -- tokens --------------------------------------------------------------------
    def _documents(self, X) -> list[list[str]]:
        """Token lists of ``X``: the stack's split, or the members' (which must agree)."""
        if self.tokenizer is not None:
            return check_documents(X, self.tokenizer)
        docs, first = None, None
        for name, member in self._active():
            split = (
                member._documents(X)
                if hasattr(member, "_documents")
                else check_documents(X, getattr(member, "tokenizer", None))
            )
            if docs is None:
                docs, first = split, name
                continue
            for i, (a, b) in enumerate(zip(docs, split)):
                if a != b:
                    raise ValueError(
                        f"Member {name!r} splits document {i} into {len(b)} tokens {b[:8]} but "
                        f"member {first!r} into {len(a)} tokens {a[:8]}. Give the members the "
                        "same tokenizer, or set StackedEmbeddings(tokenizer=...) to split once "
                        "for all of them."
                    )
        return docs

    # -- estimator API -------------------------------------------------------------
    def fit(self, X=None, y=None):
        """Fit every member (in place, as ``FeatureUnion`` does).

        Parameters
        ----------
        X : documents, optional
            Split once (see ``tokenizer``) and passed to the members as token lists.
        y : array-like, optional
            Passed to every member's ``fit`` (members that learn, such as a trainable
            ``CharacterEmbeddings``, use it; the others ignore it).

        Returns
        -------
        self
        """
        self._check_members()
        docs = self._documents(X) if X is not None else None
        for _, member in self._active():
            member.fit(docs, y)
        self.n_features_out_ = int(sum(m.n_features_out_ for _, m in self._active()))
        return self

    def transform(self, X) -> RaggedEmbeddings:
        """Embed every token with every member and concatenate, in the members' order.

        Returns
        -------
        RaggedEmbeddings
            One ``(n_tokens_i, n_features_out_)`` block per document, on the first member's
            device.
        """
        check_is_fitted(self, "n_features_out_")
        return labelled(self.embed_documents(self._documents(X)), X)

    def _shows_progress(self) -> bool:
        """A stack shows a bar when any member does (see ``skembed._batching.shows_progress``)."""
        return any(shows_progress(member) for _, member in self._active())

    def embed_documents(
        self,
        docs: list[list[str]],
        n_docs: int | None = None,
        progress: Progress | None = None,
    ) -> RaggedEmbeddings:
        """Embed already split documents with every member and concatenate per token (the
        members' ``embed_documents(docs)``: what a user-written member implements).
        ``n_docs`` (the documents of the whole call, when ``docs`` is a chunk of it) and
        ``progress`` (the call's bar, see :meth:`skembed.BaseTokenEmbedder.embed_documents`)
        are handed to each member whose ``embed_documents`` accepts them, the bar as the
        member's share; a member without ``n_docs`` judges what to keep by ``docs``, one
        without ``progress`` is counted when it returns."""
        check_is_fitted(self, "n_features_out_")
        with call_progress(progress, self, len(docs)) as progress:
            return self._embed_documents(docs, n_docs, progress)

    def _embed_documents(
        self, docs: list[list[str]], n_docs: int | None, progress: Progress
    ) -> RaggedEmbeddings:
        lengths = np.asarray([len(d) for d in docs], dtype=np.int64)
        parts = []
        active = self._active()
        for (name, member), share in zip(active, progress.shares(len(docs), len(active))):
            if not hasattr(member, "embed_documents"):
                out = member.transform(docs)
            else:
                method = member.embed_documents
                kwargs = {"progress": share} if takes_progress(method) else {}
                if n_docs is not None and takes_argument(method, "n_docs"):
                    kwargs["n_docs"] = n_docs
                out = method(docs, **kwargs)
            share.finish()
            if not isinstance(out, RaggedEmbeddings):
                raise TypeError(
                    f"Member {name!r} returned {type(out).__name__}; a stack member must be a "
                    "token embedder returning RaggedEmbeddings."
                )
            if len(out) != len(docs) or not np.array_equal(out.lengths, lengths):
                got = np.zeros(len(docs), dtype=np.int64)
                got[: min(len(out), len(docs))] = out.lengths[: len(docs)]
                bad = int(np.flatnonzero(got != lengths)[0]) if (got != lengths).any() else 0
                raise ValueError(
                    f"Member {name!r} returned {got[bad]} vectors for document {bad}, which has "
                    f"{lengths[bad]} tokens: the members disagree on the tokens."
                )
            parts.append(out.data)
        device = parts[0].device
        data = torch.cat([p.to(device).float() for p in parts], dim=1)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        return RaggedEmbeddings(data, offsets, docs, self.get_feature_names_out())

    def iter_batches(
        self,
        docs: list[list[str]],
        n_docs: int | None = None,
        progress: Progress | None = None,
    ) -> Iterator[tuple[list[int], list[torch.Tensor]]]:
        """Yield ``(document indices, token tensors)`` a few hundred documents at a time."""
        with call_progress(progress, self, len(docs)) as progress:
            for start in range(0, len(docs), _CHUNK):
                index = list(range(start, min(start + _CHUNK, len(docs))))
                part = [docs[i] for i in index]
                out = self.embed_documents(part, n_docs=n_docs or len(docs), progress=progress)
                yield index, out.split()

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """``f"{name}__{feature}"`` for each member's features, in order."""
        check_is_fitted(self, "n_features_out_")
        names = [
            f"{name}__{feature}"
            for name, member in self._active()
            for feature in member.get_feature_names_out()
        ]
        return np.asarray(names, dtype=object)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "n_features_out_")
