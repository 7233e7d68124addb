"""PooledFlairEmbeddings: the fitted word memory, Flair's pooling semantics, estimator behaviour."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from tolerances import CONTRACT_ATOL, float32_mean_atol

import skembed
from skembed import (
    CharacterEmbeddings,
    DocumentPoolEmbeddings,
    PooledFlairEmbeddings,
    StackedEmbeddings,
    cache_info,
    clear_cache,
)
from skembed.flair import CharLM, FlairEmbeddings
from skembed.flair.pooled import occurrence_rank

CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,!?\n"
CORPUS = [
    "George Washington went to Washington .",
    "the cat sat on the mat , the end",
    "",
    "Washington is a city and the cat is George 's",
    "the the the cat",
]
# Repeated words, words of the corpus, unseen words, capitalised and lower-case ones.
NEW = ["the cat met George in Washington and the dog met George"]
POOLINGS = ["min", "max", "mean", "fade"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lm_path(tmp_path_factory):
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("pooled") / "lm.pt"
    CharLM(CHARS, hidden_size=12, embedding_size=5, nout=7).save(path)
    return str(path)


class FlairMemory:
    """Flair's PooledFlairEmbeddings procedure, step by step, on FlairEmbeddings' vectors.

    ``embed(doc)`` updates the memory token by token (element-wise min/max, a running sum
    with a count for mean, ``(old + new) / 2`` for fade) and then returns ``[local ; pooled]``
    for each token, pooled being the memory entry (the sum over the count for mean) or the
    local vector for a word not in the memory, as Flair does when it embeds one sentence.
    """

    def __init__(self, lm_path, pooling, only_capitalized=False):
        self.flair = FlairEmbeddings(lm_path, device="cpu").fit()
        self.pooling, self.only_capitalized = pooling, only_capitalized
        self.memory: dict[str, torch.Tensor] = {}
        self.count: dict[str, int] = {}

    def embed(self, doc: list[str]) -> np.ndarray:
        local = torch.as_tensor(self.flair.transform([doc])[0])
        for token, vec in zip(doc, local):
            if not token or (self.only_capitalized and not token[0].isupper()):
                continue
            if token not in self.memory:
                self.memory[token], self.count[token] = vec.clone(), 1
                continue
            old = self.memory[token]
            if self.pooling in ("mean", "fade"):
                new = old + vec
                new = new / 2 if self.pooling == "fade" else new
            else:
                new = torch.minimum(old, vec) if self.pooling == "min" else torch.maximum(old, vec)
            self.memory[token], self.count[token] = new, self.count[token] + 1
        pooled = [self.entry(t) if t in self.memory else v for t, v in zip(doc, local)]
        return torch.cat([local, torch.stack(pooled)], 1).numpy() if doc else np.zeros((0, 14))

    def entry(self, token):
        mem = self.memory[token]
        return mem / self.count[token] if self.pooling == "mean" else mem


def test_occurrence_rank():
    ids = torch.tensor([5, 1, 5, 5, 0, 1, 9])
    assert occurrence_rank(ids).tolist() == [0, 0, 1, 2, 0, 1, 0]


@pytest.mark.parametrize("pooling", POOLINGS)
def test_memory_after_fit_is_the_direct_computation(lm_path, pooling):
    emb = PooledFlairEmbeddings(lm_path, pooling=pooling, device="cpu", batch_size=2).fit(CORPUS)
    ref = FlairMemory(lm_path, pooling)
    for doc in CORPUS:
        ref.embed(doc.split())
    assert list(emb.vocabulary_) == list(ref.memory)  # first-occurrence order
    assert emb.memory_size_ == len(ref.memory) == 17
    assert emb.memory_.shape == (17, 7) and emb.memory_.dtype == np.float32
    for word, row in emb.vocabulary_.items():
        # fit embeds the corpus two documents a batch, the reference one by one.
        want = ref.entry(word).numpy()
        np.testing.assert_allclose(emb.memory_[row], want, rtol=0, atol=CONTRACT_ATOL)
        assert emb.memory_counts_[row] == ref.count[word]
    assert emb.memory_counts_[emb.vocabulary_["the"]] == 7


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("only_capitalized", [False, True])
def test_new_document_equals_flair_after_the_corpus(lm_path, pooling, only_capitalized):
    emb = PooledFlairEmbeddings(lm_path, pooling, only_capitalized, device="cpu").fit(CORPUS)
    ref = FlairMemory(lm_path, pooling, only_capitalized)
    for doc in CORPUS:
        ref.embed(doc.split())
    docs = [NEW[0].split(), ["Washington", "", "cat"], CORPUS[0].split()]
    out = emb.transform(docs)
    assert out.dim == 14
    for i, doc in enumerate(docs):
        # Each document embedded alone right after the corpus: restart from the fit memory.
        state = (dict(ref.memory), dict(ref.count))
        np.testing.assert_allclose(out[i], ref.embed(doc), rtol=0, atol=1e-5)
        ref.memory, ref.count = state
    local = FlairEmbeddings(lm_path, device="cpu").fit().transform(docs)
    np.testing.assert_array_equal(out[0][:, :7], local[0])
    dog = docs[0].index("dog")  # never seen: its pooled part is its local vector
    np.testing.assert_array_equal(out[0][dog, 7:], local[0][dog])
    if only_capitalized:
        assert set(emb.vocabulary_) == {"George", "Washington"}
        cat = docs[0].index("cat")
        np.testing.assert_array_equal(out[0][cat, 7:], local[0][cat])
    # Every occurrence of a word in a document gets the same pooled vector.
    first, last = (i for i, t in enumerate(docs[0]) if t == "George")
    np.testing.assert_array_equal(out[0][first, 7:], out[0][last, 7:])


def test_min_formula_written_out(lm_path):
    emb = PooledFlairEmbeddings(lm_path, "min", device="cpu").fit(CORPUS)
    doc = NEW[0].split()
    local = FlairEmbeddings(lm_path, device="cpu").fit().transform([doc])[0]
    out = emb.transform([doc])[0]
    for i, word in enumerate(doc):
        own = local[[j for j, t in enumerate(doc) if t == word]].min(0)
        if word in emb.vocabulary_:
            own = np.minimum(own, emb.memory_[emb.vocabulary_[word]])
        np.testing.assert_allclose(out[i, 7:], own, atol=1e-6)


@pytest.mark.parametrize("pooling", ["mean", "fade"])
def test_batch_invariance_and_no_dependence_on_earlier_calls(lm_path, pooling):
    emb = PooledFlairEmbeddings(lm_path, pooling, device="cpu").fit(CORPUS)
    alone = [emb.transform([d])[0] for d in NEW + CORPUS]
    for batch_size in (1, 3, 32):
        out = emb.set_params(batch_size=batch_size).transform(NEW + CORPUS + NEW)
        for i, want in enumerate(alone):
            np.testing.assert_allclose(out[i], want, atol=1e-5)
    assert out[3].shape == (0, 14)
    np.testing.assert_allclose(emb.transform(NEW)[0], alone[0], atol=1e-6)
    assert emb.memory_counts_.sum() == sum(len(d.split()) for d in CORPUS)  # transform adds nothing


def test_pickle_keeps_the_memory(lm_path):
    emb = PooledFlairEmbeddings(lm_path, "fade", device="cpu").fit(CORPUS)
    want = emb.transform(NEW).to_numpy()
    blob = pickle.dumps(emb)
    clear_cache()
    back = pickle.loads(blob)
    assert "_model" not in back.__dict__ and back.memory_size_ == emb.memory_size_
    assert back.vocabulary_ == emb.vocabulary_
    np.testing.assert_array_equal(back.memory_, emb.memory_)
    np.testing.assert_allclose(back.transform(NEW).to_numpy(), want, atol=1e-6)
    in_memory = PooledFlairEmbeddings(CharLM.load(lm_path), "fade", device="cpu").fit(CORPUS)
    np.testing.assert_allclose(
        pickle.loads(pickle.dumps(in_memory)).transform(NEW).to_numpy(), want, atol=1e-6
    )


def test_refit_with_another_pooling_reuses_the_lm_states(lm_path):
    clear_cache(models=False)
    emb = PooledFlairEmbeddings(lm_path, device="cpu").fit(CORPUS)
    emb.transform(NEW)
    misses = cache_info()["state_misses"]
    plain = FlairEmbeddings(lm_path, device="cpu").fit().transform(NEW + CORPUS)  # shared states
    for pooling in POOLINGS:
        emb.set_params(pooling=pooling).fit(CORPUS).transform(NEW)
    assert cache_info()["state_misses"] == misses
    np.testing.assert_array_equal(emb.transform(NEW + CORPUS).to_numpy()[:, :7], plain.to_numpy())
    emb.set_params(pooling="max")
    with pytest.raises(ValueError, match="call fit again"):
        emb.transform(NEW)


def test_parameters_and_empty_memory(lm_path):
    with pytest.raises(ValueError, match=r"pooling='median' is not valid.*'fade'"):
        PooledFlairEmbeddings(lm_path, "median", device="cpu").fit(CORPUS)
    with pytest.raises(ValueError, match="only_capitalized"):
        PooledFlairEmbeddings(lm_path, only_capitalized="yes", device="cpu").fit(CORPUS)
    emb = PooledFlairEmbeddings(lm_path, "max", device="cpu").fit()
    assert emb.memory_size_ == 0 and emb.memory_.shape == (0, 7)
    ref = FlairMemory(lm_path, "max")  # an empty memory: the document pools its own words
    np.testing.assert_allclose(emb.transform(NEW)[0], ref.embed(NEW[0].split()), atol=1e-6)
    names = emb.get_feature_names_out()
    assert len(names) == 14 and names[0] == "pooledflair_0"
    assert skembed.PooledFlairEmbeddings is PooledFlairEmbeddings


def test_stack_document_pool_pipeline_and_grid_search(lm_path):
    texts = ["Anna likes the sun", "Bob likes the rain", "the sun is warm", "the rain is cold"] * 3
    labels = [1, 1, 0, 0] * 3
    stack = StackedEmbeddings(
        [
            ("pooled", PooledFlairEmbeddings(lm_path, device="cpu")),
            ("char", CharacterEmbeddings(hidden_size_char=3, random_state=0, device="cpu")),
        ]
    ).fit(texts)
    assert stack.n_features_out_ == 14 + 6
    assert stack.named_embeddings["pooled"].memory_size_ == 9
    doc_pool = DocumentPoolEmbeddings(PooledFlairEmbeddings(lm_path, "mean", device="cpu"))
    rows = doc_pool.fit(texts).transform(texts[:2])
    tokens = doc_pool.embeddings_.transform(texts[:2])
    atol = float32_mean_atol(max(tokens.lengths), np.abs(tokens.to_numpy()).max())
    np.testing.assert_allclose(rows, [tokens[0].mean(0), tokens[1].mean(0)], atol=atol)
    pipe = make_pipeline(
        PooledFlairEmbeddings(lm_path, device="cpu"),
        DocumentPoolEmbeddings(),
        LogisticRegression(max_iter=500),
    )
    grid = GridSearchCV(pipe, {"pooledflairembeddings__pooling": POOLINGS}, cv=2)
    grid.fit(texts, labels)
    assert grid.best_params_["pooledflairembeddings__pooling"] in POOLINGS
    best = grid.best_estimator_
    back = pickle.loads(pickle.dumps(best))
    np.testing.assert_allclose(back.predict_proba(texts), best.predict_proba(texts), atol=1e-6)
    assert clone(best[0]).get_params()["pooling"] == best[0].pooling
