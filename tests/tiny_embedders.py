"""Every public embedder and pooler of skembed, built on tiny test-made models.

Used by the reliability, property and fault tests: :func:`build_files` writes the tiny model
files of the non-transformer families into a folder (a Flair character LM, an ELMo
options/weights pair, a GloVe-style text file, a Transformer-XL folder with a long segment);
:func:`make` builds an estimator by name from those files and the ``tiny_model`` fixture's
transformer folders (see ``tiny_models.py``).
"""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

import numpy as np
import torch
from sklearn.pipeline import make_pipeline

import skembed as S
from skembed.elmo import ElmoOptions, write_random_elmo
from skembed.flair import CharLM

TRANSFO_XL = Path(__file__).parent / "data" / "transfo_xl" / "model_b"

# name -> the tiny transformer family it runs on (None: not a Hugging Face model)
EMBEDDERS = {
    "TransformerEmbeddings": "bert",
    "BertEmbeddings": "bert",
    "OpenAIGPTEmbeddings": "openai-gpt",
    "OpenAIGPT2Embeddings": "gpt2",
    "XLNetEmbeddings": "xlnet",
    "XLMEmbeddings": "xlm",
    "RoBERTaEmbeddings": "roberta",
    "TransformerXLEmbeddings": None,
    "FlairEmbeddings": None,
    "PooledFlairEmbeddings": None,
    "CharacterEmbeddings": None,
    "ELMoEmbeddings": None,
    "WordEmbeddings": None,
    "StackedEmbeddings": None,
}
POOLERS = {
    "DocumentPoolEmbeddings": "bert",  # wrapping an embedder
    "DocumentPoolEmbeddings-pipeline": None,  # standing after one in a Pipeline
    "TransformerDocumentEmbeddings": "bert",
    "TransformerDocumentEmbeddings-gpt2": "gpt2",  # no CLS token: the last sub-token
}
ALL = {**EMBEDDERS, **POOLERS}


def build_files(folder: Path) -> dict[str, str]:
    """Write the tiny non-transformer models into ``folder``; return their paths by family."""
    folder = Path(folder)
    torch.manual_seed(0)
    lm = folder / "flair-lm.pt"
    CharLM(string.ascii_letters + string.digits + " .,!?", hidden_size=8, embedding_size=4).save(lm)
    options = ElmoOptions.from_dict(
        {
            "char_cnn": {
                "embedding": {"dim": 4},
                "filters": [[1, 4], [2, 4]],
                "n_highway": 1,
                "activation": "relu",
            },
            "lstm": {"dim": 16, "projection_dim": 4, "n_layers": 2, "cell_clip": 3, "proj_clip": 3},
        }
    )
    elmo = write_random_elmo(folder / "elmo", options, seed=0)
    glove = folder / "glove.txt"
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "mat", "hello", "world", "berlin"]
    glove.write_text("".join(f"{w} {' '.join(f'{v:.3f}' for v in rng.random(3))}\n" for w in words))
    # The fixture's Transformer-XL runs segments of 8 words; a long segment keeps a
    # 20,000-word document fast (the weights do not depend on the segment length).
    txl = folder / "transfo-xl"
    shutil.copytree(TRANSFO_XL, txl)
    config = json.loads((txl / "config.json").read_text())
    config["tgt_len"] = 512
    (txl / "config.json").write_text(json.dumps(config))
    return {
        "flair": str(lm),
        "elmo": (str(elmo[0]), str(elmo[1])),
        "glove": str(glove),
        "transfo-xl": str(txl),
    }


def make(name: str, files: dict, tiny_model, **common):
    """A fresh, unfitted estimator called ``name`` (see :data:`ALL`) on tiny models."""
    common = {"device": "cpu", **common}
    family = ALL[name]
    hf = tiny_model(family) if family else None
    if name == "TransformerEmbeddings":
        return S.TransformerEmbeddings(hf, **common)
    if name == "BertEmbeddings":
        return S.BertEmbeddings(hf, layers="-1,-2", **common)  # the tiny model has 2 layers
    if name in ("OpenAIGPTEmbeddings", "OpenAIGPT2Embeddings", "XLNetEmbeddings", "XLMEmbeddings"):
        return getattr(S, name)(hf, **common)
    if name == "RoBERTaEmbeddings":
        return S.RoBERTaEmbeddings(hf, **common)
    if name == "TransformerXLEmbeddings":
        return S.TransformerXLEmbeddings(files["transfo-xl"], layers="-1,0", **common)
    if name == "FlairEmbeddings":
        return S.FlairEmbeddings(files["flair"], **common)
    if name == "PooledFlairEmbeddings":
        return S.PooledFlairEmbeddings(files["flair"], pooling="mean", **common)
    if name == "CharacterEmbeddings":
        return S.CharacterEmbeddings(
            char_embedding_dim=4, hidden_size_char=4, random_state=0, **common
        )
    if name == "ELMoEmbeddings":
        return S.ELMoEmbeddings(files["elmo"], **common)
    if name == "WordEmbeddings":
        return S.WordEmbeddings(files["glove"], **common)
    if name == "StackedEmbeddings":
        return S.StackedEmbeddings(
            [("word", make("WordEmbeddings", files, tiny_model, **common)),
             ("flair", make("FlairEmbeddings", files, tiny_model, **common))]
        )  # fmt: skip
    if name == "DocumentPoolEmbeddings":
        return S.DocumentPoolEmbeddings(S.TransformerEmbeddings(hf, **common), pooling="max")
    if name == "DocumentPoolEmbeddings-pipeline":
        return make_pipeline(
            make("FlairEmbeddings", files, tiny_model, **common), S.DocumentPoolEmbeddings()
        )
    if name.startswith("TransformerDocumentEmbeddings"):
        return S.TransformerDocumentEmbeddings(
            hf, pooling="mean" if family == "bert" else "cls", **common
        )
    raise ValueError(f"unknown embedder {name!r}")


def is_pooler(name: str) -> bool:
    return name in POOLERS


def rows(out) -> list[np.ndarray]:
    """Per-document arrays of a token embedder's output, or the rows of a pooler's."""
    if isinstance(out, S.RaggedEmbeddings):
        return out.to_list()
    return list(np.asarray(out))
