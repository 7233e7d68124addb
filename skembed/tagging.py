"""Token-level learning: pair token vectors with per-token labels, and split predictions back."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .ragged import RaggedEmbeddings


def _label_lists(y, n_docs: int) -> list[list]:
    try:
        import pandas as pd

        if isinstance(y, pd.Series | pd.DataFrame):
            y = y.squeeze(axis=1).tolist() if isinstance(y, pd.DataFrame) else y.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(y, str) or not isinstance(y, Sequence | np.ndarray):
        raise TypeError(
            f"y must be a list with one list of labels per document, got {type(y).__name__}."
        )
    if len(y) != n_docs:
        raise ValueError(f"y has labels for {len(y)} documents, but there are {n_docs}.")
    out = []
    for i, labels in enumerate(y):
        if isinstance(labels, str) or not isinstance(labels, Sequence | np.ndarray):
            raise TypeError(
                f"y[{i}] is {labels!r}; each document needs a list of labels, one per token."
            )
        out.append(list(labels))
    return out


def token_xy(embeddings: RaggedEmbeddings, y=None, *, as_frame: bool = False):
    """Token vectors and their labels, one row per token, for any scikit-learn classifier.

    Parameters
    ----------
    embeddings : RaggedEmbeddings
        What a token embedder's ``transform`` returned for the documents.
    y : list of lists, optional
        One label per token of each document (e.g. part-of-speech tags). A pandas Series of
        lists works too.
    as_frame : bool, default=False
        Return a DataFrame (index ``(doc, position)``, one column per feature) and a Series
        with the same index, instead of numpy arrays.

    Returns
    -------
    X_tokens : ndarray of shape (total_tokens, n_features) or DataFrame
    y_tokens : ndarray of shape (total_tokens,) or Series
        Only when ``y`` is given.

    Raises
    ------
    ValueError
        When a document has a different number of labels than tokens (naming the document).

    Examples
    --------
    >>> import torch
    >>> from skembed import RaggedEmbeddings
    >>> r = RaggedEmbeddings.from_list([torch.ones(2, 3), torch.zeros(1, 3)], [["a", "b"], ["c"]])
    >>> X_tok, y_tok = token_xy(r, [["DT", "NN"], ["VB"]])
    >>> X_tok.shape, y_tok.tolist()
    ((3, 3), ['DT', 'NN', 'VB'])
    """
    if not isinstance(embeddings, RaggedEmbeddings):
        raise TypeError(
            "embeddings must be the RaggedEmbeddings returned by a token embedder's transform, "
            f"got {type(embeddings).__name__}."
        )
    if as_frame:
        X = embeddings.to_frame().drop(columns="token")
    else:
        X = embeddings.to_numpy()
    if y is None:
        return X
    labels = _label_lists(y, len(embeddings))
    for i, (doc_labels, tokens) in enumerate(zip(labels, embeddings.tokens)):
        if len(doc_labels) != len(tokens):
            raise ValueError(
                f"Document {i} has {len(tokens)} tokens {tokens[:8]} but {len(doc_labels)} "
                "labels: give one label per token (check that y was split like the text)."
            )
    flat = np.asarray([label for doc_labels in labels for label in doc_labels])
    if as_frame:
        import pandas as pd

        return X, pd.Series(flat, index=X.index, name="label")
    return X, flat


def split_tokens(values, embeddings: RaggedEmbeddings) -> list[list]:
    """Split per-token values (e.g. a classifier's predictions) back into one list per document.

    Parameters
    ----------
    values : array-like of shape (total_tokens, ...)
        One value per token, in the order of :func:`token_xy`.
    embeddings : RaggedEmbeddings
        The embeddings the values were computed from.

    Returns
    -------
    list of list

    Examples
    --------
    >>> import torch
    >>> from skembed import RaggedEmbeddings
    >>> r = RaggedEmbeddings.from_list([torch.ones(2, 3), torch.zeros(1, 3)], [["a", "b"], ["c"]])
    >>> split_tokens(["DT", "NN", "VB"], r)
    [['DT', 'NN'], ['VB']]
    """
    values = np.asarray(values)
    if len(values) != embeddings.offsets[-1]:
        raise ValueError(
            f"Got {len(values)} values for {embeddings.offsets[-1]} tokens in "
            f"{len(embeddings)} documents."
        )
    bounds = embeddings.offsets
    return [values[s:e].tolist() for s, e in zip(bounds[:-1], bounds[1:])]
