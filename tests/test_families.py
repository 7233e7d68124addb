"""Every Hugging Face family listed in the contract, as a tiny random model, through the full API."""

import numpy as np
import pytest
import torch
from tiny_models import FAMILIES

from skembed import (
    DocumentPoolEmbeddings,
    OpenAIGPT2Embeddings,
    OpenAIGPTEmbeddings,
    RoBERTaEmbeddings,
    TransformerDocumentEmbeddings,
    TransformerEmbeddings,
    XLMEmbeddings,
    XLNetEmbeddings,
)

DOCS = [
    "the quick brown fox",
    "a cell phone , New York !",
    "",
    "\u200b x",
    "unbelievable " * 40,  # longer than the 64-position models: windows
    ["Berlin", "and", "Paris"],
]
N_WORDS = [4, 7, 0, 2, 40, 3]


@pytest.mark.parametrize("family", FAMILIES)
def test_family_full_api(tiny_model, family):
    path = tiny_model(family)
    emb = TransformerEmbeddings(path, layers="all", pooling_operation="first_last", batch_size=2)
    result = emb.fit().transform(DOCS)
    assert result.lengths.tolist() == N_WORDS
    assert result.dim == emb.n_features_out_ == 3 * 32 * 2
    flat = result.to_numpy()
    assert np.isfinite(flat).all()
    # batch invariance: each document alone gives the same rows
    for i, doc in enumerate(DOCS):
        np.testing.assert_allclose(emb.transform([doc]).to_numpy(), result[i], atol=1e-5)
    # the embedding layer alone is context free for the same word in the same position
    pooled = DocumentPoolEmbeddings(emb, pooling="max").fit(DOCS).transform(DOCS)
    assert pooled.shape == (6, emb.n_features_out_)
    assert (pooled[2] == 0).all()
    doc = TransformerDocumentEmbeddings(path, pooling="cls", batch_size=2).fit().transform(DOCS)
    assert doc.shape == (6, 32) and np.isfinite(doc).all()


def _direct(path, words, family):
    """Hidden states of the model run directly on the words, and the word of each sub-token."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = (
        transformers.T5EncoderModel if family == "t5" else transformers.AutoModel
    ).from_pretrained(path)
    ids, owner = [], []
    for i, w in enumerate(words):
        piece = tok(w, add_special_tokens=False)["input_ids"]
        ids += piece
        owner += [i] * len(piece)
    full = tok(words, is_split_into_words=True) if tok.is_fast else None
    if full is not None:
        assert [i for i in full["input_ids"] if i not in tok.all_special_ids] == [
            i for i in ids if i not in tok.all_special_ids
        ]
    enc = tok(" ".join(words)) if family == "xlm" else full
    with torch.no_grad():
        inputs = {k: torch.tensor([v]) for k, v in enc.items() if k in tok.model_input_names}
        hidden = model(**inputs, output_hidden_states=True).hidden_states
    special = [i for i, t in enumerate(enc["input_ids"]) if t in tok.all_special_ids]
    return torch.stack(hidden)[:, 0], special, owner


@pytest.mark.parametrize("family", ["bert", "gpt2", "roberta", "xlnet", "xlm", "t5"])
def test_family_matches_direct_forward(tiny_model, family):
    path = tiny_model(family)
    words = ["the", "quick", "brown", "fox", "jumps"]
    hidden, special, owner = _direct(path, words, family)
    content = [p for p in range(hidden.shape[1]) if p not in special]
    assert len(content) == len(owner)
    emb = TransformerEmbeddings(path, layers="all", pooling_operation="last").fit()
    got = emb.transform([words])[0]
    for w in range(len(words)):
        last = content[max(k for k, o in enumerate(owner) if o == w)]
        np.testing.assert_allclose(got[w], hidden[:, last].reshape(-1).numpy(), atol=1e-5)


def test_family_classes_use_seed_names(tiny_model):
    cases = [
        (OpenAIGPTEmbeddings, "openai-gpt", "pretrained_model_name_or_path"),
        (OpenAIGPT2Embeddings, "gpt2", "pretrained_model_name_or_path"),
        (XLNetEmbeddings, "xlnet", "pretrained_model_name_or_path"),
        (XLMEmbeddings, "xlm", "pretrained_model_name_or_path"),
        (RoBERTaEmbeddings, "roberta", "model"),
    ]
    for cls, family, first in cases:
        emb = cls(tiny_model(family))
        assert list(emb.get_params())[0] == first or first in emb.get_params()
        result = emb.fit().transform(["Berlin is nice"])
        factor = 2 if emb.pooling_operation == "first_last" else 1
        assert result[0].shape == (3, 32 * factor)


def test_roberta_fairseq_names_map_to_hugging_face():
    from skembed._hf.resolve import ALIASES

    assert ALIASES["roberta.large"] == "FacebookAI/roberta-large"
    with pytest.raises(FileNotFoundError, match="FacebookAI/roberta-base"):
        RoBERTaEmbeddings("roberta.base").fit()
