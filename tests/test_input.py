"""Input handling: every accepted form of X, and every input error with its message."""

import numpy as np
import pandas as pd
import pytest

from skembed import check_documents


@pytest.mark.parametrize(
    "X",
    [
        ["a b", "c"],
        ("a b", "c"),
        np.array(["a b", "c"], dtype=object),
        np.array([["a b"], ["c"]], dtype=object),
        pd.Series(["a b", "c"]),
        pd.DataFrame({"text": ["a b", "c"]}),
        [["a", "b"], ["c"]],
        ["a b", ["c"]],
        (d for d in ["a b", "c"]),
    ],
)
def test_accepted_forms(X):
    assert check_documents(X) == [["a", "b"], ["c"]]


def test_callable_tokenizer_and_empty_documents():
    assert check_documents(["a-b", ""], tokenizer=lambda s: s.split("-") if s else []) == [
        ["a", "b"],
        [],
    ]
    assert check_documents(["", "   ", []]) == [[], [], []]
    assert check_documents([]) == []


@pytest.mark.parametrize(
    "X, error, message",
    [
        ("a bare string", TypeError, "single str"),
        (b"bytes", TypeError, "single bytes"),
        (42, TypeError, "iterable of documents"),
        ({"a": 1}, TypeError, "iterable of documents"),
        (["ok", None], ValueError, "Document 1 is missing"),
        (["ok", float("nan")], ValueError, "Document 1 is missing"),
        (pd.Series(["ok", None, "x"]), ValueError, "Document 1 is missing"),
        ([3.5], TypeError, "Document 0 is 3.5"),
        (["ok", "ok", 7], TypeError, "Document 2 is 7"),
        ([b"raw"], TypeError, "Document 0 is bytes"),
        ([["a", 1]], TypeError, "Document 0: token 1 is 1"),
        ([["a", ["b"]]], TypeError, "Document 0: token 1 is a list"),
        ([["a", None]], TypeError, "Document 0: token 1 is None"),
        (pd.DataFrame({"a": ["x"], "b": ["y"]}), ValueError, "exactly one text column"),
        (np.zeros((2, 2, 2)), ValueError, "1-D array"),
    ],
)
def test_errors_name_the_document(X, error, message):
    with pytest.raises(error, match=message):
        check_documents(X)


def test_bad_tokenizer():
    with pytest.raises(ValueError, match="tokenizer must be"):
        check_documents(["a"], tokenizer="spacy")
    with pytest.raises(TypeError, match="Document 0: the tokenizer must return a list"):
        check_documents(["a"], tokenizer=lambda s: 5)
    with pytest.raises(TypeError, match="Document 0: token 0"):
        check_documents(["a"], tokenizer=lambda s: [1])


def test_document_chunks_name_documents_by_their_place_in_the_whole():
    from skembed._input import document_chunks

    X = pd.Series(["a b", "c", "d e f", "g", "boom", "h"], index=list("uvwxyz"))
    chunks = list(document_chunks(X, 4))
    assert [(c.start, len(c), c.total) for c in chunks] == [(0, 4, 6), (4, 2, 6)]
    assert check_documents(chunks[1]) == [["boom"], ["h"]]

    def tokenizer(text):
        if text == "boom":
            raise RuntimeError("cannot split")
        return text.split()

    with pytest.raises(ValueError, match=r"Document 4 \(index label 'y'\): the tokenizer failed"):
        check_documents(chunks[1], tokenizer)
    # The kind of every document is checked before the first chunk comes out.
    with pytest.raises(ValueError, match=r"Document 5 \(index label 'z'\) is missing"):
        next(document_chunks(pd.Series(["a", "b", "c", "d", "e", None], index=list("uvwxyz")), 2))
    with pytest.raises(TypeError, match="Document 3: token 1 is 2"):
        next(document_chunks(["a", "b", ["c"], ["d", 2]], 2))
