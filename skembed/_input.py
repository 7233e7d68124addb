"""Turn ``X`` into a list of token lists. Every input error of skembed is raised here."""

from __future__ import annotations

import functools
import math
import numbers
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

Tokenizer = Callable[[str], Sequence[str]]


def whitespace_tokenizer(text: str) -> list[str]:
    """Split ``text`` on runs of whitespace (the default tokenizer).

    Examples
    --------
    >>> whitespace_tokenizer("a  b\\tc")
    ['a', 'b', 'c']
    """
    return text.split()


def resolve_tokenizer(tokenizer) -> Tokenizer:
    """Return the callable for a ``tokenizer`` parameter (``None``/``"whitespace"`` or a callable)."""
    if tokenizer is None or tokenizer == "whitespace":
        return whitespace_tokenizer
    if callable(tokenizer):
        return tokenizer
    raise ValueError(
        f"tokenizer must be None, 'whitespace' or a callable str -> list[str]; got {tokenizer!r}."
    )


def _show(value, limit: int = 60) -> str:
    """A short, plain rendering of an offending value for error messages."""
    if isinstance(value, numbers.Number) and not isinstance(value, bool | np.bool_):
        text = str(value)  # 2.5, not np.float64(2.5)
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + " ...)"


def _is_missing(doc) -> bool:
    if doc is None:
        return True
    if isinstance(doc, numbers.Real) and not isinstance(doc, bool | np.bool_):
        return isinstance(doc, float | np.floating) and math.isnan(doc)
    try:
        import pandas as pd

        return doc is pd.NA or doc is pd.NaT
    except ImportError:  # pragma: no cover
        return False


def is_default_index(index) -> bool:
    """Whether a pandas index is the default ``0..n-1`` (then positions say it all)."""
    import pandas as pd

    return isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1


def _labels(index) -> list | None:
    """A pandas index's labels, unless it is the default 0..n-1."""
    return None if is_default_index(index) else list(index)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def replace_lone_surrogates(text: str) -> str:
    """``text`` with each lone surrogate (not valid Unicode: tokenizers, Arrow strings and
    Parquet refuse it) read as U+FFFD, as decoding with ``errors="replace"`` would give.

    Examples
    --------
    >>> replace_lone_surrogates("a" + chr(0xD800))
    'a\ufffd'
    """
    return _LONE_SURROGATE.sub("\ufffd", text)


def _documents_of(X) -> tuple[Sequence, list | None]:
    """The documents in ``X`` (list, tuple, 1-D array, Series, one-column frame), and the
    pandas index labels of a Series or frame whose index is not the default one."""
    if isinstance(X, DocumentChunk):
        return X.docs, X.labels
    if isinstance(X, str | bytes):
        raise TypeError(
            "Expected an iterable of documents (a list of strings or of token lists), "
            f"got a single {type(X).__name__}: wrap it in a list, e.g. [{X[:30]!r}]."
        )
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if pd is not None:
        if isinstance(X, pd.DataFrame):
            if X.shape[1] != 1:
                raise ValueError(
                    f"Expected a DataFrame with exactly one text column, got {X.shape[1]} "
                    f"columns {list(X.columns)[:5]}: select the text column, e.g. df['text']."
                )
            return X.iloc[:, 0].tolist(), _labels(X.index)
        if isinstance(X, pd.Series):
            return X.tolist(), _labels(X.index)
    if isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] == 1:
            return list(X[:, 0]), None
        if X.ndim != 1:
            raise ValueError(
                f"Expected a 1-D array of documents or one column, got an array of shape {X.shape}."
            )
        return list(X), None
    if isinstance(X, list | tuple):
        return X, None
    if isinstance(X, dict) or not isinstance(X, Iterable):
        raise TypeError(
            "Expected an iterable of documents (list, tuple, numpy array, pandas Series or "
            f"one-column DataFrame), got {type(X).__name__}."
        )
    return list(X), None


def read_once(X):
    """``X``, or its documents in a list when ``X`` can be read only once (a generator, a map,
    an open file: any iterator), so that ``fit_transform`` reads the same documents in ``fit``
    and in ``transform``.

    Examples
    --------
    >>> read_once(doc for doc in ["a b", "c"])
    ['a b', 'c']
    """
    return list(X) if isinstance(X, Iterator) else X


def check_tokens(tokens, where) -> list[str]:
    """Validate one pre-tokenized document; ``where`` names it in errors ("Document 3"), or is
    a callable that returns that name (built only when there is an error)."""
    out = list(tokens)
    if all(map(str.__instancecheck__, out)):  # the usual case, checked at C speed
        return out
    if callable(where):
        where = where()
    for j, tok in enumerate(out):
        if not isinstance(tok, str):
            if isinstance(tok, list | tuple | np.ndarray):
                raise TypeError(
                    f"{where}: token {j} is a {type(tok).__name__}; a document is a "
                    "string or a flat list of token strings (nested lists are not allowed)."
                )
            raise TypeError(
                f"{where}: token {j} is {_show(tok)} of type {type(tok).__name__}; "
                "tokens must be strings."
            )
    return out


def _one_token_with_spaces(doc) -> bool:
    """Whether ``doc`` is a list (tuple, array) of one token string holding several words."""
    if isinstance(doc, str) or not isinstance(doc, list | tuple | np.ndarray) or len(doc) != 1:
        return False
    token = doc[0]
    return isinstance(token, str) and len(token.split(maxsplit=1)) > 1


def warn_one_token_documents(docs: Sequence) -> None:
    """Warn when every document is a list of one token holding whitespace, as
    ``df[["text"]].values.tolist()`` gives: each text would be embedded as one token.
    Cheap: it stops at the first document that is not such a list."""
    if len(docs) and all(map(_one_token_with_spaces, docs)):
        warnings.warn(
            f"Every document is a list of one token that contains whitespace (e.g. "
            f"{_show(list(docs[0]))}), so each text is embedded as a single token. This is "
            "what df[['text']].values.tolist() gives. Pass the texts as strings instead: "
            "df['text'], a list of strings, or a 2-D numpy array of one column "
            "(df[['text']].to_numpy()); or split them into tokens first.",
            UserWarning,
            stacklevel=_outside_skembed(),
        )


def _outside_skembed() -> int:
    """The ``stacklevel`` of the first caller outside skembed (and scikit-learn, whose
    wrappers call it), for a warning issued by the function calling this one: the warning
    then names the user's line."""
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] in (
        "skembed",
        "sklearn",
    ):
        frame, level = frame.f_back, level + 1
    return level


def check_documents(X, tokenizer=None) -> list[list[str]]:
    """Validate ``X`` and return one list of token strings per document.

    Parameters
    ----------
    X : list, tuple, numpy array, pandas Series or one-column DataFrame
        Documents, each a string (split by ``tokenizer``) or a list of token strings.
    tokenizer : None, "whitespace" or callable, default=None
        How string documents are split into tokens.

    Returns
    -------
    list of list of str

    Raises
    ------
    TypeError, ValueError
        Naming the offending document's index and what is wrong with it.

    Examples
    --------
    >>> check_documents(["a b", ["c", "d"], ""])
    [['a', 'b'], ['c', 'd'], []]
    """
    split = resolve_tokenizer(tokenizer)
    docs, labels = _documents_of(X)
    if split is whitespace_tokenizer and all(map(str.__instancecheck__, docs)):
        return list(map(str.split, docs))  # the usual case, at C speed: lists of strings
    if isinstance(X, DocumentChunk):  # document_chunks warned about the whole input
        start = X.start
    else:
        start = 0
        warn_one_token_documents(docs)
    out: list[list[str]] = []
    for i, doc in enumerate(docs):
        where = functools.partial(_where, i, labels, start)
        if not isinstance(doc, str):
            _check_kind(doc, where)  # a list of token strings, or it raises
            out.append(list(doc))
            continue
        try:
            tokens = split(doc)
        except Exception as exc:
            raise ValueError(f"{where()}: the tokenizer failed: {exc}") from exc
        if type(tokens) is not list and (
            isinstance(tokens, str) or not isinstance(tokens, Iterable)
        ):
            raise TypeError(
                f"{where()}: the tokenizer must return a list of strings, "
                f"got {type(tokens).__name__}."
            )
        out.append(check_tokens(tokens, where))
    return out


def _check_kind(doc, where) -> None:
    """Raise the error for a document that is neither a string nor a list of token strings."""
    if isinstance(doc, str):
        return
    if _is_missing(doc):
        raise ValueError(
            f"{where()} is missing ({_show(doc)}); fill or drop missing texts "
            "first, e.g. X.fillna('') or X.dropna()."
        )
    if isinstance(doc, bytes | bytearray):
        raise TypeError(f"{where()} is bytes; decode it first, e.g. doc.decode('utf-8').")
    if isinstance(doc, np.ndarray) and doc.ndim != 1:
        raise TypeError(
            f"{where()} is a {doc.ndim}-d numpy array of shape {doc.shape}; a document is a "
            "string or a flat list (or 1-D array) of token strings"
            + (", e.g. doc.item() for a 0-d array holding a string." if doc.ndim == 0 else ".")
        )
    if not isinstance(doc, list | tuple | np.ndarray):
        raise TypeError(
            f"{where()} is {_show(doc)} of type {type(doc).__name__}; a document "
            "must be a string or a list of token strings."
        )
    if not all(map(str.__instancecheck__, doc)):
        check_tokens(doc, where)  # raises, naming the token


class DocumentChunk:
    """Documents ``start, start + 1, ...`` of a larger input: validated by
    :func:`check_documents` like any input, with errors naming their place in the whole."""

    def __init__(self, docs: list, labels: list | None, start: int, total: int):
        self.docs, self.labels, self.start, self.total = docs, labels, start, total

    def __len__(self) -> int:
        return len(self.docs)


def document_chunks(X, size: int) -> Iterator[DocumentChunk]:
    """``X`` in chunks of at most ``size`` documents, to be validated (tokenized) one at a
    time so that the token lists of a large input are never all held.

    The kind of every document (string, token list, missing...) is checked first, so that
    these errors come before any work; tokenizer failures come with their chunk.

    Examples
    --------
    >>> [len(c) for c in document_chunks(["a", "b c", ["d"]], 2)]
    [2, 1]
    """
    docs, labels = _documents_of(X)
    for i, doc in enumerate(docs):
        if not isinstance(doc, str):
            _check_kind(doc, functools.partial(_where, i, labels))
    warn_one_token_documents(docs)
    for start in range(0, len(docs), size):
        part = labels[start : start + size] if labels is not None else None
        yield DocumentChunk(docs[start : start + size], part, start, len(docs))


def validate_documents(X, tokenizer=None, size: int = 4096) -> None:
    """Raise what :func:`check_documents` would raise for ``X``, keeping no token lists: a
    chunk of ``size`` documents at a time (see :func:`document_chunks`). Strings that the
    default tokenizer splits cannot fail, and are not split.

    Examples
    --------
    >>> validate_documents(["a b", ["c"]])
    >>> validate_documents(["a", ["b", 1]])
    Traceback (most recent call last):
    ...
    TypeError: Document 1: token 1 is 1 of type int; tokens must be strings.
    """
    plain = resolve_tokenizer(tokenizer) is whitespace_tokenizer
    for chunk in document_chunks(X, size):
        if not (plain and all(map(str.__instancecheck__, chunk.docs))):
            check_documents(chunk, tokenizer)


def _where(i: int, labels: list | None, start: int = 0) -> str:
    """How errors name document ``i`` of a chunk that starts at ``start`` of the input: its
    position in the input, and its pandas label when that differs."""
    if labels is None:
        return f"Document {start + i}"
    return f"Document {start + i} (index label {_show(labels[i])})"
