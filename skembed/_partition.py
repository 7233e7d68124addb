"""One partition of documents to the pandas frame that :mod:`skembed.dask` gives for it.

:func:`embed_partition` applies a fitted estimator to one pandas partition and puts its
output into a frame (one row per document, or per token for a token-level estimator: see
:mod:`skembed.dask`); :func:`output_meta` is the empty frame that describes that output
(Dask's ``meta``), made from the estimator's feature names without running the model. Both
are re-exported, and documented, by :mod:`skembed.dask`. pandas only: no Dask here.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from ._steps import METHODS, is_token_level, output_dtype, output_names
from .base import check_choice
from .ragged import RaggedEmbeddings, token_column


def _resolve_dtype(estimator, method: str, dtype) -> np.dtype:
    return np.dtype(dtype) if dtype is not None else output_dtype(estimator, method)


def _columns(estimator, method: str) -> list[str]:
    return output_names(
        estimator,
        method,
        "the output columns of a Dask transform must be known before running the model. Make "
        "every step support get_feature_names_out, or use map_partitions with your own meta.",
    )


def _wrap(out, index, estimator, method: str, dtype) -> pd.DataFrame | pd.Series:
    """Put an estimator's output for one partition into the frame that :func:`output_meta` describes."""
    if isinstance(out, RaggedEmbeddings):
        # One row per token: the document's label repeated, then position, token, features.
        lengths = out.lengths
        position = np.concatenate([np.arange(n) for n in lengths] or [np.zeros(0, np.int64)])
        frame = pd.DataFrame(
            out.to_numpy().astype(dtype, copy=False),
            index=pd.Index(index).repeat(lengths),
            columns=_columns(estimator, method),
        )
        frame.insert(0, "position", position.astype(np.int64))
        tokens = [t for toks in out.tokens for t in toks]
        frame.insert(1, "token", token_column(tokens, dtype=pd.StringDtype()))
        return frame
    if hasattr(out, "detach"):  # output="torch" gives a tensor, possibly on a GPU
        out = out.detach().cpu().numpy()
    values = np.asarray(out.to_numpy() if hasattr(out, "to_numpy") else out)
    values = values.astype(dtype, copy=False)
    if method == "predict":
        return pd.Series(values, index=index, name="prediction")
    return pd.DataFrame(values, index=index, columns=_columns(estimator, method))


def output_meta(
    estimator, index=None, method: str = "transform", dtype=None
) -> pd.DataFrame | pd.Series:
    """The empty pandas object describing the output of :func:`~skembed.dask.transform` (Dask's ``meta``).

    Built from the fitted estimator's feature names and classes only: the model does not run.

    Parameters
    ----------
    estimator : fitted skembed estimator or Pipeline
    index : pandas Index, optional
        An index whose dtype and name the output keeps; a RangeIndex when omitted.
    method : {"transform", "predict", "predict_proba"}, default="transform"
    dtype : numpy dtype, optional
        Dtype of the feature columns: float32 after a skembed step, float64 after others.

    Examples
    --------
    >>> from skembed import TransformerDocumentEmbeddings
    >>> emb = TransformerDocumentEmbeddings().fit()
    >>> meta = output_meta(emb)
    >>> meta.shape, str(meta.dtypes.iloc[0])
    ((0, 384), 'float32')
    """
    check_choice("method", method, METHODS)
    check_is_fitted(estimator)
    dtype = _resolve_dtype(estimator, method, dtype)
    index = pd.RangeIndex(0) if index is None else index[:0]
    if method == "predict":
        empty = np.zeros(0)
    elif method == "transform" and is_token_level(estimator):
        names = _columns(estimator, method)
        empty = RaggedEmbeddings.from_list([], [], names, dim=len(names))
    else:
        empty = np.zeros((0, len(_columns(estimator, method))))
    return _wrap(empty, index, estimator, method, dtype)


def embed_partition(
    part, estimator, method: str = "transform", dtype=None, partition_info=None
) -> pd.DataFrame | pd.Series:
    """Apply ``estimator.<method>`` to one pandas partition; the result follows :func:`~skembed.dask.output_meta`.

    This is the function :func:`~skembed.dask.transform` maps over the partitions; use it
    directly with ``map_partitions``, ``dask.delayed`` or on any pandas Series.

    Parameters
    ----------
    part : pandas Series or one-column DataFrame
        The documents of one partition.
    estimator : fitted skembed estimator or Pipeline
    method : {"transform", "predict", "predict_proba"}, default="transform"
    dtype : numpy dtype, optional
        As in :func:`~skembed.dask.output_meta`.
    partition_info : dict, optional
        Filled in by Dask; its partition number is added to input errors.

    Examples
    --------
    >>> import pandas as pd
    >>> from skembed import TransformerDocumentEmbeddings
    >>> emb = TransformerDocumentEmbeddings().fit()
    >>> embed_partition(pd.Series(["a text", "another"], index=[10, 11]), emb).shape
    (2, 384)
    """
    if len(part) == 0:  # sklearn steps such as PCA refuse zero rows
        return output_meta(estimator, part.index, method, dtype)
    try:
        out = getattr(estimator, method)(part)
    except (TypeError, ValueError) as exc:
        _add_location(exc, part, partition_info)
        raise
    return _wrap(out, part.index, estimator, method, _resolve_dtype(estimator, method, dtype))


def _add_location(exc: Exception, part, partition_info) -> None:
    """Say which partition and index label an input error of skembed (``Document i ...``) is about."""
    where = f"Dask partition {partition_info['number']}" if partition_info else "This partition"
    match = re.match(r"Document (\d+)", str(exc))
    if match and int(match.group(1)) < len(part):
        label = part.index[int(match.group(1))]
        label = label.item() if isinstance(label, np.generic) else label
        exc.add_note(f"{where}: document {match.group(1)} is the row with index label {label!r}.")
    else:
        exc.add_note(f"Raised while embedding {where.lower()}.")
