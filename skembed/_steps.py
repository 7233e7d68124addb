"""What the distributed front ends (:mod:`skembed.dask`, :mod:`skembed.ray`) need to know
about a fitted estimator or pipeline before running it: its final step, whether it gives token
rows, and the dtype of its output."""

from __future__ import annotations

import numpy as np
from sklearn.pipeline import Pipeline

from ._estimator import TextTransformerMixin

METHODS = ("transform", "predict", "predict_proba")  # the methods the front ends run


def final_step(estimator):
    """The step whose output the caller receives (the last non-passthrough step of a Pipeline).

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import Normalizer
    >>> type(final_step(make_pipeline(Normalizer(), "passthrough"))).__name__
    'Normalizer'
    """
    while isinstance(estimator, Pipeline):
        steps = [s for _, s in estimator.steps if s not in (None, "passthrough")]
        if not steps:
            raise ValueError("The pipeline has no step other than 'passthrough'.")
        estimator = steps[-1]
    return estimator


def is_token_level(estimator) -> bool:
    """Whether ``estimator.transform`` returns token vectors (:class:`RaggedEmbeddings`).

    Decided from the classes of the steps, never by running the model.

    Examples
    --------
    >>> from skembed import DocumentPoolEmbeddings, TransformerEmbeddings
    >>> is_token_level(TransformerEmbeddings()), is_token_level(DocumentPoolEmbeddings())
    (True, False)
    """
    from .document import _DocumentOutput

    last = final_step(estimator)
    return isinstance(last, TextTransformerMixin) and not isinstance(last, _DocumentOutput)


def output_dtype(estimator, method: str) -> np.dtype:
    """The dtype of ``method``'s output: the labels' for ``predict``; float32 after a skembed
    step, float64 after others (PCA...)."""
    last = final_step(estimator)
    if method == "predict":
        return np.asarray(getattr(last, "classes_", np.zeros(0))).dtype
    return np.dtype(np.float32 if isinstance(last, TextTransformerMixin) else np.float64)


def output_names(estimator, method: str, unknown: str) -> list[str]:
    """The names of the columns of ``method``'s output, known without running the model: the
    final step's classes for ``predict_proba``, else ``get_feature_names_out()``, as strings.
    ``unknown`` ends the TypeError raised when the feature names cannot be had (why the
    caller needs them, and what to do instead).

    Examples
    --------
    >>> from sklearn.preprocessing import Normalizer
    >>> output_names(Normalizer().fit([[1.0, 2.0]]), "transform", "")
    ['x0', 'x1']
    """
    if method == "predict_proba":
        return [str(c) for c in final_step(estimator).classes_]
    try:
        names = estimator.get_feature_names_out()
    except (AttributeError, TypeError, ValueError) as exc:
        raise TypeError(
            f"{type(estimator).__name__}.get_feature_names_out() failed ({exc}); {unknown}"
        ) from exc
    return [str(n) for n in names]
