"""A toy token-embedder family, written as a user would write one: the worked example of
``docs/architecture.md`` ("How to add a family"), and the proof that the family interface
alone gives an estimator that clones, pickles, pools, and grid-searches with one forward
pass per document."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from test_estimator import DATA_FREE_CHECKS

import skembed
from skembed import BaseTokenEmbedder, DocumentPoolEmbeddings
from skembed.base import check_choice, store_params

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_caches")


# -- the family (about 60 lines) ---------------------------------------------------------
class ToyNetwork(torch.nn.Module):
    """Characters -> mean character vector per token (layer 0) -> a GRU over tokens (layer 1)."""

    def __init__(self, dim: int, seed: int):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # seeded weights, the global RNG untouched
            torch.manual_seed(seed)
            self.chars = torch.nn.Embedding(256, dim)
            self.gru = torch.nn.GRU(dim, dim, batch_first=True)

    def forward(self, tokens: list[str]) -> torch.Tensor:
        device = self.chars.weight.device
        # Id 0 starts every token, so that an empty token ("" in a token list) has a vector.
        ids = [torch.tensor([0] + [ord(c) % 255 + 1 for c in t], device=device) for t in tokens]
        words = torch.stack([self.chars(i).mean(0) for i in ids])  # (n_tokens, dim)
        context, _ = self.gru(words[None])
        return torch.stack([words, context[0]])  # the state: (2 layers, n_tokens, dim)


class ToyEmbeddings(BaseTokenEmbedder):
    """Toy contextual token vectors; ``layer`` (0, 1 or "all") is a cheap choice."""

    _feature_prefix = "toy"
    _shares_states = True  # a state is one tensor per document: the default hooks apply

    def __init__(
        self,
        layer=1,
        dim: int = 8,
        seed: int = 0,
        lowercase: bool = False,
        *,
        tokenizer=None,
        device: str = "auto",
        batch_size: int = 32,
        precision: str = "float32",
        show_progress_bar: bool = False,
    ):
        store_params(self, locals())

    def _model_key(self):  # what identifies the weights: clones and candidates share them
        return ("toy", self.dim, self.seed)

    def _load_model(self, device):
        return ToyNetwork(self.dim, self.seed).to(device).eval()

    def _check_params(self, model):
        check_choice("layer", self.layer, (0, 1, "all"))
        check_choice("lowercase", self.lowercase, (True, False))

    def _forward_key(self):  # changes what _forward computes, not the weights
        return (self.lowercase,)

    def _forward(self, model, docs):  # expensive: one state per (non-empty) document
        return [model([t.lower() if self.lowercase else t for t in doc]) for doc in docs]

    def _combine(self, model, states):  # cheap: never runs the network
        if self.layer == "all":  # (n_tokens, 2 * dim): layer 0's features, then layer 1's
            return [torch.cat(tuple(s), dim=1) for s in states]
        return [s[self.layer] for s in states]

    def _n_features(self, model):
        return model.chars.embedding_dim * (2 if self.layer == "all" else 1)


# -- tests ---------------------------------------------------------------------------------
TEXTS = [f"{a} {b} film" for a in ("a fine", "a great", "a lovely") for b in ("x", "yy", "zzz")]
TEXTS += [f"{a} {b} film" for a in ("a dull", "a poor", "an awful") for b in ("x", "yy", "zzz")]
LABELS = [1] * 9 + [0] * 9


def test_one_row_per_token_per_document():
    out = ToyEmbeddings().fit_transform(["The cat sat", "", "hello"])
    assert len(out) == 3
    assert [out[i].shape for i in range(3)] == [(3, 8), (0, 8), (1, 8)]
    tokens = ToyEmbeddings().fit_transform([["", "a b"]])  # token lists are used as given
    assert tokens[0].shape == (2, 8) and np.isfinite(tokens[0]).all()
    both = ToyEmbeddings(layer="all").fit_transform(["The cat sat"])[0]
    layers = [ToyEmbeddings(layer=k).fit_transform(["The cat sat"])[0] for k in (0, 1)]
    np.testing.assert_array_equal(both, np.concatenate(layers, axis=1))
    assert list(ToyEmbeddings(layer="all").fit().get_feature_names_out()[:2]) == ["toy_0", "toy_1"]


def test_a_document_gets_the_same_vectors_in_any_batch():
    emb = ToyEmbeddings().fit()
    alone = emb.transform(["b c"])[0]
    skembed.clear_cache()
    np.testing.assert_array_equal(emb.transform(["x y z w", "b c", "q"])[1], alone)


def test_lowercase_changes_the_states_not_the_model():
    X = ["The Cat"]
    cased, lower = ToyEmbeddings().fit(), ToyEmbeddings(lowercase=True).fit()
    assert not np.array_equal(cased.transform(X)[0], lower.transform(X)[0])
    np.testing.assert_array_equal(lower.transform(X)[0], cased.transform(["the cat"])[0])
    assert skembed.cache_info()["models_loaded"] == 1


def test_clone_get_params_and_pickle():
    emb = ToyEmbeddings(layer=0, dim=4, seed=3)
    assert clone(emb).get_params() == emb.get_params()
    with pytest.raises(NotFittedError):
        emb.transform(["a b"])
    fitted = emb.fit()
    assert fitted is emb and emb.n_features_out_ == 4
    restored = pickle.loads(pickle.dumps(emb))
    assert "_model" not in restored.__dict__  # weights are not pickled; reloaded on use
    skembed.clear_cache()  # the copy loads its network again
    np.testing.assert_array_equal(
        restored.transform(TEXTS).to_numpy(), emb.transform(TEXTS).to_numpy()
    )


@pytest.mark.parametrize(
    "check",
    DATA_FREE_CHECKS,
    ids=lambda check: check.__name__,
)
def test_data_free_estimator_checks(check):
    check("ToyEmbeddings", ToyEmbeddings())


def test_tags_and_errors_at_fit():
    tags = ToyEmbeddings().__sklearn_tags__()
    assert tags.input_tags.string and not tags.input_tags.two_d_array
    bad = ToyEmbeddings(layer=2)  # __init__ validates nothing
    with pytest.raises(ValueError, match="layer=2 is not valid"):
        bad.fit()
    with pytest.raises(TypeError):
        ToyEmbeddings().fit().transform("a bare string")


def test_pooling_after_the_embedder_equals_pooling_it_wrapped():
    after = make_pipeline(ToyEmbeddings(), DocumentPoolEmbeddings(pooling="max"))
    wrapped = DocumentPoolEmbeddings(ToyEmbeddings(), pooling="max")
    X = TEXTS + [""]
    rows = after.fit_transform(X)
    assert rows.shape == (len(X), 8)
    np.testing.assert_array_equal(wrapped.fit_transform(X), rows)
    tokens = ToyEmbeddings().fit().transform(X)
    np.testing.assert_array_equal(rows[0], tokens[0].max(0))
    np.testing.assert_array_equal(rows[-1], np.zeros(8))  # no tokens: a zero row


@pytest.mark.parametrize("idiom", ["after", "wrapped"])
def test_grid_search_runs_the_network_once_per_document(idiom):
    X, y = TEXTS + ["", ""], LABELS + [1, 0]
    if idiom == "after":
        pipe = make_pipeline(ToyEmbeddings(), DocumentPoolEmbeddings(), LogisticRegression())
        grid = {
            "toyembeddings__layer": [0, 1, "all"],
            "documentpoolembeddings__pooling": ["mean", "max"],
        }
    else:
        pipe = make_pipeline(DocumentPoolEmbeddings(ToyEmbeddings()), LogisticRegression())
        grid = {
            "documentpoolembeddings__embeddings__layer": [0, 1, "all"],
            "documentpoolembeddings__pooling": ["mean", "max"],
        }
    loads = sum(skembed.cache_info()["model_loads"].values())
    search = GridSearchCV(pipe, grid, cv=3).fit(X, y)
    assert len(search.cv_results_["params"]) == 6
    info = skembed.cache_info()
    assert info["documents_computed"] == len(TEXTS)  # 6 candidates x 3 folds + refit: once each
    assert info["state_misses"] == len(TEXTS)  # empty documents never reach the network
    assert info["state_hits"] > 0
    assert sum(info["model_loads"].values()) == loads + 1  # one network for every candidate


def test_cached_equals_uncached_bit_for_bit():
    emb = ToyEmbeddings(layer="all").fit()
    pooled = DocumentPoolEmbeddings(ToyEmbeddings(layer="all"), pooling="mean").fit()
    skembed.set_cache(enabled=False)
    uncached = emb.transform(TEXTS).to_numpy(), pooled.transform(TEXTS)
    assert skembed.cache_info()["state_entries"] == 0
    skembed.set_cache(enabled=True)
    before = skembed.cache_info()["documents_computed"]
    first = emb.transform(TEXTS).to_numpy(), pooled.transform(TEXTS)
    again = emb.transform(TEXTS).to_numpy(), pooled.transform(TEXTS)
    # The first call computes; the pooler and the second call read the stored states.
    assert skembed.cache_info()["documents_computed"] - before == len(TEXTS)
    for a, b, c in zip(uncached, first, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_states_kept_in_a_directory_are_read_back(tmp_path):
    # _shares_states = True: the base class's hooks write the states to safetensors batch
    # files and read them back, so a later session computes nothing.
    emb = ToyEmbeddings(layer="all").fit()
    expected = emb.transform(TEXTS).to_numpy()
    skembed.clear_cache()
    try:
        skembed.set_cache(directory=tmp_path)
        np.testing.assert_array_equal(emb.transform(TEXTS).to_numpy(), expected)
        assert skembed.cache_info()["documents_computed"] == len(TEXTS)
        skembed.clear_cache()  # the memory tier only: the directory is kept
        np.testing.assert_array_equal(emb.transform(TEXTS).to_numpy(), expected)
        assert skembed.cache_info()["documents_computed"] == 0
        assert skembed.cache_info()["shared_hits"] == len(TEXTS)
    finally:
        skembed.set_cache(directory=None)
