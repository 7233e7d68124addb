"""ELMo in a scikit-learn pipeline: embedding modes, document pooling and a grid search.

1. Writes a small ELMo in AllenNLP's file format (``options.json`` + ``weights.hdf5``) with
   random weights to a temporary folder, removed at the end (offline there is no published model to download; with
   one, pass ``model="original"`` or the two paths instead).
2. Embeds two sentences and prints the shape of each ``embedding_mode``.
3. Grid-searches ``embedding_mode`` x document pooling in a ``Pipeline`` with a logistic
   regression, and shows from the cache counters that the biLM ran once per document for the
   whole search.

Runs offline in a few seconds on a CPU:

    python examples/elmo_grid_search.py
"""

from __future__ import annotations

import tempfile
import time

from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

import skembed
from skembed import DocumentPoolEmbeddings, ELMoEmbeddings
from skembed.elmo import ElmoOptions, write_random_elmo

OPTIONS = {
    "char_cnn": {
        "embedding": {"dim": 8},
        "filters": [[1, 16], [2, 16], [3, 32], [4, 32]],
        "n_highway": 1,
        "activation": "relu",
    },
    "lstm": {"dim": 64, "projection_dim": 16, "n_layers": 2, "cell_clip": 3, "proj_clip": 3},
}

POSITIVE = [
    "what a wonderful film",
    "I loved every minute of it",
    "great acting and a great story",
    "wonderful music , lovely pictures",
    "a great and moving film",
    "I loved the actors",
    "lovely , funny and wonderful",
    "the story is great fun",
]
NEGATIVE = [
    "what a boring film",
    "I hated every minute of it",
    "bad acting and a dull story",
    "awful music , ugly pictures",
    "a dull and empty film",
    "I hated the actors",
    "boring , long and awful",
    "the story is bad",
]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="skembed-elmo-") as folder:
        run(folder)


def run(folder: str) -> None:
    start = time.perf_counter()
    files = write_random_elmo(folder, ElmoOptions.from_dict(OPTIONS), seed=0)
    print(f"1. wrote a random ELMo to {folder}: {[p.name for p in files]}")

    print("2. embedding modes for ['The bank was closed', 'River bank']:")
    for mode in ("all", "top", "average"):
        elmo = ELMoEmbeddings(model=files, embedding_mode=mode, device="cpu").fit()
        out = elmo.transform(["The bank was closed", "River bank"])
        print(f"   embedding_mode={mode!r:10} -> {out[0].shape} and {out[1].shape}")

    skembed.clear_cache(models=False)  # count the forward passes of the search alone
    pipe = Pipeline(
        [
            ("elmo", ELMoEmbeddings(model=files, device="cpu")),
            ("pool", DocumentPoolEmbeddings()),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    )
    grid = {"elmo__embedding_mode": ["all", "top", "average"], "pool__pooling": ["mean", "max"]}
    X, y = POSITIVE + NEGATIVE, [1] * len(POSITIVE) + [0] * len(NEGATIVE)
    search = GridSearchCV(pipe, grid, cv=4).fit(X, y)
    info = skembed.cache_info()
    print(f"3. grid search over {len(search.cv_results_['params'])} candidates x 4 folds:")
    for params, score in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"]):
        print(f"   {params} accuracy {score:.2f}")
    print(f"   best: {search.best_params_} ({search.best_score_:.2f}; random weights, so the")
    print("   scores only show the pipeline works, not what ELMo can do)")
    print(
        f"   biLM forward passes: {info['state_misses']} documents for {len(X)} distinct "
        f"documents; {info['state_hits']} cached reuses; model loaded "
        f"{sum(info['model_loads'].values())} time(s)"
    )
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
