"""Pool the token vectors of documents into one row per document."""

from __future__ import annotations

import numpy as np
import torch


def pool(data: torch.Tensor, lengths, pooling: str) -> torch.Tensor:
    """Pool a flat ``(total_tokens, dim)`` tensor into ``(n_docs, dim)``; empty documents give zeros.

    Examples
    --------
    >>> import torch
    >>> pool(torch.tensor([[1.0], [3.0], [5.0]]), [2, 0, 1], "mean").tolist()
    [[2.0], [0.0], [5.0]]
    """
    lengths = torch.as_tensor(np.asarray(lengths, dtype=np.int64), device=data.device)
    n_docs = len(lengths)
    index = torch.repeat_interleave(torch.arange(n_docs, device=data.device), lengths)
    out = torch.zeros((n_docs, data.shape[1]), dtype=data.dtype, device=data.device)
    if pooling == "mean":
        out.index_add_(0, index, data)
        return out.div_(lengths.clamp(min=1).to(data.dtype)[:, None])
    reduce = "amax" if pooling == "max" else "amin"
    target = index[:, None].expand_as(data)
    return out.scatter_reduce_(0, target, data, reduce=reduce, include_self=False)


def pool_tensors(tensors: list[torch.Tensor], pooling: str) -> torch.Tensor:
    """One pooled row per ``(n_tokens, dim)`` tensor (see :func:`pool`)."""
    return pool(torch.cat(tensors, 0), [len(t) for t in tensors], pooling)
