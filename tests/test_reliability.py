"""Bad and odd input through every public embedder and pooler (see docs/input.md).

Every case either works (one row per token or per document, nothing lost, no NaN or inf) or
raises ValueError/TypeError naming the document and the problem. Unknown parameter values
fail in ``fit`` with the valid choices.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from tiny_embedders import ALL, EMBEDDERS, build_files, is_pooler, make, rows

import skembed

REFERENCE = "the cat sat on the mat"  # appended to every working case: it must not change


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return build_files(tmp_path_factory.mktemp("reliability"))


@pytest.fixture(scope="module")
def fitted(files, tiny_model):
    """``fitted(name)`` -> the fitted estimator and the reference document's vectors alone."""
    built = {}

    def get(name):
        if name not in built:
            est = make(name, files, tiny_model).fit([REFERENCE])
            built[name] = (est, rows(est.transform([REFERENCE]))[0])
        return built[name]

    return get


def check_output(name, est, out, X, n_tokens, reference):
    """One block (or row) per document, the right counts, finite, and the reference intact."""
    got = rows(out)
    assert len(got) == len(X)
    if is_pooler(name):
        assert np.asarray(out).ndim == 2
    else:
        assert isinstance(out, skembed.RaggedEmbeddings)
        assert [len(r) for r in got] == n_tokens
        assert all(r.shape[1] == est.n_features_out_ for r in got)
    for i, r in enumerate(got):
        assert np.isfinite(r).all(), f"document {i} has NaN or inf"
    np.testing.assert_allclose(got[-1], reference, atol=1e-5, rtol=0)


# X (the reference document is appended), tokens per document (without the reference)
WORKING = {
    "empty X": ([], []),
    "empty documents": (["", [], ()], [0, 0, 0]),
    "whitespace only": (["  \t\n\u3000\u2003 "], [0]),
    "control characters": (["a\x00b \x07 c\x1b[0m \x7f"], [4]),
    "zero-width characters": (["a\u200bb \u200b \ufeff \u200d\u2060"], [4]),
    "lone surrogates": (["a \ud800 b\udcff", ["x\udc80", "\ud83d"]], [3, 2]),
    "emoji": (["I \u2764\ufe0f \U0001f40d \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f1e9\U0001f1ea"], [5]),
    "right-to-left": (["\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd", "\u0645\u0631\u062d\u0628\u0627 \u202eabc\u202c 12"], [2, 3]),
    "mixed strings and token lists": (["the cat", ["the", "cat"], ("a",), np.array(["x", "y"], dtype=object)], [2, 2, 1, 2]),
    "odd tokens in a token list": ([["New York", " ", "", "\t\n"]], [4]),
}  # fmt: skip

# X, error type, message (each names the document, or says what X should be)
FAILING = {
    "bare string": ("the cat", TypeError, r"got a single str: wrap it in a list"),
    "None": ([REFERENCE, None], ValueError, r"Document 1 is missing \(None\)"),
    "NaN": ([REFERENCE, float("nan")], ValueError, r"Document 1 is missing \(nan\)"),
    "pandas NA": (pd.Series([REFERENCE, pd.NA]), ValueError, r"Document 1 is missing"),
    "filtered pandas rows": (
        pd.DataFrame({"text": [REFERENCE, None]}, index=[7, 9]),
        ValueError,
        r"Document 1 \(index label 9\) is missing",
    ),
    "number": ([REFERENCE, 3], TypeError, r"Document 1 is 3 of type int"),
    "numpy number": ([np.float64(2.5)], TypeError, r"Document 0 is 2.5"),
    "bytes": ([REFERENCE, b"the cat"], TypeError, r"Document 1 is bytes; decode it first"),
    "non-string token": ([["the", 7]], TypeError, r"Document 0: token 1 is 7 of type int"),
    "None token": ([["the"], ["cat", None]], TypeError, r"Document 1: token 1 is None"),
    "nested too deep": ([["the"], [["cat"]]], TypeError, r"Document 1: token 0 is a list"),
    "dict document": ([{"text": "a"}], TypeError, r"Document 0 is \{'text': 'a'\} of type dict"),
    "dict X": ({"text": "a"}, TypeError, r"Expected an iterable of documents"),
    "0-d array document": ([REFERENCE, np.array("the cat")], TypeError, r"Document 1 is a 0-d numpy array"),
    "2-D array document": ([np.array([["a", "b"]], dtype=object)], TypeError, r"Document 0 is a 2-d numpy array of shape \(1, 2\)"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(WORKING))
@pytest.mark.parametrize("name", list(ALL))
def test_odd_input_works(name, case, fitted):
    est, reference = fitted(name)
    X, n_tokens = WORKING[case]
    X = [*X, REFERENCE]
    check_output(name, est, est.transform(X), X, [*n_tokens, 6], reference)


@pytest.mark.parametrize("case", list(FAILING))
@pytest.mark.parametrize("name", list(ALL))
def test_bad_input_names_the_document(name, case, fitted, files, tiny_model):
    est, _ = fitted(name)
    X, error, message = FAILING[case]
    with pytest.raises(error, match=message):
        est.transform(X)
    with pytest.raises(error, match=message):
        make(name, files, tiny_model).fit(X)


@pytest.mark.parametrize("name", list(ALL))
def test_fit_transform_reads_a_generator_once(name, files, tiny_model):
    """fit and transform read the same documents: one row (block) per document, the same as
    from a list, bit for bit."""
    X = ["the cat sat", "", REFERENCE]
    expected = rows(make(name, files, tiny_model).fit_transform(X))
    for once in ((doc for doc in X), iter(X), map(str, X)):
        got = rows(make(name, files, tiny_model).fit_transform(once))
        assert len(got) == len(X)
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", list(EMBEDDERS))
def test_lone_surrogates_in_token_frames(name, fitted):
    """to_frame() and Dask's token-level output hold a lone surrogate (which Arrow strings
    refuse) as U+FFFD in the token column; the vectors are those of the tokens as given."""
    from skembed.dask import embed_partition

    est, reference = fitted(name)
    X = pd.Series(["a \ud800 b\udcff", REFERENCE], index=[5, 9], dtype=object)
    out = est.transform(X)
    shown = ["a", "\ufffd", "b\ufffd", *REFERENCE.split()]
    frame = out.to_frame()
    assert frame["token"].tolist() == shown
    np.testing.assert_array_equal(frame.drop(columns="token").to_numpy(), out.to_numpy())
    part = embed_partition(X, est)
    assert part.index.tolist() == [5, 5, 5, *[9] * 6]
    assert part["token"].tolist() == shown
    np.testing.assert_array_equal(part.iloc[:, 2:].to_numpy(), out.to_numpy())
    np.testing.assert_allclose(out[1], reference, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def big_token() -> str:
    """One megabyte of random lower-case letters: a pasted blob, not a word."""
    rng = np.random.default_rng(0)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    return rng.choice(letters, 1_000_000).tobytes().decode("ascii")


@pytest.mark.parametrize("name", list(ALL))
def test_one_megabyte_token(name, fitted, big_token):
    est, reference = fitted(name)
    X = [["the", big_token, "cat"], "a " + big_token[:1000], REFERENCE]
    check_output(name, est, est.transform(X), X, [3, 2, 6], reference)


@pytest.mark.parametrize("name", list(ALL))
def test_twenty_thousand_token_document(name, fitted):
    est, reference = fitted(name)
    words = "the cat sat on the mat , Berlin unbelievable 12345 !".split()
    long_doc = [words[i % len(words)] for i in range(20_000)]
    X = [long_doc, REFERENCE]
    out = est.transform(X)
    check_output(name, est, out, X, [20_000, 6], reference)
    if not is_pooler(name):
        # Far from any window edge, a repeated context gives (nearly) repeated vectors: the
        # long document was not cut off or padded with garbage at its end.
        assert np.abs(rows(out)[0][-1]).sum() > 0


def test_documented_table_matches(fitted):
    """docs/input.md lists exactly the cases tested here."""
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "input.md").read_text(encoding="utf-8")
    for case in [*WORKING, *FAILING, "1 MB token", "20,000-token document"]:
        assert f"| {case} |" in text, case


# -- unknown parameter values fail in fit, listing the valid choices ---------------------
HF = [n for n, family in EMBEDDERS.items() if family]
BAD_PARAMS = [
    *[(n, {"layers": "7"}, r"layer 7 does not exist .* use integers from -3 to 2") for n in HF],
    *[(n, {"pooling_operation": "median"}, r"choose one of \['first', 'last', 'first_last', 'mean'\]")
      for n in HF],
    *[(n, {"use_scalar_mix": "yes"}, r"choose one of \[True, False\]") for n in HF],
    ("TransformerEmbeddings", {"use_scalar_mix": 1}, r"use_scalar_mix=1 is not valid; choose one of \[True, False\]"),
    ("TransformerDocumentEmbeddings", {"normalize": 0}, r"normalize=0 is not valid; choose one of \[True, False\]"),
    ("DocumentPoolEmbeddings", {"pooling": np.array(["mean", "max"])}, r"choose one of \['mean', 'max', 'min'\]"),
    ("TransformerXLEmbeddings", {"layers": "7"}, r"layer 7 does not exist .* use integers from"),
    ("TransformerXLEmbeddings", {"use_scalar_mix": "yes"}, r"choose one of \[True, False\]"),
    ("ELMoEmbeddings", {"embedding_mode": "median"}, r"choose one of \['all', 'top', 'average'\]"),
    ("FlairEmbeddings", {"with_whitespace": "yes"}, r"must be True or False"),
    ("FlairEmbeddings", {"chars_per_chunk": 0}, r"positive integer"),
    ("PooledFlairEmbeddings", {"pooling": "median"}, r"choose one of \['min', 'max', 'mean', 'fade'\]"),
    ("CharacterEmbeddings", {"hidden_size_char": 0}, r"hidden_size_char must be a positive integer"),
    ("StackedEmbeddings", {"tokenizer": "spacy"}, r"tokenizer must be None, 'whitespace' or a callable"),
    ("StackedEmbeddings", {"word__device": "gpu"}, r"device='gpu' is not valid; choose one of 'auto', 'cpu'"),
    ("DocumentPoolEmbeddings", {"pooling": "median"}, r"choose one of \['mean', 'max', 'min'\]"),
    ("DocumentPoolEmbeddings", {"embeddings__layers": "7"}, r"layer 7 does not exist"),
    ("DocumentPoolEmbeddings", {"output": "cupy"}, r"choose one of \['numpy', 'torch'\]"),
    ("DocumentPoolEmbeddings-pipeline", {"documentpoolembeddings__pooling": "median"},
     r"choose one of \['mean', 'max', 'min'\]"),
    ("TransformerDocumentEmbeddings", {"pooling": "median"}, r"choose one of \['cls', 'mean'\]"),
    ("TransformerDocumentEmbeddings", {"layers": "7"}, r"layer 7 does not exist"),
]  # fmt: skip
COMMON = [n for n in ALL if n not in ("StackedEmbeddings", "DocumentPoolEmbeddings", "DocumentPoolEmbeddings-pipeline")]  # fmt: skip
BAD_COMMON = [
    ({"device": "gpu"}, r"device='gpu' is not valid; choose one of 'auto', 'cpu', 'cuda'"),
    ({"device": "cuda:x"}, r"choose one of 'auto', 'cpu', 'cuda'"),
    ({"precision": "float64"}, r"choose one of \['bfloat16', 'float16', 'float32'\]"),
    ({"batch_size": 0}, r"batch_size must be a positive integer"),
    ({"tokenizer": "spacy"}, r"tokenizer must be None, 'whitespace' or a callable"),
    ({"show_progress_bar": "no"}, r"show_progress_bar must be True or False"),
]


@pytest.mark.parametrize("name, params, message", BAD_PARAMS)
def test_unknown_parameter_values_fail_in_fit(name, params, message, files, tiny_model):
    est = make(name, files, tiny_model)
    est.set_params(**params)  # never validated in __init__ or set_params
    with pytest.raises(ValueError, match=message):
        est.fit(["the cat"])


@pytest.mark.parametrize("params, message", BAD_COMMON)
@pytest.mark.parametrize("name", COMMON)
def test_unknown_common_parameter_values_fail_in_fit(name, params, message, files, tiny_model):
    est = make(name, files, tiny_model).set_params(**params)
    with pytest.raises(ValueError, match=message):
        est.fit(["the cat"])
