"""The state cache: cached and uncached results are identical; budget, eviction, off, clear.

Results are compared bit for bit where the same states are combined (a cached state is the
very tensor an uncached run computes on the same batches), and within 1e-5 where documents
meet in different batches (batch invariance).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import RidgeClassifier
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

import skembed
from skembed import (
    DocumentPoolEmbeddings,
    TransformerDocumentEmbeddings,
    TransformerEmbeddings,
)
from skembed._caches import StateCache, doc_key
from skembed.cache import STATES
from skembed.transformer import POOLING_OPERATIONS

LONG = " ".join(["the quick brown fox jumps over the lazy dog"] * 12)  # several windows
TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "a cell phone in a prison cell near a blood cell",
    "",
    "Berlin and Paris are cities , New York is big !",
    "unbelievable tokenization happens here 12345",
    LONG,
    "fox",
    "xylophones quizzically jabbering over zigzagging wharves",  # many sub-tokens per word
]
MORE = [f"{w} cell number {i} , the dog" for i, w in enumerate("abcdefgh")]
LABELS = [0, 1] * 8


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Every test starts from an empty, enabled cache with the default budget, and leaves one."""
    budget = STATES.max_bytes
    skembed.set_cache(enabled=True)
    skembed.clear_cache(models=False)
    yield
    skembed.set_cache(enabled=True, max_bytes=budget)
    skembed.clear_cache(models=False)


@pytest.fixture(scope="module")
def bert(tiny_model) -> str:
    return tiny_model("bert")


def uncached(fn):
    skembed.set_cache(enabled=False)
    try:
        return fn()
    finally:
        skembed.set_cache(enabled=True)


def shuffled(texts, seed=0):
    order = np.random.default_rng(seed).permutation(len(texts))
    return [texts[i] for i in order], order


def token_arrays(emb, texts):
    return [np.asarray(a) for a in emb.transform(texts).to_list()]


@pytest.mark.parametrize(
    "params",
    [
        dict(layers="-1", pooling_operation="first"),
        dict(layers="0,-1", pooling_operation="last"),
        dict(layers="all", pooling_operation="first_last"),
        dict(layers="-1,1", pooling_operation="mean"),
        dict(layers="all", pooling_operation="mean", use_scalar_mix=True),
        dict(
            layers="0,2", pooling_operation="first", use_scalar_mix=True, scalar_mix_weights=(1, 3)
        ),
    ],
)
def test_token_embeddings_cached_equal_uncached(bert, params):
    emb = TransformerEmbeddings(bert, batch_size=3, **params).fit()
    reference = uncached(lambda: token_arrays(emb, TEXTS))
    assert skembed.cache_info()["state_entries"] == 0
    cold = token_arrays(emb, TEXTS)  # fills the cache, on the same batches
    warm = token_arrays(emb, TEXTS)  # every state from the cache
    for ref, a, b in zip(reference, cold, warm):
        np.testing.assert_array_equal(a, ref)
        np.testing.assert_array_equal(b, ref)
    # Cached states of different passes meet in new batches: still the same bits per document.
    texts, order = shuffled(TEXTS + ["a new text about cells"])
    mixed = token_arrays(emb, texts)
    fresh = uncached(lambda: token_arrays(emb, texts))
    for k, i in enumerate(order):
        if i < len(TEXTS):
            np.testing.assert_array_equal(mixed[k], reference[i])
        np.testing.assert_allclose(mixed[k], fresh[k], rtol=0, atol=1e-5)


def test_switching_combine_parameters_reuses_states(bert):
    emb = TransformerEmbeddings(bert, batch_size=4).fit()
    settings = [(layers, op) for layers in ("0", "1,2", "all") for op in POOLING_OPERATIONS]

    def each_setting():
        return [
            token_arrays(emb.set_params(layers=layers, pooling_operation=op).fit(), TEXTS)
            for layers, op in settings
        ]

    want = uncached(each_setting)
    emb.set_params(layers="-1", pooling_operation="first").fit().transform(
        TEXTS
    ).to_numpy()  # computed now (transform defers the vectors)
    misses = skembed.cache_info()["state_misses"]
    assert misses == len([t for t in TEXTS if t])
    got = each_setting()
    assert skembed.cache_info()["state_misses"] == misses  # the network never ran again
    for arrays, expected in zip(got, want):
        for a, b in zip(arrays, expected):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("normalize", [False, True])
def test_document_embeddings_cached_equal_uncached(bert, pooling, normalize):
    emb = TransformerDocumentEmbeddings(
        bert, pooling=pooling, normalize=normalize, layers="-1,0", batch_size=3
    ).fit()
    reference = uncached(lambda: emb.transform(TEXTS))
    cold = emb.transform(TEXTS)
    warm = emb.transform(TEXTS)
    np.testing.assert_array_equal(cold, reference)
    np.testing.assert_array_equal(warm, reference)
    texts, order = shuffled(TEXTS)
    np.testing.assert_array_equal(emb.transform(texts), reference[order])


@pytest.mark.parametrize("pooling", ["mean", "max", "min"])
def test_document_pool_cached_equal_uncached(bert, pooling):
    emb = TransformerEmbeddings(bert, layers="-1,-2", pooling_operation="mean", batch_size=3)
    pooled = DocumentPoolEmbeddings(emb, pooling=pooling).fit(TEXTS)
    reference = uncached(lambda: pooled.transform(TEXTS))
    cold = pooled.transform(TEXTS)
    rows = skembed.cache_info()["state_entries"]
    warm = pooled.transform(TEXTS)  # pooled rows from the cache
    np.testing.assert_array_equal(cold, reference)
    np.testing.assert_array_equal(warm, reference)
    assert skembed.cache_info()["state_entries"] == rows
    texts, order = shuffled(TEXTS)
    np.testing.assert_array_equal(pooled.transform(texts), reference[order])
    # The same vectors as a pooler standing after the embedder, within batch invariance.
    after = DocumentPoolEmbeddings(pooling=pooling).fit_transform(emb.fit().transform(TEXTS))
    np.testing.assert_allclose(reference, after, rtol=0, atol=1e-5)
    assert not np.abs(reference[2]).any()  # the empty document pools to zeros


def test_document_pool_rows_follow_every_parameter(bert):
    """Pooled rows are kept per combine setting and pooling: never served for another one."""
    seen = {}
    for layers in ("-1", "0"):
        for op in ("first", "mean"):
            for pooling in ("mean", "max"):
                emb = TransformerEmbeddings(bert, layers=layers, pooling_operation=op)
                pooled = DocumentPoolEmbeddings(emb, pooling=pooling).fit(TEXTS)
                got = pooled.transform(TEXTS)
                np.testing.assert_array_equal(got, uncached(lambda p=pooled: p.transform(TEXTS)))
                seen[(layers, op, pooling)] = got
    # the settings give different vectors (so a mix-up would have been seen above)
    values = list(seen.values())
    assert all(not np.array_equal(a, b) for i, a in enumerate(values) for b in values[i + 1 :])
    # set_params then refit on a fitted pooler: the new setting, not the old rows
    pooled = DocumentPoolEmbeddings(TransformerEmbeddings(bert, layers="-1")).fit(TEXTS)
    pooled.transform(TEXTS)
    pooled.set_params(embeddings__layers="0").fit(TEXTS)
    np.testing.assert_array_equal(pooled.transform(TEXTS), seen[("0", "first", "mean")])


@pytest.mark.parametrize("op", ["first", "last", "mean"])
@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_pooled_rows_are_kept_per_layer_and_shared(bert, op, pooling, monkeypatch):
    """Layers "-1,0" after "-1" and "0" pools nothing new; "0,-1" reads the same rows in
    its own order; a candidate with one new layer pools that layer alone. Bit for bit equal
    to uncached runs (the same states, combined column by column)."""

    def pooled(layers):
        emb = TransformerEmbeddings(bert, layers=layers, pooling_operation=op, batch_size=3)
        return DocumentPoolEmbeddings(emb, pooling=pooling).fit(TEXTS)

    reference = {
        layers: uncached(lambda layers=layers: pooled(layers).transform(TEXTS))
        for layers in ("-1,0", "0,-1", "1,-1")
    }
    pooled("-1").transform(TEXTS)
    pooled("0").transform(TEXTS[::-1])
    combined = []  # the layers of every pooling computation from here on
    original = TransformerEmbeddings._combine_pooled

    def spy(self, model, states, pooling_, layers=None):
        combined.append(self.layers if layers is None else layers)
        return original(self, model, states, pooling_, layers)

    monkeypatch.setattr(TransformerEmbeddings, "_combine_pooled", spy)
    np.testing.assert_array_equal(pooled("-1,0").transform(TEXTS), reference["-1,0"])
    np.testing.assert_array_equal(pooled("0,-1").transform(TEXTS), reference["0,-1"])
    assert combined == []
    np.testing.assert_array_equal(pooled("1,-1").transform(TEXTS), reference["1,-1"])
    assert combined and all(layers == (1,) for layers in combined)


@pytest.mark.parametrize(
    "params",
    [
        dict(layers="0,-1", pooling_operation="first_last"),
        dict(layers="all", pooling_operation="mean", use_scalar_mix=True),
    ],
)
def test_pooled_rows_of_combined_layers_are_kept_whole(bert, params):
    """Settings whose columns mix layers (first_last, scalar mix) are kept as whole rows."""
    emb = TransformerEmbeddings(bert, batch_size=3, **params)
    pooled = DocumentPoolEmbeddings(emb, pooling="max").fit(TEXTS)
    reference = uncached(lambda: pooled.transform(TEXTS))
    np.testing.assert_array_equal(pooled.transform(TEXTS), reference)
    np.testing.assert_array_equal(pooled.transform(TEXTS), reference)
    tables = [v for k, (v, _) in STATES._lru._entries.items() if "pooled" in k]
    assert len(tables) == 1 and len(tables[0].index) == len(TEXTS)  # one block: whole rows


def test_documents_with_and_without_cached_states_in_one_call(bert):
    """Some documents' states cached (by another setting), others not, in any order: each
    gets its own row, equal to an uncached run within batch invariance, and the network
    runs only on the new ones."""
    first = TransformerEmbeddings(bert, layers="0", batch_size=3).fit()
    first.transform(TEXTS[3:]).to_numpy()  # computed now (transform defers the vectors)
    misses = skembed.cache_info()["state_misses"]
    texts, order = shuffled(TEXTS + MORE, seed=3)
    emb = TransformerEmbeddings(bert, layers="-1,0", pooling_operation="mean", batch_size=3)
    pooled = DocumentPoolEmbeddings(emb, pooling="mean").fit(texts)
    got = pooled.transform(texts)
    new = len([t for t in TEXTS[:3] + MORE if t])
    assert skembed.cache_info()["state_misses"] == misses + new
    reference = uncached(lambda: pooled.transform(texts))
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-5)
    assert not np.abs(got[list(order).index(2)]).any()  # the empty document: zeros


def test_pooled_rows_are_kept_on_the_host_and_counted(bert):
    pooled = DocumentPoolEmbeddings(TransformerEmbeddings(bert)).fit(TEXTS)
    out = pooled.transform(TEXTS + TEXTS[:2])  # a document twice: one row
    (table,) = [v[0] for k, v in STATES._lru._entries.items() if "pooled" in k]
    assert len(table.index) == table.n == len(TEXTS)
    assert isinstance(table.data, np.ndarray) and table.data.flags.owndata  # on the host
    (size,) = [v[1] for k, v in STATES._lru._entries.items() if "pooled" in k]
    assert size >= table.data.nbytes  # the budget counts the rows held
    assert not np.shares_memory(out, table.data)  # results are copies
    np.testing.assert_array_equal(out[-2:], out[:2])


def test_grid_search_runs_the_network_once_per_document(bert):
    pipe = Pipeline(
        [
            ("embed", DocumentPoolEmbeddings(TransformerEmbeddings(bert, batch_size=4))),
            ("clf", RidgeClassifier()),
        ]
    )
    grid = {
        "embed__embeddings__layers": ["-1", "0,-1"],
        "embed__embeddings__pooling_operation": ["first", "mean"],
        "embed__pooling": ["mean", "max"],
    }
    X = TEXTS + MORE
    TransformerEmbeddings(bert).fit()  # the model is loaded
    before = skembed.cache_info()["model_loads"]
    search = GridSearchCV(pipe, grid, cv=3).fit(X, LABELS)
    info = skembed.cache_info()
    assert info["state_misses"] == len([t for t in X if t])  # each document ran once
    assert info["model_loads"] == before  # clones and candidates share the loaded model
    # the refit model predicts the same with the cache switched off
    expected = search.predict(TEXTS)
    np.testing.assert_array_equal(uncached(lambda: search.predict(TEXTS)), expected)


def test_budget_evicts_least_recently_used_and_results_stay_identical(bert):
    emb = TransformerEmbeddings(bert, layers="all", batch_size=2).fit()
    reference = uncached(lambda: token_arrays(emb, TEXTS))
    emb.transform(TEXTS).to_numpy()  # computed now (transform defers the vectors)
    full = skembed.cache_info()["state_bytes"]
    assert full > 0
    skembed.set_cache(max_bytes=full // 3)
    info = skembed.cache_info()
    assert 0 < info["state_entries"] < len(TEXTS) - 1
    assert info["state_bytes"] <= full // 3
    for _ in range(2):  # recomputing evicted states gives the same bits
        for a, b in zip(token_arrays(emb, TEXTS), reference):
            np.testing.assert_array_equal(a, b)
        assert skembed.cache_info()["state_bytes"] <= full // 3


def test_state_cache_lru_order_and_key_bytes():
    cache = StateCache(max_bytes=10_000)
    doc = doc_key(["some", "tokens", "here"])
    keys = [("model", i, doc) for i in range(3)]
    for key in keys:
        cache.put(key, torch.zeros(100))  # 400 bytes of tensor each
    per_entry = cache.nbytes // 3
    assert per_entry > 400  # the document key counts too
    cache.get(keys[0])  # now the most recently used
    cache.resize(2 * per_entry)
    assert cache.get(keys[1]) is None
    assert cache.get(keys[0]) is not None and cache.get(keys[2]) is not None
    before = (cache.hits, cache.misses)
    cache.get(("model", 9, doc), count=False)
    cache.get(keys[0], count=False)
    assert (cache.hits, cache.misses) == before
    cache.put(("too", "big", doc), torch.zeros(10_000))  # over the budget: not stored
    assert len(cache) == 2
    # get_many: get on each key, in one call (same values, counters and recency)
    found = cache.get_many([keys[2], keys[1], keys[0]])
    assert found[1] is None and found[0] is not None and found[2] is not None
    assert (cache.hits, cache.misses) == (before[0] + 2, before[1] + 1)
    cache.put(("model", 7, doc), torch.zeros(100))  # evicts the least recently used: keys[2]
    assert cache.get_many([keys[2], keys[0]], count=False)[0] is None
    assert (cache.hits, cache.misses) == (before[0] + 2, before[1] + 1)


def test_switch_off_and_clear(bert):
    emb = TransformerEmbeddings(bert).fit()
    first = token_arrays(emb, TEXTS)
    assert skembed.cache_info()["state_entries"] > 0
    skembed.set_cache(enabled=False)
    info = skembed.cache_info()
    assert not info["state_enabled"] and info["state_entries"] == 0
    off = token_arrays(emb, TEXTS)
    assert skembed.cache_info()["state_entries"] == 0
    skembed.set_cache(enabled=True)
    emb.transform(TEXTS).to_numpy()  # computed now (transform defers the vectors)
    skembed.clear_cache(models=False)
    info = skembed.cache_info()
    assert info["state_entries"] == info["state_bytes"] == info["state_hits"] == 0
    loads = sum(info["model_loads"].values())
    skembed.clear_cache()  # models too: a new estimator's fit loads the model again
    again = token_arrays(clone(emb).fit(), TEXTS)
    assert sum(skembed.cache_info()["model_loads"].values()) == loads + 1
    for a, b, c in zip(first, off, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    with pytest.raises(ValueError, match="max_bytes"):
        skembed.set_cache(max_bytes=-1)


@pytest.mark.parametrize("cache", [True, False])
def test_document_pool_works_through_large_inputs_chunk_by_chunk(bert, cache, monkeypatch):
    """Inputs are validated and pooled a chunk at a time (64 batches by default; here 2
    documents): the same rows as one chunk, errors naming the document in the whole input
    before any work."""
    from skembed import document

    X = pd.Series(TEXTS + MORE, index=[f"d{i}" for i in range(len(TEXTS + MORE))])
    emb = TransformerEmbeddings(bert, layers="-1,0", pooling_operation="mean", batch_size=1)
    pooled = DocumentPoolEmbeddings(emb, pooling="max").fit(X)
    skembed.set_cache(enabled=cache)
    whole = pooled.transform(X)
    skembed.clear_cache(models=False)
    monkeypatch.setattr(document, "_CHUNK_BATCHES", 2)
    chunked = pooled.transform(X)
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-5)
    assert chunked.shape == (len(X), emb.fit().n_features_out_)
    bad = X.copy()
    bad.iloc[-1] = None
    skembed.clear_cache(models=False)

    def no_forward(self, model, docs):
        raise AssertionError("the network ran before the input error")

    monkeypatch.setattr(TransformerEmbeddings, "_forward", no_forward)
    with pytest.raises(ValueError, match=r"Document 15 \(index label 'd15'\) is missing"):
        pooled.transform(bad)


def test_a_call_too_large_for_the_budget_keeps_no_states(bert, monkeypatch):
    """A pass over more documents than the budget holds would only push out other entries,
    and its own before they are read again: it keeps none of its states (its pooled rows
    still), while a call that fits keeps them all. Results are the same either way."""
    from skembed import document

    emb = TransformerEmbeddings(bert, batch_size=2).fit()
    emb.transform(MORE).to_numpy()  # computed now (transform defers the vectors)
    per_doc = max(size for _, size in STATES._lru._entries.values())  # states and key, the largest
    skembed.clear_cache(models=False)
    # The budget holds 10 short documents' states; calls over all 15 estimate more (from
    # their first, longest, batch).
    skembed.set_cache(max_bytes=int(per_doc * 10))
    X = TEXTS + MORE  # 15 documents with tokens
    reference = uncached(lambda: token_arrays(emb, X))
    for a, b in zip(token_arrays(emb, X), reference):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    assert skembed.cache_info()["state_entries"] == 0
    token_arrays(emb, MORE)  # 8 documents: kept
    assert skembed.cache_info()["state_entries"] == len(MORE)
    # DocumentPoolEmbeddings judges the whole input, not each chunk of it
    skembed.clear_cache(models=False)
    monkeypatch.setattr(document, "_CHUNK_BATCHES", 2)  # chunks of 4 documents
    pooled = DocumentPoolEmbeddings(emb).fit(X)
    rows = pooled.transform(X)
    info = skembed.cache_info()
    assert info["state_entries"] == 1  # the pooled rows only, one table of them
    assert all("pooled" in key for key in STATES._lru._entries)
    np.testing.assert_array_equal(pooled.transform(X), rows)  # served from the rows
    assert skembed.cache_info()["state_misses"] == info["state_misses"]


def test_fit_validates_in_chunks_and_names_the_document(bert, monkeypatch):
    from skembed import _network

    monkeypatch.setattr(_network, "_VALIDATE_CHUNK", 2)

    def tokenizer(text):
        if text == "boom":
            raise RuntimeError("cannot split")
        return text.split()

    X = pd.Series(["a b", "c", "d", "e f", "g", "boom"], index=list("uvwxyz"))
    emb = TransformerEmbeddings(bert, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"Document 5 \(index label 'z'\): the tokenizer failed"):
        emb.fit(X)
    assert emb.fit(X[:5]).n_features_out_ > 0


def test_row_table_grows_and_keeps_the_first_row_of_a_document():
    from skembed._rows import RowTable

    table = RowTable(3, np.float32)
    digests = [bytes([i]) * 16 for i in range(150)]
    rows = np.arange(450, dtype=np.float32).reshape(150, 3)
    table.add(digests[:40], rows[:40])
    table.add(digests[30:150] + digests[:2], np.vstack([rows[30:150], -rows[:2]]))
    assert table.n == len(table.index) == 150 and len(table.data) >= 150
    at = table.find(digests[::-1] + [b"\xff" * 16])
    assert at[-1] is None
    np.testing.assert_array_equal(table.take(at[:-1]), rows[::-1])  # first rows kept
    assert table.nbytes >= table.data.nbytes + 150 * 100
