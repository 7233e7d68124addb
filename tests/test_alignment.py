"""Words without sub-tokens: left out of the model input, zero vectors, the others unchanged.

A word the tokenizer reduces to nothing (a zero-width space, a lone control character, ``""``)
does not enter the model input and gets a zero vector, as Flair does; every other word of the
document gets exactly (bit for bit, same process, same batch composition) the vector it gets in
the document without that word.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import skembed
from skembed import (
    DocumentPoolEmbeddings,
    TransformerDocumentEmbeddings,
    TransformerEmbeddings,
)
from skembed._hf.doc_state import pack_states, unpack_states
from skembed._hf.forward import forward_documents
from skembed.transformer import POOLING_OPERATIONS

# Strings MiniLM's (BERT's) tokenizer maps to no sub-tokens: format and control characters,
# combining marks alone, whitespace-only strings, the replacement character, the empty string.
NOTHING = ["\u200b", "\ufeff", "\x00", "\x7f", "\u0301", "\u00ad", " ", "\u3000", "\ufffd", ""]
SETTINGS = [
    {"layers": "-1"},
    {"layers": "-1,-2"},
    {"layers": "-1,-2", "use_scalar_mix": True},
    {"layers": "all"},
]


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Each test computes its states (no state cached by another test hides a difference)."""
    skembed.clear_cache(models=False)
    yield
    skembed.clear_cache(models=False)


@pytest.fixture(scope="module")
def minilm(minilm_path):
    return TransformerEmbeddings(minilm_path, device="cpu").fit()


def test_minilm_tokenizer_maps_these_words_to_nothing(minilm):
    hf = minilm._get_model()
    assert hf.encode(NOTHING) == [[] for _ in NOTHING]


@pytest.mark.parametrize("op", POOLING_OPERATIONS)
@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(map(str, s.values())))
def test_word_without_subtokens_leaves_the_others_exactly(minilm, op, setting):
    emb = minilm.set_params(pooling_operation=op, **{"use_scalar_mix": False, **setting}).fit()
    base = emb.transform([["the", "cat"]])[0]
    for word in ("\u200b", "\ufeff", "\x00", "\u0301"):
        got = emb.transform([["the", word, "cat"]])[0]
        assert got.shape == (3, emb.n_features_out_)
        np.testing.assert_array_equal(got[[0, 2]], base)
        assert not got[1].any()


@pytest.mark.parametrize("op", POOLING_OPERATIONS)
def test_several_such_words_and_several_subtokens(minilm, op):
    """Words of several sub-tokens around such words, in a batch of several documents."""
    emb = minilm.set_params(layers="-1,-3", pooling_operation=op, use_scalar_mix=False).fit()
    words = ["\u200b", "Unbelievably", "", "\ufeff", "tokenization", "\x00", "works", "\u0301"]
    kept = [w for w in words if w not in NOTHING]
    other = ["Berlin", "is", "nice"]
    got = emb.transform([words, other]).to_list()
    skembed.clear_cache(models=False)  # both documents in one batch again, as above
    base = emb.transform([kept, other]).to_list()
    empty = np.isin(words, NOTHING)
    np.testing.assert_array_equal(got[0][~empty], base[0])
    assert not got[0][empty].any()
    np.testing.assert_array_equal(got[1], base[1])
    # the same pooled straight from the states (the path grid searches take)
    skembed.clear_cache(models=False)
    pooled = DocumentPoolEmbeddings(emb, pooling="max").fit([words]).transform([words, other])
    np.testing.assert_array_equal(pooled[0], got[0].max(0))


def test_document_of_only_such_words_keeps_its_rows(minilm):
    emb = minilm.set_params(layers="-1", pooling_operation="first", use_scalar_mix=False).fit()
    result = emb.transform([["\u200b", "\ufeff", ""], [], ["the", "cat"], "\u200b \x00"])
    assert result.lengths.tolist() == [3, 0, 2, 2]
    assert not result[0].any() and not result[3].any()
    assert np.isfinite(result.to_numpy()).all()
    np.testing.assert_array_equal(result[2], emb.transform([["the", "cat"]])[0])


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_document_embeddings(minilm_path, pooling):
    """The sub-tokens pooled are those of the other words: the same row as without them. A
    document of only such words is the empty text: the model reads its special tokens."""
    emb = TransformerDocumentEmbeddings(minilm_path, pooling=pooling, device="cpu").fit()
    np.testing.assert_array_equal(
        emb.transform([["the", "\u200b", "cat"]]), emb.transform([["the", "cat"]])
    )
    nothing = emb.transform([["\u200b", "\ufeff"]])
    np.testing.assert_array_equal(nothing, emb.transform([""]))
    assert nothing.shape == (1, 384) and np.isfinite(nothing).all() and nothing.any()
    assert emb.transform(["a", ["\u200b"], "b"]).shape == (3, 384)


def test_cached_states_give_the_same_zeros(minilm):
    """Rows combined from cached (and packed / unpacked) states equal the computed ones."""
    emb = minilm.set_params(layers="-1,-2", pooling_operation="mean", use_scalar_mix=False).fit()
    docs = [["a", "\u200b", "cell", "phone"], ["\ufeff"], ["unbelievable", ""]]
    first = emb.transform(docs)
    again = emb.transform(docs)  # from the state cache
    np.testing.assert_array_equal(again.to_numpy(), first.to_numpy())
    hf = emb._get_model()
    with torch.inference_mode():
        states = forward_documents(hf, docs, 8)
        unpacked = unpack_states(pack_states(states), "cpu")
        rows = emb._combine(hf, unpacked)
    assert [s.n_empty for s in unpacked] == [s.n_empty for s in states] == [1, 1, 1]
    np.testing.assert_array_equal(np.concatenate([r.numpy() for r in rows]), first.to_numpy())


@pytest.mark.parametrize(
    "family", ["bert", "albert", "gpt2", "openai-gpt", "xlnet", "xlm", "t5", "roberta"]
)
def test_families(tiny_model, family):
    """Every family, its own tokenizer (byte-level ones map only ``""`` to nothing; a space is
    their space marker); a document longer than the model's window (64) too."""
    path = tiny_model(family)
    emb = TransformerEmbeddings(path, layers="all", pooling_operation="first_last", device="cpu")
    emb.fit()
    hf = emb._get_model()
    candidates = ["", " ", "\u200b", "\u0301", "\x00"]
    nothing = [w for w, ids in zip(candidates, hf.encode(candidates)) if not ids]
    assert "" in nothing
    short = ["the", "quick", "fox"]
    long = ("the quick brown fox jumps over the lazy dog " * 12).split()
    for words in (short, long):
        with_nothing = [x for w in words for x in (w, *nothing)]
        got = emb.transform([with_nothing])[0]
        empty = np.isin(with_nothing, nothing)
        np.testing.assert_array_equal(got[~empty], emb.transform([words])[0])
        assert not got[empty].any()
    only = emb.transform([nothing, []])
    assert only.lengths.tolist() == [len(nothing), 0] and not only[0].any()
    doc = TransformerDocumentEmbeddings(path, pooling="mean", device="cpu").fit()
    np.testing.assert_array_equal(doc.transform([short + nothing]), doc.transform([short]))
    np.testing.assert_array_equal(doc.transform([nothing]), doc.transform([[]]))
