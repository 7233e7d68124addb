"""Token and document embeddings from the packaged MiniLM (runs offline in a few seconds)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from skembed import TransformerDocumentEmbeddings, TransformerEmbeddings  # noqa: E402

docs = [
    "I left my cell phone in the prison cell .",
    ["Blood", "cell", "counts", "were", "normal"],
    "",
]

emb = TransformerEmbeddings("all-MiniLM-L6-v2", layers="-1,-2", pooling_operation="mean").fit()
tokens = emb.transform(docs)
print(tokens)
print("tokens per document:", tokens.lengths.tolist(), "- vector size:", tokens.dim)
print(tokens.to_frame().iloc[:4, :4])

cell = tokens.to_frame().query("token == 'cell'").iloc[:, 1:].to_numpy()
unit = cell / np.linalg.norm(cell, axis=1, keepdims=True)
print("cosine of the three 'cell' vectors (phone, prison, blood):")
print(np.round(unit @ unit.T, 3))

doc = TransformerDocumentEmbeddings("all-MiniLM-L6-v2", pooling="mean", normalize=True).fit()
vectors = doc.transform(["A wonderful film.", "A great movie.", "The invoice is overdue."])
print("document similarities:")
print(np.round(vectors @ vectors.T, 3))
