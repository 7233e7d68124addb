"""The per-model word cache (word -> sub-token ids): bounded in bytes, least recently used out,
off and cleared with the state cache (``skembed.set_cache`` / ``skembed.clear_cache``)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from tolerances import CONTRACT_ATOL

import skembed
from skembed import DocumentPoolEmbeddings, TransformerDocumentEmbeddings, TransformerEmbeddings
from skembed._hf.words import WORD_CACHE_BYTES, WordCache, _entry_bytes

DOCS = [
    "the quick brown fox jumps over the lazy dog",
    "a cell phone in a prison cell near a blood cell",
    "unbelievable tokenization happens here 12345",
]


@pytest.fixture(autouse=True)
def _fresh_cache():
    skembed.set_cache(enabled=True)
    skembed.clear_cache(models=False)
    yield
    skembed.set_cache(enabled=True)
    skembed.clear_cache(models=False)


@pytest.fixture(scope="module")
def minilm(minilm_path):
    return TransformerEmbeddings(minilm_path, device="cpu").fit()


def test_bounded_in_bytes_over_many_calls_of_new_long_tokens(minilm, monkeypatch):
    """20 calls of 300 new 10 kB tokens (60 MB of words) keep the cache within its budget,
    and the latest words in it."""
    hf = minilm._get_model()
    cache = hf.word_ids
    assert hf.encode(["00000" + "x" * 10_000]) == [[100]]  # one [UNK], as below
    # The tokenizer's normalizer takes 1 s per call on these 3 MB: ids as it gives them.
    monkeypatch.setattr(hf, "encode", lambda words: [[100] for _ in words])
    assert WORD_CACHE_BYTES < 20 * 300 * 10_000
    for call in range(20):
        tokens = [f"{call:02d}{i:03d}" + "x" * 10_000 for i in range(300)]
        assert minilm.transform([tokens]).to_numpy().shape == (300, 384)
        assert cache.nbytes <= cache.max_bytes == WORD_CACHE_BYTES
        assert all(t in cache for t in tokens[-100:])  # the most recent stay
    assert len(cache) < 20 * 300
    # the count is what the entries hold: at least their words and id lists
    words = cache._lru.keys()
    assert cache.nbytes == sum(_entry_bytes(w, cache[w]) for w in words)
    held = sum(sys.getsizeof(w) + sys.getsizeof(cache[w]) for w in words)
    assert cache.nbytes >= held > WORD_CACHE_BYTES // 2


def test_least_recently_used_go_first():
    cache = WordCache(max_bytes=3 * _entry_bytes("aaaa", [1, 2]))
    cache.add({"aaaa": [1, 2], "bbbb": [3, 4], "cccc": [5, 6]})
    assert cache.lookup(["aaaa", "zzzz"]) == {"aaaa": [1, 2], "zzzz": None}  # aaaa is recent
    cache.add({"dddd": [7, 8]})
    assert "bbbb" not in cache and all(w in cache for w in ("aaaa", "cccc", "dddd"))
    assert cache.nbytes == 3 * _entry_bytes("aaaa", [1, 2])
    cache.add({"e" * 10_000: [1]})  # larger than the whole budget: not kept, nothing evicted
    assert len(cache) == 3
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


def test_results_do_not_depend_on_the_word_cache(minilm, monkeypatch):
    """A budget too small for a call's words: they are tokenized again, the same vectors."""
    expected = minilm.transform(DOCS).to_numpy()
    cache = minilm._get_model().word_ids
    monkeypatch.setattr(cache, "max_bytes", 3 * _entry_bytes("quick", [1]))
    cache.clear()
    skembed.clear_cache(models=False)
    got = minilm.transform(DOCS).to_numpy()
    np.testing.assert_array_equal(got, expected)
    assert len(cache) <= 3


def test_set_cache_off_forgets_each_call_words(minilm_path, minilm):
    cache = minilm._get_model().word_ids
    minilm.transform(DOCS).to_numpy()  # the vectors are computed when first read
    assert len(cache) > 0
    skembed.set_cache(enabled=False)
    assert len(cache) == 0 and cache.nbytes == 0
    assert minilm.transform(DOCS).to_numpy().shape == (25, 384)
    assert len(cache) == 0
    rows = DocumentPoolEmbeddings(minilm).fit(DOCS).transform(DOCS)  # pooled from states
    assert rows.shape == (3, 384) and len(cache) == 0
    doc = TransformerDocumentEmbeddings(minilm_path, device="cpu").fit()
    assert doc.transform(DOCS).shape == (3, 384)
    assert len(doc._get_model().word_ids) == 0
    skembed.set_cache(enabled=True)
    minilm.transform(DOCS).to_numpy()
    assert len(cache) > 0


def test_clear_cache_empties_it(minilm):
    cache = minilm._get_model().word_ids
    minilm.transform(DOCS).to_numpy()  # the vectors are computed when first read
    assert len(cache) > 0
    skembed.clear_cache(models=False)
    assert len(cache) == 0 and cache.nbytes == 0
    minilm.transform(DOCS).to_numpy()
    skembed.clear_cache()
    assert len(cache) == 0


def test_only_documents_that_run_through_the_network_are_tokenized(minilm_path):
    """Documents whose states are stored are pooled without tokenizing their words again (a
    grid search pools every document for each candidate); new documents are, and the rows
    are those of a call that tokenized everything."""

    def pooler(layers):
        embedder = TransformerEmbeddings(minilm_path, layers=layers, device="cpu")
        return DocumentPoolEmbeddings(embedder, pooling="max").fit()

    texts = DOCS[:2] + ["a new document arrives"]
    first = pooler("-1")
    expected = first.transform(texts)
    cache = first.embeddings_._get_model().word_ids  # the model and its word cache are shared
    skembed.clear_cache(models=False)
    pooler("-1").transform(DOCS[:2])  # their states stored, their words tokenized
    cache.clear()
    pooler("-2").transform(DOCS[:2])  # a new setting: pooled again, from the stored states
    assert len(cache) == 0
    got = pooler("-1").transform(texts)
    assert set(cache._lru.keys()) == {"a", "new", "document", "arrives"}
    # The new document ran in another batch: the contract's 1e-5 across batches.
    np.testing.assert_allclose(got, expected, rtol=0, atol=CONTRACT_ATOL)
