"""Cheap choices on stored layer states: which layers, and how several are mixed into one."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch


def parse_layers(spec, n_layers: int) -> list[int]:
    """Layer indices (0 = embedding layer, -1 = last) from a ``layers`` parameter.

    Parameters
    ----------
    spec : str, int or sequence of int
        ``"-1,-2"``, ``"all"``, ``3`` or ``(0, -1)``.
    n_layers : int
        Number of stored layers, the embedding layer included.

    Returns
    -------
    list of int
        Non-negative indices, in the order given.

    Examples
    --------
    >>> parse_layers("-1,-2", 7)
    [6, 5]
    >>> parse_layers("all", 3)
    [0, 1, 2]
    """
    valid = f"integers from {-n_layers} to {n_layers - 1}, comma-separated, or 'all'"
    if isinstance(spec, str):
        if spec.strip().lower() == "all":
            return list(range(n_layers))
        try:
            items = [int(s) for s in spec.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"layers={spec!r} is not valid; use {valid}.") from None
    elif isinstance(spec, numbers.Integral) and not isinstance(spec, bool):
        items = [int(spec)]
    elif isinstance(spec, Sequence) and all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in spec
    ):
        items = [int(s) for s in spec]
    else:
        raise ValueError(f"layers={spec!r} is not valid; use {valid}.")
    if not items:
        raise ValueError(f"layers={spec!r} selects no layer; use {valid}.")
    bad = [i for i in items if not -n_layers <= i < n_layers]
    if bad:
        raise ValueError(
            f"layers={spec!r}: layer {bad[0]} does not exist in a model with {n_layers} layers "
            f"(the embedding layer included); use {valid}."
        )
    return [i % n_layers for i in items]


def mix_weights(weights, n: int) -> torch.Tensor:
    """Normalised scalar-mix weights: uniform when ``weights`` is None, else ``w / sum(w)``.

    Each weight must be a finite, non-negative real number, and one must be positive. The
    division is done in float64 after scaling by the largest weight, so that no weight, however
    large or small, overflows or turns into NaN.

    Examples
    --------
    >>> mix_weights((1e300, 1e300, 2e300), 3).tolist()
    [0.25, 0.25, 0.5]
    """
    if weights is None:
        return torch.full((n,), 1.0 / n)
    if isinstance(weights, np.ndarray) and weights.ndim == 1:
        weights = tuple(weights.tolist())
    values = (
        list(weights) if isinstance(weights, Sequence) and not isinstance(weights, str) else None
    )
    if values is None or not all(
        isinstance(x, numbers.Real) and not isinstance(x, bool | np.bool_) for x in values
    ):
        raise ValueError(
            f"scalar_mix_weights must be a tuple of numbers, one per selected layer; got {weights!r}."
        )
    if len(values) != n:
        raise ValueError(f"scalar_mix_weights has {len(values)} values for {n} selected layers.")
    w = np.asarray(values, dtype=np.float64)
    if not np.isfinite(w).all():
        raise ValueError(f"scalar_mix_weights must be finite numbers; got {weights!r}.")
    if (w < 0).any() or not (w > 0).any():
        raise ValueError(
            f"scalar_mix_weights must be non-negative with a positive sum; got {weights!r}."
        )
    w = w / w.max()  # every weight now in [0, 1]: the sum below cannot overflow
    return torch.as_tensor(w / w.sum(), dtype=torch.float32)


def scalar_mix(stacked: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum over the first (layer) dimension, keeping it as size 1."""
    w = weights.to(device=stacked.device, dtype=torch.float32)
    shape = (-1,) + (1,) * (stacked.dim() - 1)
    return (stacked.float() * w.view(shape)).sum(0, keepdim=True)
