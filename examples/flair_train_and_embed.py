"""Train your own Flair character LMs, then use them as features in a scikit-learn pipeline.

1. Writes a small corpus of generated sentences and trains a forward and a backward character
   language model on it with Flair's recipe (``train_language_model``; the ``skembed train-lm``
   command does the same), printing the validation perplexity as it falls.
2. Stacks the two models side by side (``StackedEmbeddings``), pools each document to one vector
   (``DocumentPoolEmbeddings``) and fits a logistic regression on a toy topic task.
3. Grid-searches ``with_whitespace`` x pooling and shows from the cache counters that the LMs ran
   once per document for the whole search.

The ``best-lm.pt`` files are in Flair's format: Flair's own ``FlairEmbeddings`` loads them too.
With a published model, pass its id instead, e.g. ``FlairEmbeddings("news-forward")``.

The corpus and the models are written to a temporary folder, removed at the end; pass
``--out DIR`` to keep them in ``DIR`` instead. Runs offline in about a minute on a CPU:

    python examples/flair_train_and_embed.py [--out DIR]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

import skembed
from skembed import DocumentPoolEmbeddings, FlairEmbeddings, StackedEmbeddings
from skembed.flair import train_language_model

ANIMALS = ["the cat", "a dog", "the horse", "my rabbit", "an old goat"]
FOODS = ["the bread", "some soup", "a ripe apple", "the cheese", "fresh rice"]
VERBS = ["is near", "looks like", "sits by", "was found with", "goes well with"]


def sentence(rng: random.Random, topic: list[str]) -> str:
    return f"{rng.choice(topic)} {rng.choice(VERBS)} {rng.choice(topic)} ."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="keep the corpus and the trained LMs here")
    args = parser.parse_args()
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        run(args.out)
        return
    with tempfile.TemporaryDirectory(prefix="skembed-flair-") as folder:
        run(Path(folder))


def run(folder: Path) -> None:
    torch.set_num_threads(1)  # models this small run fastest on one CPU thread
    rng = random.Random(0)
    corpus = folder / "corpus.txt"
    lines = [sentence(rng, rng.choice([ANIMALS, FOODS])) for _ in range(1500)]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"corpus: {len(lines)} lines, {corpus.stat().st_size} characters in {corpus}")

    sizes = {"hidden_size": 64, "embedding_size": 16, "sequence_length": 50, "mini_batch_size": 20}
    models = {}
    for name, forward in (("forward", True), ("backward", False)):
        start = time.perf_counter()
        result = train_language_model(
            corpus,
            folder / name,
            is_forward_lm=forward,
            max_steps=200,
            eval_every=40,
            show_progress_bar=False,
            **sizes,
        )
        ppl = ", ".join(f"{h['valid_perplexity']:.2f}" for h in result.history)
        print(f"{name} LM: validation perplexity {ppl} ({time.perf_counter() - start:.1f} s)")
        models[name] = str(result.best_path)

    texts = [sentence(rng, topic) for topic in [ANIMALS, FOODS] * 30]
    labels = [0, 1] * 30
    pipe = Pipeline(
        [
            (
                "embed",
                StackedEmbeddings(
                    [
                        ("fw", FlairEmbeddings(models["forward"])),
                        ("bw", FlairEmbeddings(models["backward"])),
                    ]
                ),
            ),
            ("pool", DocumentPoolEmbeddings(pooling="mean")),
            ("clf", LogisticRegression(max_iter=2000)),
        ]
    )
    train, test = slice(0, 40), slice(40, 60)
    pipe.fit(texts[train], labels[train])
    print(f"token vectors: {pipe['embed'].n_features_out_} features (forward + backward)")
    print(f"held-out accuracy: {pipe.score(texts[test], labels[test]):.2f}")

    skembed.clear_cache(models=False)
    grid = GridSearchCV(
        pipe,
        {
            "embed__fw__with_whitespace": [True, False],
            "embed__bw__with_whitespace": [True, False],
            "pool__pooling": ["mean", "max"],
        },
        cv=3,
    )
    grid.fit(texts, labels)
    info = skembed.cache_info()
    print(f"grid search: best {grid.best_params_}, accuracy {grid.best_score_:.2f}")
    print(
        f"LM forward passes: {info['state_misses']} document states computed, "
        f"{info['state_hits']} reused across {len(grid.cv_results_['params'])} candidates x 3 folds"
    )


if __name__ == "__main__":
    main()
