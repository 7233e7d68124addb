"""Token-level learning: to_frame(), token_xy and split_tokens on a small tagging set."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression

import skembed
from skembed import RaggedEmbeddings, WordEmbeddings, split_tokens, token_xy

TRAIN = [
    ("the dog runs", "DT NN VB"),
    ("a cat sleeps", "DT NN VB"),
    ("the bird sings", "DT NN VB"),
    ("a dog sleeps", "DT NN VB"),
    ("the cat runs fast", "DT NN VB RB"),
    ("a bird sings loudly", "DT NN VB RB"),
]
TEST = [
    ("the cat sings", "DT NN VB"),
    ("a bird runs fast", "DT NN VB RB"),
    ("The Dog sleeps loudly", "DT NN VB RB"),  # capitals: found lower-cased
]


@pytest.fixture(autouse=True)
def _clear():
    yield
    skembed.clear_cache()


@pytest.fixture
def embedder(tmp_path):
    words = sorted({w.lower() for text, _ in TRAIN + TEST for w in text.split()})
    vecs = np.random.default_rng(0).standard_normal((len(words), 16))
    path = tmp_path / "tiny.txt"
    path.write_text(
        "".join(f"{w} " + " ".join(f"{v:.6f}" for v in row) + "\n" for w, row in zip(words, vecs))
    )
    return WordEmbeddings(str(path), device="cpu").fit()


def labels(pairs):
    return [tags.split() for _, tags in pairs]


def texts(pairs):
    return [text for text, _ in pairs]


def test_classifier_learns_the_tags(embedder):
    X_train, y_train = token_xy(embedder.transform(texts(TRAIN)), labels(TRAIN))
    assert X_train.shape == (20, 16) and y_train.shape == (20,)
    assert y_train[:4].tolist() == ["DT", "NN", "VB", "DT"]
    clf = LogisticRegression(max_iter=1000).fit(X_train, y_train)
    test = embedder.transform(texts(TEST))
    predicted = split_tokens(clf.predict(token_xy(test)), test)
    assert predicted == labels(TEST)


def test_frames_line_up(embedder):
    r = embedder.transform(texts(TRAIN))
    frame = r.to_frame()
    assert frame.index.names == ["doc", "position"]
    assert list(frame.columns[:2]) == ["token", "word_0"] and frame.shape == (20, 17)
    assert frame.loc[(4, 3), "token"] == "fast"
    np.testing.assert_array_equal(frame.loc[4].iloc[:, 1:].to_numpy(), r[4])
    X, y = token_xy(r, pd.Series(labels(TRAIN)), as_frame=True)
    assert list(X.columns) == [f"word_{j}" for j in range(16)]
    assert X.index.equals(frame.index) and y.index.equals(frame.index)
    assert y.loc[(4, 3)] == "RB" and y.name == "label"
    clf = LogisticRegression(max_iter=1000).fit(X, y)
    assert list(clf.feature_names_in_) == list(X.columns)
    test_X = token_xy(embedder.transform(texts(TEST)), as_frame=True)
    by_token = pd.Series(clf.predict(test_X), index=test_X.index)
    assert by_token.loc[2].tolist() == ["DT", "NN", "VB", "RB"]


def test_mismatch_names_document():
    r = RaggedEmbeddings.from_list(
        [torch.ones(2, 3), torch.ones(3, 3)], [["a", "b"], ["c", "d", "e"]]
    )
    with pytest.raises(ValueError, match=r"Document 1 has 3 tokens .* but 2 labels"):
        token_xy(r, [["X", "Y"], ["X", "Y"]])
    with pytest.raises(ValueError, match="labels for 1 documents, but there are 2"):
        token_xy(r, [["X", "Y"]])
    with pytest.raises(TypeError, match=r"y\[0\]"):
        token_xy(r, ["XY", ["X", "Y", "Z"]])
    with pytest.raises(TypeError, match="RaggedEmbeddings"):
        token_xy(np.ones((3, 2)), [["X"]])
    with pytest.raises(ValueError, match="Got 4 values for 5 tokens"):
        split_tokens([1, 2, 3, 4], r)


def test_empty_documents():
    r = RaggedEmbeddings.from_list([torch.ones(0, 2), torch.ones(1, 2)], [[], ["a"]])
    X, y = token_xy(r, [[], ["N"]])
    assert X.shape == (1, 2) and y.tolist() == ["N"]
    assert split_tokens(["N"], r) == [[], ["N"]]
