"""TransformerEmbeddings on the packaged MiniLM against a direct transformers computation."""

import numpy as np
import pytest
import torch

from skembed import BertEmbeddings, TransformerDocumentEmbeddings, TransformerEmbeddings

DOCS = [
    "The cat sat on the mat .".split(),
    "Unbelievably , tokenization splits words into pieces !".split(),
    ["Berlin"],
    "A much longer sentence about a prison cell , a cell phone and a blood cell".split(),
]


@pytest.fixture(scope="module")
def direct(minilm_path):
    """Per document: hidden states (layers, n_sub, H) of the real sub-tokens and word_ids."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    model = AutoModel.from_pretrained(minilm_path).eval()
    out = []
    for words in DOCS:
        enc = tok(words, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            hs = model(**enc, output_hidden_states=True).hidden_states
        out.append((torch.stack(hs)[:, 0], enc.word_ids()))
    return out


def _expected(hidden, word_ids, layers, op, mix=None):
    n_words = max(w for w in word_ids if w is not None) + 1
    vecs = []
    for w in range(n_words):
        pos = [i for i, x in enumerate(word_ids) if x == w]
        per_layer = hidden[layers]  # (l, T, H)
        if mix is not None:
            per_layer = (per_layer * torch.tensor(mix)[:, None, None]).sum(0, keepdim=True)
        first, last = per_layer[:, pos[0]], per_layer[:, pos[-1]]
        if op == "first":
            parts = [first]
        elif op == "last":
            parts = [last]
        elif op == "first_last":
            parts = [first, last]
        else:
            parts = [per_layer[:, pos].mean(1)]
        vecs.append(torch.cat([p.reshape(-1) for p in parts]))
    return torch.stack(vecs).numpy()


@pytest.mark.parametrize("op", ["first", "last", "first_last", "mean"])
@pytest.mark.parametrize("layers, idx", [("-1", [6]), ("0,3", [0, 3]), ("all", list(range(7)))])
def test_matches_direct_computation(minilm_path, direct, op, layers, idx):
    emb = TransformerEmbeddings(minilm_path, layers=layers, pooling_operation=op).fit()
    result = emb.transform(DOCS)
    assert result.lengths.tolist() == [len(d) for d in DOCS]
    for i, (hidden, word_ids) in enumerate(direct):
        np.testing.assert_allclose(result[i], _expected(hidden, word_ids, idx, op), atol=1e-5)


def test_scalar_mix(minilm_path, direct):
    emb = TransformerEmbeddings(minilm_path, layers="-1,-2,-3", use_scalar_mix=True).fit()
    weighted = TransformerEmbeddings(
        minilm_path, layers="-1,-2,-3", use_scalar_mix=True, scalar_mix_weights=(2, 1, 1)
    ).fit()
    assert emb.n_features_out_ == 384
    for i, (hidden, word_ids) in enumerate(direct):
        expected = _expected(hidden, word_ids, [6, 5, 4], "first", mix=[1 / 3] * 3)
        np.testing.assert_allclose(emb.transform([DOCS[i]])[0], expected, atol=1e-5)
        expected = _expected(hidden, word_ids, [6, 5, 4], "first", mix=[0.5, 0.25, 0.25])
        np.testing.assert_allclose(weighted.transform([DOCS[i]])[0], expected, atol=1e-5)


def test_first_last_order_follows_flair(minilm_path, direct):
    emb = TransformerEmbeddings(minilm_path, layers="0,3", pooling_operation="first_last").fit()
    hidden, word_ids = direct[1]
    vec = emb.transform([DOCS[1]])[0]
    word = 2  # "tokenization": several sub-tokens
    pos = [i for i, x in enumerate(word_ids) if x == word]
    assert len(pos) > 1
    parts = [hidden[0, pos[0]], hidden[3, pos[0]], hidden[0, pos[-1]], hidden[3, pos[-1]]]
    np.testing.assert_allclose(vec[word], torch.cat(parts).numpy(), atol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 32])
def test_batch_invariance(minilm_path, batch_size):
    import skembed

    skembed.clear_cache(models=False)
    emb = TransformerEmbeddings(minilm_path, layers="-1,-2", batch_size=batch_size).fit()
    alone = [emb.transform([d]).to_numpy() for d in DOCS]
    skembed.clear_cache(models=False)
    together = emb.transform(DOCS[::-1] + ["x y"] * 5)
    for i, a in enumerate(alone):
        np.testing.assert_allclose(together[len(DOCS) - 1 - i], a, atol=1e-5)


def test_string_documents_and_tokenizer(minilm_path):
    emb = TransformerEmbeddings(minilm_path).fit()
    np.testing.assert_allclose(
        emb.transform(["The cat sat on the mat ."]).to_numpy(),
        emb.transform([DOCS[0]]).to_numpy(),
        atol=1e-6,
    )
    custom = TransformerEmbeddings(minilm_path, tokenizer=lambda s: s.split("|")).fit()
    assert custom.transform(["New York|is|big"]).lengths.tolist() == [3]


def test_long_document_gets_every_token(minilm_path):
    words = ("the quick brown fox jumps over the lazy dog " * 80).split()  # 720 words
    emb = TransformerEmbeddings(minilm_path).fit()
    result = emb.transform([words, ["short", "one"]])
    assert result.lengths.tolist() == [720, 2]
    flat = result.to_numpy()
    assert np.isfinite(flat).all()
    # Tokens in the middle of a window see context on both sides: the same word in the same
    # context far from the ends gives nearly the same vector in different windows.
    vec = result[0]
    cos = (vec[99] @ vec[450]) / np.linalg.norm(vec[99]) / np.linalg.norm(vec[450])
    assert cos > 0.95
    # Each word is one sub-token here, so the first window is the first 510 words: the words
    # that only that window covers (the first 255) equal the embedding of those 510 words alone.
    head = emb.transform([words[:510]])[0]
    np.testing.assert_allclose(head[:255], vec[:255], atol=1e-5)
    assert np.abs(head[300:510] - vec[300:510]).max() > 1e-3  # later words use a later window


def test_words_without_subtokens_get_a_zero_vector(minilm_path):
    """As in Flair: left out of the model input (see tests/test_alignment.py)."""
    emb = TransformerEmbeddings(minilm_path).fit()
    result = emb.transform([["hello", "\u200b", "", "world"]])
    assert result.lengths.tolist() == [4]
    assert not result[0][1:3].any()
    without = emb.transform([["hello", "world"]])
    np.testing.assert_allclose(result[0][[0, 3]], without[0], rtol=0, atol=1e-5)


def test_bert_family_defaults(minilm_path):
    emb = BertEmbeddings(minilm_path).fit()
    assert emb.get_params()["layers"] == "-1,-2,-3,-4"
    assert emb.transform([["Berlin", "is", "nice"]])[0].shape == (3, 4 * 384)
    assert emb.get_feature_names_out()[0] == "bert_0"


def test_sentence_transformers_parity(minilm_path):
    st = pytest.importorskip("sentence_transformers")
    texts = [
        "The cat sat on the mat.",
        "Sentence embeddings, computed the scikit-learn way!",
        "Hello",
        "",
        "Zürich's café serves naïve crème brûlée.",
    ]
    model = st.SentenceTransformer(minilm_path, device="cpu")
    expected = model.encode(texts, convert_to_numpy=True)
    emb = TransformerDocumentEmbeddings(minilm_path, pooling="mean", normalize=True).fit()
    np.testing.assert_allclose(emb.transform(texts), expected, atol=1e-5)
