"""Run fitted skembed estimators and pipelines on Ray Data, one model per actor.

:func:`transform` maps a pool of Ray actors over a :class:`ray.data.Dataset`: each actor
unpickles the fitted estimator (which pickles without its weights), loads the model once with
its first batch (through :data:`skembed.cache.MODELS`) and reuses it for every later batch.
The output keeps every column of the input except the text column, in the same rows and
order, and adds one column per output feature, named by the estimator's
``get_feature_names_out``. :func:`predict` and :func:`predict_proba` do the same for a fitted
pipeline ending in a classifier.

The output has one row per document, so the estimator must return one row per document: a
pooler, a document embedder, or a pipeline whose output is 2-D. A token embedder (such as
:class:`~skembed.TransformerEmbeddings`) is refused; wrap it in
:class:`~skembed.DocumentPoolEmbeddings`, or use :mod:`skembed.dask`, which writes one row per
token.

This module needs the ``ray`` extra: ``pip install 'skembed[ray]'``.
"""

from __future__ import annotations

import numbers
import re
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from ._steps import METHODS, final_step, is_token_level, output_dtype, output_names
from .base import check_choice

try:
    import ray.data
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "skembed.ray needs Ray Data: pip install 'skembed[ray]' (or pip install 'ray[data]')."
    ) from exc

PREDICTION = "prediction"  # the output column of predict
# How many of a row's other columns an input error quotes to say which row it was.
QUOTED_COLUMNS = 3


def _check_document_level(estimator) -> None:
    if is_token_level(estimator):
        last = final_step(estimator)
        raise TypeError(
            f"{type(last).__name__} returns token vectors (one row per token), but "
            "skembed.ray gives one row per document: wrap it in "
            "DocumentPoolEmbeddings(embedder, pooling='mean') (or put a DocumentPoolEmbeddings "
            "after it in the pipeline), or use skembed.dask.transform for one row per token."
        )


def output_columns(estimator, method: str = "transform") -> list[str]:
    """The names of the columns that :func:`transform` adds, known without running the model.

    Parameters
    ----------
    estimator : fitted skembed estimator or Pipeline
    method : {"transform", "predict", "predict_proba"}, default="transform"
        ``transform``: the estimator's ``get_feature_names_out()``; ``predict``:
        ``["prediction"]``; ``predict_proba``: the classes of the final step, as strings.

    Returns
    -------
    list of str

    Examples
    --------
    >>> from skembed import TransformerDocumentEmbeddings
    >>> emb = TransformerDocumentEmbeddings().fit()
    >>> names = output_columns(emb)
    >>> len(names), names[0]
    (384, 'doc_0')
    """
    check_choice("method", method, METHODS)
    check_is_fitted(estimator)
    if method == "predict":
        return [PREDICTION]
    if method == "transform":
        _check_document_level(estimator)
    return output_names(
        estimator,
        method,
        "skembed.ray names its output columns by the feature names. Make every step support "
        "get_feature_names_out, or use Dataset.map_batches with your own function.",
    )


def _empty_dtype(estimator, method: str) -> np.dtype:
    """The column dtype of a batch without rows (sklearn steps such as PCA refuse zero rows)."""
    return output_dtype(estimator, method)


def _check_concurrency(concurrency) -> int | tuple[int, int]:
    def is_count(n) -> bool:
        return isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1

    if is_count(concurrency):
        return int(concurrency)
    if (
        isinstance(concurrency, tuple)
        and len(concurrency) == 2
        and all(map(is_count, concurrency))
        and concurrency[0] <= concurrency[1]
    ):
        return (int(concurrency[0]), int(concurrency[1]))
    raise ValueError(
        f"concurrency={concurrency!r} is not valid: give the number of actors (an int >= 1), "
        "or (min, max) with 1 <= min <= max for a pool that grows with the work."
    )


def _check_resource(name: str, value) -> None:
    if value is None:
        return
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value >= 0:
        raise ValueError(f"{name}={value!r} is not valid: give a number >= 0.")


def _check_columns(known, column: str, added: list[str]) -> None:
    """Refuse a missing text column, or an output name that an input column already has."""
    if column not in known:
        raise ValueError(
            f"The dataset has no column {column!r} (its columns: {list(known)[:10]}): pass "
            "column='the text column'."
        )
    clash = sorted(set(added) & (set(known) - {column}))
    if clash:
        raise ValueError(
            f"The dataset already has columns named like the output ({clash[:5]}); rename "
            "them (Dataset.rename_columns) or drop them first."
        )


class _Batches:
    """The callable class of the actors: one fitted estimator applied to pandas batches."""

    def __init__(self, estimator, column: str, method: str, columns: list[str], empty_dtype):
        self.estimator = estimator
        self.column = column
        self.method = method
        self.columns = columns
        self.empty_dtype = empty_dtype

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        _check_columns(batch.columns, self.column, self.columns)
        rest = batch.drop(columns=[self.column])
        if len(batch) == 0:
            return _join(rest, np.zeros((0, len(self.columns)), self.empty_dtype), self.columns)
        # Arrow's list<string> arrives as numpy arrays; skembed reads token lists.
        docs = [d.tolist() if isinstance(d, np.ndarray) else d for d in batch[self.column]]
        try:
            out = getattr(self.estimator, self.method)(docs)
        except (TypeError, ValueError) as exc:
            _add_location(exc, rest)
            raise
        if hasattr(out, "detach"):  # output="torch" gives a tensor, possibly on a GPU
            out = out.detach().cpu().numpy()
        values = np.asarray(out.to_numpy() if hasattr(out, "to_numpy") else out)
        values = values.reshape(len(values), -1)
        if values.shape != (len(batch), len(self.columns)):
            raise ValueError(
                f"{type(self.estimator).__name__}.{self.method} returned {values.shape[0]} rows "
                f"of {values.shape[1]} values for {len(batch)} documents; skembed.ray needs one "
                f"row of {len(self.columns)} values (its output columns) per document."
            )
        return _join(rest, values, self.columns)


def _join(rest: pd.DataFrame, values: np.ndarray, columns: list[str]) -> pd.DataFrame:
    added = pd.DataFrame(values, columns=columns, index=rest.index)
    return pd.concat([rest, added], axis=1)


def _add_location(exc: Exception, rest: pd.DataFrame) -> None:
    """Say which row an input error (``Document i ...``) is about, by its other columns."""
    match = re.match(r"Document (\d+)", str(exc))
    if match and int(match.group(1)) < len(rest) and len(rest.columns):
        row = rest.iloc[int(match.group(1)), :QUOTED_COLUMNS].to_dict()
        exc.add_note(f"In this Ray batch, document {match.group(1)} is the row with {row}.")
    else:
        exc.add_note("Raised while embedding a Ray Data batch.")


def transform(
    estimator,
    dataset: ray.data.Dataset,
    *,
    column: str = "text",
    method: str = "transform",
    batch_size: int = 512,
    concurrency: int | tuple[int, int] = 1,
    num_gpus: float = 0,
    num_cpus: float | None = None,
    map_batches_args: dict[str, Any] | None = None,
) -> ray.data.Dataset:
    """Embed the text column of a Ray dataset lazily, one model load per actor.

    Parameters
    ----------
    estimator : fitted skembed estimator or Pipeline
        Its output must have one row per document (see the module docstring). Shipped to the
        actors without its weights; each actor loads the model with its first batch.
    dataset : ray.data.Dataset
        The documents (strings, or lists of token strings) in ``column``, with any other
        columns (ids, labels...), which the output keeps.
    column : str, default="text"
        The text column. It is not in the output.
    method : {"transform", "predict", "predict_proba"}, default="transform"
        Which method of ``estimator`` to apply (see :func:`predict`, :func:`predict_proba`).
    batch_size : int, default=512
        Rows per call of an actor. The estimator's own ``batch_size`` still sets how many
        documents go through the network at once.
    concurrency : int or (int, int), default=1
        The number of actors, or ``(min, max)`` for a pool that Ray grows with the work.
    num_gpus : float, default=0
        GPUs per actor. An estimator fitted with ``device="auto"`` runs on the actor's GPU
        (Ray sets each actor's ``CUDA_VISIBLE_DEVICES``): one actor per GPU, ``num_gpus=1``.
    num_cpus : float, optional
        CPUs per actor (Ray's default is 1). Leave CPUs to the tasks that read the data: with
        every CPU held by actors, nothing feeds them.
    map_batches_args : dict, optional
        Other arguments of :meth:`ray.data.Dataset.map_batches` (``memory``, ``resources``,
        ``accelerator_type``, ``runtime_env``...). Ray Data restarts an actor that dies and
        retries its batch on it by default.

    Returns
    -------
    ray.data.Dataset
        Lazy: nothing runs until it is consumed. The input's other columns, then the columns of
        :func:`output_columns`, of the dtype the estimator returns (float32 from a skembed
        step, float64 from most other sklearn steps); the input's rows in the input's order
        (the returned dataset preserves the order of its blocks).

    Examples
    --------
    >>> import pandas as pd, ray.data
    >>> from skembed import TransformerDocumentEmbeddings
    >>> import skembed.ray
    >>> emb = TransformerDocumentEmbeddings().fit()
    >>> frame = pd.DataFrame({"id": [7, 8], "text": ["one", "two words"]})
    >>> texts = ray.data.from_pandas(frame)  # doctest: +SKIP
    >>> out = skembed.ray.transform(emb, texts, num_cpus=0.5)  # doctest: +SKIP
    >>> result = out.to_pandas()  # doctest: +SKIP
    >>> result.shape, result["id"].tolist()  # doctest: +SKIP
    ((2, 385), [7, 8])
    """
    columns = output_columns(estimator, method)
    if not isinstance(dataset, ray.data.Dataset):
        raise TypeError(
            f"dataset must be a ray.data.Dataset, got {type(dataset).__name__}; for pandas use "
            "ray.data.from_pandas(frame)."
        )
    if not isinstance(column, str):
        raise TypeError(f"column must be the name of the text column, got {column!r}.")
    if (
        not isinstance(batch_size, numbers.Integral)
        or isinstance(batch_size, bool)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size={batch_size!r} is not valid: give an int >= 1.")
    size = _check_concurrency(concurrency)
    if isinstance(size, tuple):
        actors = ray.data.ActorPoolStrategy(min_size=size[0], max_size=size[1])
    else:
        actors = ray.data.ActorPoolStrategy(size=size)
    if num_gpus is None:
        raise ValueError("num_gpus=None is not valid: give a number >= 0.")
    _check_resource("num_gpus", num_gpus)
    _check_resource("num_cpus", num_cpus)
    known = dataset.columns(fetch_if_missing=False)  # None: checked by the actors instead
    if known is not None:
        _check_columns(known, column, columns)
    out = dataset.map_batches(
        _Batches,
        fn_constructor_kwargs={
            "estimator": estimator,
            "column": column,
            "method": method,
            "columns": columns,
            "empty_dtype": _empty_dtype(estimator, method),
        },
        batch_size=int(batch_size),
        batch_format="pandas",
        compute=actors,
        num_gpus=num_gpus or None,
        num_cpus=num_cpus,
        **(map_batches_args or {}),
    )
    # Actors finish blocks out of order; this dataset (and what is built on it) keeps the
    # input's order. Its own DataContext, so the caller's datasets are left as they were.
    out = ray.data.Dataset.copy(out, _deep_copy=True)
    out.context.execution_options.preserve_order = True
    return out


def predict(estimator, dataset: ray.data.Dataset, **kwargs) -> ray.data.Dataset:
    """Predict the labels of a Ray dataset's documents with a fitted pipeline.

    The same as ``transform(estimator, dataset, method="predict", **kwargs)``: the input's other
    columns and a ``prediction`` column, in the input's order.

    Examples
    --------
    >>> import pandas as pd, ray.data
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from skembed import TransformerDocumentEmbeddings
    >>> import skembed.ray
    >>> texts = ["good film", "great film", "bad film", "awful film"]
    >>> pipe = make_pipeline(TransformerDocumentEmbeddings(), LogisticRegression())
    >>> pipe = pipe.fit(texts, ["pos", "pos", "neg", "neg"])
    >>> frame = pd.DataFrame({"id": [1, 2], "text": ["good", "awful"]})
    >>> data = ray.data.from_pandas(frame)  # doctest: +SKIP
    >>> out = skembed.ray.predict(pipe, data, num_cpus=0.5)  # doctest: +SKIP
    >>> list(out.to_pandas().columns)  # doctest: +SKIP
    ['id', 'prediction']
    """
    return transform(estimator, dataset, method="predict", **kwargs)


def predict_proba(estimator, dataset: ray.data.Dataset, **kwargs) -> ray.data.Dataset:
    """Class probabilities of a Ray dataset's documents, one column per class (named as a string).

    The same as ``transform(estimator, dataset, method="predict_proba", **kwargs)``.

    Examples
    --------
    >>> import pandas as pd, ray.data
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from skembed import TransformerDocumentEmbeddings
    >>> import skembed.ray
    >>> texts = ["good film", "great film", "bad film", "awful film"]
    >>> pipe = make_pipeline(TransformerDocumentEmbeddings(), LogisticRegression())
    >>> pipe = pipe.fit(texts, ["pos", "pos", "neg", "neg"])
    >>> frame = pd.DataFrame({"id": [1, 2], "text": ["good", "awful"]})
    >>> data = ray.data.from_pandas(frame)  # doctest: +SKIP
    >>> out = skembed.ray.predict_proba(pipe, data, num_cpus=0.5)  # doctest: +SKIP
    >>> list(out.to_pandas().columns)  # doctest: +SKIP
    ['id', 'neg', 'pos']
    """
    return transform(estimator, dataset, method="predict_proba", **kwargs)
