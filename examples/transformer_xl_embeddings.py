"""Transformer-XL word embeddings with skembed, offline, on the tiny test checkpoint.

transformers 5 removed Transformer-XL; skembed runs Hugging Face Transformer-XL checkpoints
(``transfo-xl-wt103`` and folders written by transformers 4.x) natively. This script uses the
tiny random model from skembed's tests (tests/data/transfo_xl/model_a, written by
transformers 4.35.2) so it runs anywhere in a few seconds; pass
``"transfo-xl-wt103"`` instead for the published model.

Run: python examples/transformer_xl_embeddings.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

os.environ.setdefault("SKEMBED_OFFLINE", "1")

import skembed  # noqa: E402
from skembed import DocumentPoolEmbeddings, TransformerXLEmbeddings  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "transfo_xl"
MODEL = DATA / "model_a"  # 3 layers, d_model 16, adaptive input embeddings (4 clusters)


def main() -> None:
    # 1. Token vectors: one row per word; unknown words ("Zebra") are embedded as <unk>.
    emb = TransformerXLEmbeddings(MODEL, layers="1,2,3", device="cpu").fit()
    out = emb.transform(["the film was shown in the city .", "Zebra"])
    print(f"layers='1,2,3': {emb.n_features_out_} features per word (3 layers x 16)")
    print("  token rows per document:", out.lengths.tolist())
    print(out.to_frame().iloc[:3, :5].round(3))

    # 2. Same vectors as transformers 4.x: compare with the hidden states it stored.
    docs = json.loads((DATA / "docs.json").read_text())
    expected = np.load(MODEL / "expected.npz")
    every = TransformerXLEmbeddings(MODEL, layers="all", device="cpu").fit().transform(docs)
    worst = max(
        np.abs(every[i].reshape(len(d), 4, 16).transpose(1, 0, 2) - expected[f"hidden_{i}"]).max()
        for i, d in enumerate(docs)
    )
    print(f"max difference to transformers 4.35 over {len(docs)} documents, 4 layers: {worst:.1e}")

    # 3. A long document is run segment by segment (tgt_len=8 here) with memory carried over.
    long_doc = ["the", "city", "had", "a", "new", "film", "school", "."] * 5
    print("40-word document ->", emb.transform([long_doc])[0].shape, "(every word gets a row)")

    # 4. Document vectors in a Pipeline; a grid search over layers runs the network once.
    texts = ["the film was first shown", "the school game season", "a new city film"] * 4
    texts += ["she had two songs", "her song was early", "they have one song"] * 4
    y = [0] * 12 + [1] * 12
    pipe = Pipeline(
        [
            ("emb", TransformerXLEmbeddings(MODEL, device="cpu")),
            ("pool", DocumentPoolEmbeddings(pooling="mean")),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    )
    grid = {"emb__layers": ["0", "-1", "1,2,3"], "emb__use_scalar_mix": [False, True]}
    search = GridSearchCV(pipe, grid, cv=3).fit(texts, y)
    print("grid search best:", search.best_params_, f"accuracy {search.best_score_:.2f}")
    print("cache:", {k: v for k, v in skembed.cache_info().items() if k.startswith("state_")})


if __name__ == "__main__":
    main()
