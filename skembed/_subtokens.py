"""Word vectors from a transformer's sub-token states: the cheap choices of
:class:`~skembed.TransformerEmbeddings` (which layers, scalar mix, how a word's sub-tokens
are pooled), made on stored states without running the network."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import Any

import torch

from ._pooling import pool


class WordReader:
    """Word vectors read from the states of documents: the given ``layers`` (indices),
    mixed into one with ``mix`` weights (or None), each word's sub-tokens pooled by ``op``
    (``"first"``, ``"last"``, ``"first_last"`` or ``"mean"``). ``group_of(state)`` names the
    forward pass a state came from: the documents of one pass are read at once (after a grid
    search's first fold, a batch mixes a few passes)."""

    def __init__(self, layers, mix, op: str, group_of: Callable[[Any], Hashable]):
        self.layers, self.mix, self.op, self.group_of = list(layers), mix, op, group_of

    def groups(self, states: list) -> Iterator[tuple[list[int], torch.Tensor, list[int]]]:
        """Yield ``(positions in states, word vectors, words per document)`` per group."""
        index = torch.tensor(self.layers, device=states[0].sub.device)
        mix = None if self.mix is None else self.mix.to(index.device)
        members_of: dict[Hashable, list[int]] = {}
        for i, state in enumerate(states):
            members_of.setdefault(self.group_of(state), []).append(i)
        for members in members_of.values():
            words, counts = read_group([states[i] for i in members], index, mix, self.op)
            yield members, words, counts

    def words(self, states: list) -> list[torch.Tensor]:
        """One ``(n_words, n_features)`` tensor per document."""
        out: list = [None] * len(states)
        for members, words, counts in self.groups(states):
            for i, w in zip(members, torch.split(words, counts, 0)):
                out[i] = w
        return out

    def pooled(self, states: list, pooling: str) -> torch.Tensor:
        """One row per document: its word vectors pooled (``"mean"``, ``"max"``, ``"min"``).

        Each group's word vectors are pooled at once, then the small rows put together: few
        large operations (many small ones cost more than the arithmetic on short texts), and
        no copy of all the word vectors into one tensor (tens of MB per call with several
        layers)."""
        order, parts = [], []
        for members, words, counts in self.groups(states):
            order += members
            parts.append(pool(words, counts, pooling))
        pooled = torch.cat(parts) if len(parts) > 1 else parts[0]
        if order == list(range(len(states))):
            return pooled
        rows = torch.empty_like(pooled)
        rows[torch.as_tensor(order, device=rows.device)] = pooled
        return rows


def read_group(states, layers, mix, op: str) -> tuple[torch.Tensor, list[int]]:
    """Word vectors of documents whose states are views of one tensor, read at once, and
    the number of words of each document."""
    base = states[0].pass_states
    if base is None:  # a state made elsewhere: its own tensor
        base, spans = states[0].sub, states[0].spans
    else:
        spans = torch.cat([s.pass_spans for s in states])
    n_layers, n_pos, hidden = base.shape
    counts = [s.spans.shape[0] for s in states]  # not len(): a Python call per tensor
    n_sub = sum(s.sub.shape[1] for s in states)
    flat = base.reshape(n_layers * n_pos, hidden)  # row l * n_pos + p: layer l, position p
    if not any(s.n_empty for s in states):
        return _words(flat, n_pos, spans, n_sub, layers, mix, op), counts
    # Words without sub-tokens were left out of the model input: zero vectors. The others are
    # read as if those words were not there (the same rows, bit for bit).
    n_out = (1 if mix is not None else len(layers)) * hidden * (2 if op == "first_last" else 1)
    words = torch.zeros((len(spans), n_out), device=base.device)
    kept = (spans[:, 1] > spans[:, 0]).nonzero().flatten()
    if len(kept):
        words[kept] = _words(flat, n_pos, spans[kept], n_sub, layers, mix, op)
    return words, counts


def _words(flat, n_pos: int, spans, total: int, layers, mix, op: str) -> torch.Tensor:
    """Word vectors ``(n_words, n_features)`` from sub-token states.

    ``flat`` holds the states of ``n_pos`` positions layer after layer, ``(n_layers * n_pos,
    hidden)``; ``spans`` is the ``[start, end)`` position of each word (every word has one
    sub-token or more), ``total`` the number of the documents' sub-tokens (the words' ones,
    or more), ``layers`` the layer indices, ``mix`` scalar-mix weights or None. The rows
    needed are copied with one ``index_select``: unused layers and sub-tokens are never
    copied.
    """

    def read(positions):  # (..., n_layers, hidden) states at positions (...,)
        rows = positions.unsqueeze(-1) + layers * n_pos
        return flat.index_select(0, rows.reshape(-1)).view(*rows.shape, flat.shape[1])

    if op == "mean" and total != len(spans):
        # Each word's first sub-token, then its other sub-tokens added in order: only the
        # rows needed are read, once (most words have one sub-token).
        n_sub = spans[:, 1] - spans[:, 0]
        out = _mixed(read(spans[:, 0]), mix, dim=1).reshape(len(spans), -1)
        multi = (n_sub > 1).nonzero().flatten()
        extra = n_sub[multi] - 1
        word = torch.repeat_interleave(multi, extra)
        # Rank of every extra sub-token within its word: 1, 2, ...
        rank = torch.arange(1, len(word) + 1, device=spans.device)
        rank -= torch.repeat_interleave(extra.cumsum(0) - extra, extra)
        rest = _mixed(read(spans[word, 0] + rank), mix, dim=1).reshape(len(word), -1)
        return out.index_add_(0, word, rest).div_(n_sub.to(out.dtype)[:, None])
    if op in ("first", "mean"):  # a mean over one sub-token per word is its first
        pos = spans[:, :1]
    elif op == "last":
        pos = spans[:, 1:] - 1
    else:  # first_last: [first@each layer, last@each layer]
        pos = spans - torch.tensor([0, 1], device=spans.device)
    return _mixed(read(pos), mix, dim=2).reshape(len(spans), -1)


def _mixed(x: torch.Tensor, mix, dim: int) -> torch.Tensor:
    """``x`` as float32, its layers (``dim``) mixed into one when ``mix`` weights are given."""
    x = x.float()
    if mix is None:
        return x
    shape = [1] * x.dim()
    shape[dim] = -1
    return (x * mix.view(shape)).sum(dim, keepdim=True)
