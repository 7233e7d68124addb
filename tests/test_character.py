"""CharacterEmbeddings: seeded random features, the BiLSTM read-out, training on y, pickling."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from tolerances import CONTRACT_ATOL

import skembed
from skembed import CharacterEmbeddings, DocumentPoolEmbeddings, StackedEmbeddings, token_xy
from skembed.character import CharBiLSTM

SUFFIX_TAG = {
    "ing": "VERB",
    "ed": "VERB",
    "ly": "ADV",
    "tion": "NOUN",
    "ness": "NOUN",
    "ous": "ADJ",
}
TEXTS = ["Paris is big", "a small town", "Berlin and Rome", "the old house"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def suffix_data(n_docs: int, seed: int):
    """Made-up words whose tag is given by their suffix (stems are random letters)."""
    rng = random.Random(seed)
    docs, tags = [], []
    for _ in range(n_docs):
        words = []
        for _ in range(rng.randint(3, 8)):
            stem = "".join(rng.choice("abcdefghiklmnoprstu") for _ in range(rng.randint(2, 6)))
            words.append(stem + rng.choice(list(SUFFIX_TAG)))
        docs.append(words)
        tags.append([next(t for s, t in SUFFIX_TAG.items() if w.endswith(s)) for w in words])
    return docs, tags


def small(**kw) -> CharacterEmbeddings:
    params = {"char_embedding_dim": 6, "hidden_size_char": 4, "device": "cpu", **kw}
    return CharacterEmbeddings(**params)


def test_random_features_are_deterministic_for_a_seed():
    a = small(random_state=0).fit(TEXTS).transform(TEXTS)
    b = small(random_state=0).fit(TEXTS).transform(TEXTS)
    c = small(random_state=1).fit(TEXTS).transform(TEXTS)
    assert a.dim == 8 and a[0].shape == (3, 8)
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())
    assert np.abs(a.to_numpy() - c.to_numpy()).min() > 0
    # A word's random vector depends on the seed and its characters, not on the fit corpus.
    other = small(random_state=0).fit(["Paris", "zzz qqq"]).transform([["Paris"]])[0]
    np.testing.assert_allclose(other[0], a[0][0], atol=CONTRACT_ATOL)
    assert small().fit(TEXTS).classes_ is None


def test_vector_is_forward_after_last_and_backward_after_first_character():
    emb = small(random_state=3).fit(TEXTS)
    words = ["Paris", "a", "Rome", "xyz"]  # x, y, z are unknown characters
    out = emb.transform([words])[0]
    w = emb.weights_
    index = {c: i + 1 for i, c in enumerate(emb.characters_)}

    def run(chars, suffix):
        # One LSTM direction written out: gates i, f, g, o as torch orders them.
        h = c = torch.zeros(4)
        for ch in chars:
            x = w["embedding.weight"][index.get(ch, 0)]
            gates = w[f"lstm.weight_ih_l0{suffix}"] @ x + w[f"lstm.weight_hh_l0{suffix}"] @ h
            gates = gates + w[f"lstm.bias_ih_l0{suffix}"] + w[f"lstm.bias_hh_l0{suffix}"]
            i, f, g, o = gates.chunk(4)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        return h

    for k, word in enumerate(words):
        want = torch.cat([run(word, ""), run(word[::-1], "_reverse")]).numpy()
        # The same float32 math through other kernels: the contract's tolerance.
        np.testing.assert_allclose(out[k], want, rtol=0, atol=CONTRACT_ATOL)
    assert emb.transform([[""]])[0].tolist() == [[0.0] * 8]  # an empty token: zeros


def test_features_do_not_depend_on_the_batch():
    emb = small(random_state=0).fit(TEXTS)
    alone = [emb.transform([d])[0] for d in TEXTS]
    out = emb.set_params(batch_size=3).transform(TEXTS[::-1] + TEXTS)
    for i, want in enumerate(alone):
        np.testing.assert_allclose(out[len(TEXTS) + i], want, atol=CONTRACT_ATOL)
    np.testing.assert_allclose(out[3][0], alone[0][0], atol=CONTRACT_ATOL)  # "Paris" anywhere


def test_training_on_suffix_tags_beats_the_random_features():
    train_docs, train_tags = suffix_data(60, seed=0)
    test_docs, test_tags = suffix_data(40, seed=1)
    scores = {}
    for name, y in (("random", None), ("trained", train_tags)):
        emb = small(random_state=0, max_epochs=12, learning_rate=0.02).fit(train_docs, y)
        X_train, y_train = token_xy(emb.transform(train_docs), train_tags)
        X_test, y_test = token_xy(emb.transform(test_docs), test_tags)
        clf = LogisticRegression(max_iter=2000).fit(X_train, y_train)
        scores[name] = clf.score(X_test, y_test)  # held-out words, never seen in training
    assert scores["trained"] >= 0.95
    assert 1 - scores["trained"] <= (1 - scores["random"]) / 3, scores  # a third of the errors
    assert emb.classes_.tolist() == ["ADJ", "ADV", "NOUN", "VERB"]
    assert len(emb.loss_curve_) == len(emb.validation_loss_curve_) >= 1
    assert emb.loss_curve_[-1] < emb.loss_curve_[0]


def test_early_stopping_keeps_the_best_epoch_and_weights_pickle():
    docs, tags = suffix_data(30, seed=2)
    emb = small(random_state=0, max_epochs=40, learning_rate=0.3, n_iter_no_change=2)
    emb.fit(docs, tags)
    curve = emb.validation_loss_curve_
    assert emb.best_epoch_ == int(np.argmin(curve))
    assert len(curve) == 40 or len(curve) == emb.best_epoch_ + 1 + 2
    assert len(curve) < 40  # this learning rate overshoots: training stopped early
    assert all(t.device.type == "cpu" for t in emb.weights_.values())
    want = emb.transform(docs).to_numpy()
    back = pickle.loads(pickle.dumps(emb))
    assert "_model" not in back.__dict__
    np.testing.assert_array_equal(back.transform(docs).to_numpy(), want)
    # The kept weights are the best epoch's: refitting with that many epochs gives them back.
    again = small(random_state=0, max_epochs=emb.best_epoch_ + 1, learning_rate=0.3).fit(docs, tags)
    np.testing.assert_allclose(again.transform(docs).to_numpy(), want, atol=1e-5)


def test_document_labels_in_a_pipeline_and_grid_search():
    names = ["Anna", "Bert", "Clara", "Dieter", "Emma", "Felix", "Greta", "Hans", "Ida", "Jonas"]
    common = ["table", "river", "green", "under", "apple", "quiet", "stone", "water", "bread"]
    rng = random.Random(0)
    texts, labels = [], []
    for k in range(96):  # label: does the document name a person?
        has_name = k % 2 == 0
        words = rng.sample(common, 3) + ([rng.choice(names)] if has_name else [rng.choice(common)])
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(int(has_name))
    scores = {}
    for name, max_epochs in (("random", 0), ("trained", 10)):
        pipe = make_pipeline(
            small(random_state=1, max_epochs=max(max_epochs, 1), learning_rate=0.1, batch_size=8),
            DocumentPoolEmbeddings(),
            LogisticRegression(max_iter=1000),
        )
        if max_epochs:
            pipe.fit(texts[:64], labels[:64])  # the pipeline passes the labels to fit
            assert pipe[0].classes_.tolist() == [0, 1]
        else:
            pipe[0].fit(texts[:64])
            pipe[1:].fit(pipe[0].transform(texts[:64]), labels[:64])
        scores[name] = pipe.score(texts[64:], labels[64:])
    assert scores["trained"] >= max(0.95, scores["random"]), scores
    grid = GridSearchCV(pipe, {"characterembeddings__hidden_size_char": [2, 4]}, cv=2)
    grid.fit(texts[:32], labels[:32])
    assert (
        grid.best_estimator_[0].n_features_out_
        == 2 * grid.best_params_["characterembeddings__hidden_size_char"]
    )
    stack = StackedEmbeddings([small(random_state=0), small(random_state=1)]).fit(texts)
    assert stack.transform(texts[:2]).dim == 16
    assert skembed.CharacterEmbeddings is CharacterEmbeddings


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="Document 1 has 3 tokens"):
        small().fit(TEXTS[:2], [["N", "O", "O"], ["O", "O"]])
    with pytest.raises(ValueError, match="single class"):
        small().fit(TEXTS, ["x"] * 4)
    with pytest.raises(ValueError, match="one label per document"):
        small().fit(TEXTS, [0, 1])
    with pytest.raises(ValueError, match="class labels"):
        small().fit(TEXTS, [0.5, 1.5, 2.25, 3.1])
    with pytest.raises(ValueError, match="learns its character vocabulary"):
        small().fit(None)
    for params, name in (
        ({"hidden_size_char": 0}, "hidden_size_char"),
        ({"learning_rate": -1}, "learning_rate"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
    ):
        with pytest.raises(ValueError, match=name):
            small(**params).fit(TEXTS)


def test_long_tokens_are_split_into_bounded_calls():
    model = CharBiLSTM("ab", 3, 2).seed_(0).eval()
    words = ["ab" * 40000, "a", "", "ba"]
    with torch.no_grad():
        together = model(words)
        alone = torch.cat([model([w]) for w in words])
    torch.testing.assert_close(together, alone, rtol=0, atol=CONTRACT_ATOL)


def test_wrappers_pass_labels_on_to_a_trainable_member():
    from skembed import DocumentPoolEmbeddings, StackedEmbeddings

    docs = [["Paris", "is", "big"], ["a", "small", "town"]] * 4
    labels = [1, 0] * 4
    pooled = DocumentPoolEmbeddings(small(random_state=0, max_epochs=2)).fit(docs, labels)
    assert pooled.embeddings_.best_epoch_ is not None  # trained on the labels
    stack = StackedEmbeddings([("chars", small(random_state=0, max_epochs=2))]).fit(docs, labels)
    assert stack.embeddings[0][1].best_epoch_ is not None
    untrained = DocumentPoolEmbeddings(small(random_state=0)).fit(docs)
    assert untrained.embeddings_.best_epoch_ is None
