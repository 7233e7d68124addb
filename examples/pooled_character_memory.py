"""PooledFlairEmbeddings: a word memory built in ``fit``, pooled with each document in ``transform``.

1. Writes a small random Flair-format character LM to a temporary folder, removed at the end
   (any Flair ``.pt`` file or id works the same way, e.g.
   ``PooledFlairEmbeddings("news-forward")``).
2. Fits ``PooledFlairEmbeddings`` on a corpus and shows the memory: its size, a word's count,
   and that the pooled half of a token in a new document is the element-wise minimum of the
   word's memory entry and its occurrences in that document.
3. Refits with every pooling and shows from the cache counters that the LM ran once per
   document for all four memories; pickles the fitted estimator with its memory.
4. Grid-searches the pooling in a Pipeline with ``DocumentPoolEmbeddings``.

Runs offline in a few seconds on a CPU:

    python examples/pooled_character_memory.py
"""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

import skembed
from skembed import DocumentPoolEmbeddings, FlairEmbeddings, PooledFlairEmbeddings
from skembed.flair import CharLM

CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,'\n"
CORPUS = [
    "Washington is the capital city .",
    "George Washington was the first president .",
    "the capital has a big river",
    "Paris is a capital too , and Paris is old",
    "George lives in Paris",
]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="skembed-pooled-") as folder:
        run(Path(folder) / "lm.pt")


def run(path: Path) -> None:
    torch.set_num_threads(1)  # a model this small runs fastest on one thread
    torch.manual_seed(0)
    CharLM(CHARS, hidden_size=32, embedding_size=8).save(path)
    print(f"wrote a random Flair character LM (32 features per token) to {path}")

    emb = PooledFlairEmbeddings(str(path), pooling="min", device="cpu").fit(CORPUS)
    print(f"\nmemory: {emb.memory_size_} words from {len(CORPUS)} documents")
    print(f"  'Paris' seen {emb.memory_counts_[emb.vocabulary_['Paris']]} times")

    doc = "Paris and George met in Paris".split()
    out = emb.transform([doc])[0]
    local = FlairEmbeddings(str(path), device="cpu").fit().transform([doc])[0]
    print(f"new document {doc}: {out.shape[0]} tokens x {out.shape[1]} features [local ; pooled]")
    here = local[[i for i, t in enumerate(doc) if t == "Paris"]].min(0)
    want = np.minimum(emb.memory_[emb.vocabulary_["Paris"]], here)
    print(f"  pooled 'Paris' = min(memory, both occurrences): {np.allclose(out[0, 32:], want)}")
    print(f"  unseen 'met' keeps its local vector as pooled: {np.allclose(out[3, 32:], local[3])}")

    skembed.clear_cache(models=False)
    for pooling in ("min", "max", "mean", "fade"):
        emb.set_params(pooling=pooling).fit(CORPUS)
    info = skembed.cache_info()
    print(
        f"\nfour poolings fitted: the LM ran on {info['state_misses']} documents "
        f"(the corpus has {len(CORPUS)}), {info['state_hits']} came from the state cache"
    )
    blob = pickle.dumps(emb)
    back = pickle.loads(blob)
    same = np.allclose(back.transform([doc])[0], emb.transform([doc])[0], atol=1e-6)
    print(f"pickled with its memory: {len(blob)} bytes, same vectors after loading: {same}")

    texts = [
        "Anna met Bob in Rome",
        "Clara and Dan visit Oslo",
        "Eve wrote to Frank from Lima",
        "Gina saw Hugo near Kyiv",
        "the rain fell on the hills",
        "a cold wind and a grey sky",
        "the river runs to the sea",
        "some bread and a cup of tea",
    ] * 2
    labels = [1] * 4 + [0] * 4 + [1] * 4 + [0] * 4
    pipe = make_pipeline(
        PooledFlairEmbeddings(str(path), device="cpu"),
        DocumentPoolEmbeddings(pooling="mean"),
        LogisticRegression(max_iter=1000),
    )
    grid = {"pooledflairembeddings__pooling": ["min", "max", "mean", "fade"]}
    search = GridSearchCV(pipe, grid, cv=2).fit(texts, labels)
    print(
        f"\ngrid search over pooling: best {search.best_params_}, cv accuracy "
        f"{search.best_score_:.2f} (a random LM: this shows the mechanics, not the quality)"
    )


if __name__ == "__main__":
    main()
