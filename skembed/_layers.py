"""Cheap choices on stored layer states: which layers, and how several are mixed into one."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

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
    """Normalised scalar-mix weights: uniform when ``weights`` is None, else ``w / sum(w)``."""
    if weights is None:
        return torch.full((n,), 1.0 / n)
    w = torch.as_tensor([float(x) for x in weights], dtype=torch.float32)
    if w.numel() != n:
        raise ValueError(f"scalar_mix_weights has {w.numel()} values for {n} selected layers.")
    if (w < 0).any() or float(w.sum()) <= 0:
        raise ValueError("scalar_mix_weights must be non-negative with a positive sum.")
    return w / w.sum()


def scalar_mix(stacked: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum over the first (layer) dimension, keeping it as size 1."""
    w = weights.to(device=stacked.device, dtype=torch.float32)
    shape = (-1,) + (1,) * (stacked.dim() - 1)
    return (stacked.float() * w.view(shape)).sum(0, keepdim=True)
