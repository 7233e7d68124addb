"""A Pipeline + GridSearchCV over layers, sub-token pooling and document pooling (offline)."""

import os
import pickle
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402

import skembed  # noqa: E402
from skembed import DocumentPoolEmbeddings, TransformerEmbeddings  # noqa: E402
from skembed.datasets import load_reviews  # noqa: E402

texts, labels = load_reviews()
X_train, X_test, y_train, y_test = train_test_split(texts, labels, random_state=0)

pipe = Pipeline(
    [
        ("embed", TransformerEmbeddings("all-MiniLM-L6-v2")),
        ("pool", DocumentPoolEmbeddings()),
        ("clf", LogisticRegression(max_iter=1000)),
    ]
)
grid = {
    "embed__layers": ["-1", "-2", "-1,-2", "all"],
    "embed__pooling_operation": ["first", "mean"],
    "pool__pooling": ["mean", "max"],
}
start = time.perf_counter()
search = GridSearchCV(pipe, grid, cv=3).fit(X_train, y_train)
print(f"16 candidates x 3 folds in {time.perf_counter() - start:.1f} s")
print("cache:", {k: v for k, v in skembed.cache_info().items() if k != "model_loads"})
print("best:", search.best_params_, f"cv accuracy {search.best_score_:.3f}")
print(f"test accuracy {search.score(X_test, y_test):.3f}")

# The same search in two worker processes: they share what the network computed (through a
# temporary folder), so each review runs through the network once among them, and the refit
# here reads their states instead of running the network again.
skembed.clear_cache(models=False)
start = time.perf_counter()
parallel = GridSearchCV(pipe, grid, cv=3, n_jobs=2).fit(X_train, y_train)
info = skembed.cache_info()
print(
    f"n_jobs=2 in {time.perf_counter() - start:.1f} s (worker start and model loads included); "
    f"the refit read {info['shared_hits']} of {len(X_train)} reviews' states from the workers"
)
print("best with n_jobs=2:", parallel.best_params_)

blob = pickle.dumps(search.best_estimator_)
print(f"the fitted pipeline pickles to {len(blob) / 1024:.0f} KiB (no weights inside)")
restored = pickle.loads(blob)
assert (restored.predict(X_test) == search.predict(X_test)).all()
print("restored pipeline predicts the same")
