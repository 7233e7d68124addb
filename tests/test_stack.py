"""StackedEmbeddings: word vectors stacked with a tiny transformer, FeatureUnion-style."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from tolerances import float32_mean_atol

import skembed
from skembed import (
    DocumentPoolEmbeddings,
    StackedEmbeddings,
    TransformerEmbeddings,
    WordEmbeddings,
)
from skembed.cache import STATES

DOCS = ["the prison cell was cold", "my cell phone rang", "a blood cell divides", "Hello , world"]


@pytest.fixture(autouse=True)
def _clear():
    budget = STATES.max_bytes
    yield
    skembed.clear_cache()
    skembed.set_cache(max_bytes=budget)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two small GloVe files: 4-d vectors of a few words, and 2-d 'sentiment' vectors."""
    folder = tmp_path_factory.mktemp("vectors")
    rng = np.random.default_rng(0)
    words = sorted({w.lower() for d in DOCS for w in d.split()})
    four = folder / "four.txt"
    four.write_text(
        "".join(f"{w} " + " ".join(f"{v:.4f}" for v in rng.random(4)) + "\n" for w in words)
    )
    two = folder / "two.txt"
    two.write_text("good 1 0\ngreat 1 0\nbad 0 1\nawful 0 1\n")
    flat = folder / "flat.txt"
    flat.write_text("good 1 1\ngreat 1 1\nbad 1 1\nawful 1 1\n")
    return {"four": str(four), "two": str(two), "flat": str(flat)}


@pytest.fixture(scope="module")
def bert(tiny_model):
    return tiny_model("bert")


def make_stack(files, bert, **kwargs):
    return StackedEmbeddings(
        [
            ("glove", WordEmbeddings(files["four"], device="cpu")),
            ("bert", TransformerEmbeddings(bert, layers="-1", device="cpu")),
        ],
        **kwargs,
    )


def test_concatenation_order_shapes_and_names(files, bert):
    stack = make_stack(files, bert).fit()
    word = WordEmbeddings(files["four"], device="cpu").fit()
    tr = TransformerEmbeddings(bert, layers="-1", device="cpu").fit()
    r = stack.transform(DOCS)
    assert r.lengths.tolist() == [5, 4, 4, 3]
    assert stack.n_features_out_ == r.dim == 4 + 32
    w, t = word.transform(DOCS), tr.transform(DOCS)
    for i in range(len(DOCS)):
        np.testing.assert_array_equal(r[i][:, :4], w[i])
        np.testing.assert_allclose(r[i][:, 4:], t[i], atol=1e-6)
    names = list(stack.get_feature_names_out())
    assert names[:2] == ["glove__word_0", "glove__word_1"]
    assert names[4:6] == ["bert__transformer_0", "bert__transformer_1"] and len(names) == 36
    assert list(r.feature_names) == names
    assert r.tokens[3] == ["Hello", ",", "world"]


def test_names_as_make_union_makes_them(files):
    a, b = WordEmbeddings(files["four"]), WordEmbeddings(files["two"])
    stack = StackedEmbeddings([a, b])
    assert list(stack.named_embeddings) == ["wordembeddings-1", "wordembeddings-2"]
    params = stack.get_params()
    assert params["wordembeddings-2__embeddings"] == files["two"]
    # Replacing one member keeps the names of the others.
    stack.set_params(**{"wordembeddings-1": "drop"})
    assert list(stack.named_embeddings) == ["wordembeddings-1", "wordembeddings-2"]
    stack = StackedEmbeddings([WordEmbeddings(files["four"], device="cpu")], tokenizer=None)
    assert list(stack.named_embeddings) == ["wordembeddings"]


def test_nested_params_and_drop(files, bert):
    stack = make_stack(files, bert)
    params = stack.get_params()
    assert params["glove__embeddings"] == files["four"] and params["bert__layers"] == "-1"
    pipe = make_pipeline(stack, DocumentPoolEmbeddings())
    pipe.set_params(stackedembeddings__glove__embeddings=files["two"])
    pipe.set_params(stackedembeddings__bert__layers="0,-1")
    assert stack.named_embeddings.glove.embeddings == files["two"]
    stack.fit()
    assert stack.n_features_out_ == 2 + 64
    stack.set_params(bert="drop").fit()
    assert stack.n_features_out_ == 2
    assert list(stack.get_feature_names_out()) == ["glove__word_0", "glove__word_1"]
    np.testing.assert_array_equal(stack.transform(["good awful x"])[0], [[1, 0], [0, 1], [0, 0]])
    stack.set_params(bert=TransformerEmbeddings(bert, device="cpu"), glove="drop").fit()
    assert list(stack.named_embeddings) == ["glove", "bert"] and stack.n_features_out_ == 32


def test_tokenization_mismatch_names_member_and_document(files, bert):
    def punct(text):
        return re.findall(r"\w+|[^\w\s]", text)

    stack = StackedEmbeddings(
        [
            ("glove", WordEmbeddings(files["four"], device="cpu")),
            ("bert", TransformerEmbeddings(bert, device="cpu", tokenizer=punct)),
        ]
    ).fit()
    docs = ["a blood cell", "Hello, world"]
    with pytest.raises(ValueError, match=r"Member 'bert' splits document 1 into 3 tokens") as err:
        stack.transform(docs)
    assert "member 'glove' into 2 tokens" in str(err.value)
    # Token lists are given as is to every member: no mismatch.
    assert stack.transform([["Hello", ",", "world"]]).lengths.tolist() == [3]
    # The stack's own tokenizer splits once for all members.
    r = stack.set_params(tokenizer=punct).fit().transform(docs)
    assert r.tokens[1] == ["Hello", ",", "world"]


def test_member_returning_wrong_rows_is_reported(files):
    class Broken(WordEmbeddings):
        def embed_documents(self, docs):
            return super().embed_documents([d[:-1] if i == 1 else d for i, d in enumerate(docs)])

    stack = StackedEmbeddings(
        [
            ("ok", WordEmbeddings(files["two"], device="cpu")),
            ("broken", Broken(files["two"], device="cpu")),
        ]
    ).fit()
    with pytest.raises(ValueError, match=r"Member 'broken' returned 1 vectors for document 1"):
        stack.transform(["good", "bad awful"])


def test_grid_search_over_member_parameter(files, bert):
    texts = ["good great", "great good good", "good", "great great", "good great good"]
    texts += ["bad awful", "awful bad bad", "bad", "awful awful", "bad awful bad"]
    y = [1] * 5 + [0] * 5
    stack = StackedEmbeddings(
        [
            ("glove", WordEmbeddings(files["flat"], device="cpu")),
            ("bert", TransformerEmbeddings(bert, layers="-1", device="cpu")),
        ]
    )
    pipe = make_pipeline(stack, DocumentPoolEmbeddings(), LogisticRegression(C=100))
    grid = GridSearchCV(
        pipe,
        {
            "stackedembeddings__glove__embeddings": [files["flat"], files["two"]],
            "stackedembeddings__bert": ["drop"],
        },
        cv=2,
    ).fit(texts, y)
    # Only the informative word vectors separate the classes.
    assert grid.best_params_["stackedembeddings__glove__embeddings"] == files["two"]
    assert grid.best_score_ == 1.0
    scores = grid.cv_results_["mean_test_score"]
    assert scores.min() < 1.0
    assert grid.predict(["awful", "great"]).tolist() == [0, 1]
    # A grid over the transformer member's layers runs through the same nested names.
    grid2 = GridSearchCV(
        make_pipeline(make_stack(files, bert), DocumentPoolEmbeddings(), LogisticRegression()),
        {"stackedembeddings__bert__layers": ["-1", "0,1"]},
        cv=2,
    ).fit(texts, y)
    assert grid2.best_estimator_[0].named_embeddings.bert.layers in ("-1", "0,1")
    assert grid2.best_estimator_[0].n_features_out_ in (4 + 32, 4 + 64)


def test_pooled_streaming_matches_and_pickle(files, bert):
    stack = make_stack(files, bert).fit()
    ragged = stack.transform(DOCS)
    pooled = DocumentPoolEmbeddings(make_stack(files, bert)).fit_transform(DOCS)
    expected = np.stack([ragged[i].mean(0) for i in range(len(DOCS))])
    atol = float32_mean_atol(max(ragged.lengths), np.abs(ragged.to_numpy()).max())
    np.testing.assert_allclose(pooled, expected, atol=atol)
    restored = pickle.loads(pickle.dumps(stack))
    skembed.clear_cache()
    np.testing.assert_allclose(restored.transform(DOCS).to_numpy(), ragged.to_numpy(), atol=1e-6)
    twin = clone(stack)
    assert not hasattr(twin, "n_features_out_")
    assert twin.named_embeddings.glove is not stack.named_embeddings.glove


def test_nested_stack_and_empty_documents(files):
    inner = StackedEmbeddings([("a", WordEmbeddings(files["two"], device="cpu"))])
    outer = StackedEmbeddings(
        [("inner", inner), ("b", WordEmbeddings(files["four"], device="cpu"))]
    )
    r = outer.fit_transform(["good", "", "bad cell"])
    assert r.lengths.tolist() == [1, 0, 2] and r.dim == 6
    assert outer.get_feature_names_out()[0] == "inner__a__word_0"
    assert outer.get_params()["inner__a__embeddings"] == files["two"]


@pytest.mark.parametrize(
    "embeddings, error, match",
    [
        ([], ValueError, "non-empty list"),
        ("glove", ValueError, "non-empty list"),
        (["drop"], ValueError, "only 'drop'|Every member"),
        ([("a", "passthrough")], ValueError, "only 'drop'"),
        ([("a__b", WordEmbeddings())], ValueError, "must not contain __"),
        ([("a", WordEmbeddings()), ("a", WordEmbeddings())], ValueError, "not unique"),
        ([("a", WordEmbeddings()), WordEmbeddings()], ValueError, "mixes"),
        ([("a", WordEmbeddings)], TypeError, "instance"),
        ([("a", LogisticRegression)], TypeError, "instance"),
        ([("a", object())], TypeError, "not a token embedder"),
    ],
)
def test_invalid_members(embeddings, error, match):
    with pytest.raises(error, match=match):
        StackedEmbeddings(embeddings).fit()


def test_to_frame_keeps_pandas_index_labels(files, bert):
    import pandas as pd

    texts = ["the prison cell", "my cell phone rang"]
    for embedder in (make_stack(files, bert), TransformerEmbeddings(bert, device="cpu")):
        embedder.fit()
        frame = embedder.transform(pd.Series(texts, index=[10, 20])).to_frame()
        assert frame.index.get_level_values("doc").tolist() == [10] * 3 + [20] * 4
        one_column = pd.DataFrame({"text": texts}, index=["a", "b"])
        assert embedder.transform(one_column).to_frame().index[-1] == ("b", 3)
        default = embedder.transform(pd.Series(texts)).to_frame()  # 0..n-1: positions
        assert default.index.get_level_values("doc").tolist() == [0] * 3 + [1] * 4
        assert embedder.transform(texts).index is None


def test_members_judge_what_to_keep_by_the_whole_input(files, bert, monkeypatch):
    """A stack read in chunks (wrapped by a pooler, or a chunk at a time by its own
    iter_batches) hands the size of the whole input to its members: a member keeps its
    states only if the whole input's states fit in the budget, not each chunk's."""
    from skembed import stack

    member = TransformerEmbeddings(bert, layers="-1", device="cpu", batch_size=2).fit()
    member.transform(DOCS).to_numpy()
    per_doc = max(size for _, size in STATES._lru._entries.values())
    skembed.clear_cache(models=False)
    skembed.set_cache(max_bytes=int(per_doc * 3))  # a chunk of 2 fits, the 4 documents don't
    monkeypatch.setattr(stack, "_CHUNK", 2)
    pooled = DocumentPoolEmbeddings(StackedEmbeddings([("bert", member)])).fit()
    pooled.transform(DOCS)
    assert skembed.cache_info()["state_entries"] == 0
    skembed.set_cache(max_bytes=int(per_doc * 10))  # all 4 fit: all kept
    pooled.transform(DOCS)
    assert skembed.cache_info()["state_entries"] == len(DOCS)
