"""The forward pass: documents as windows of sub-token ids (overlapping halves for long
documents), run in padded batches; every layer's states of each document's sub-tokens read
out of the batches with one index, each sub-token from the window where it is farthest from
an edge."""

from __future__ import annotations

import functools

import numpy as np
import torch

from .doc_state import DocState, doc_states, word_spans
from .load import HFModel
from .words import word_ids


def _windows(n: int, size: int) -> list[tuple[int, int]]:
    """Overlapping windows (half a window apart) covering ``n`` sub-tokens."""
    if n <= size:
        return [(0, n)]
    stride = size // 2
    starts = list(range(0, n - size, stride)) + [n - size]
    return [(s, s + size) for s in starts]


def _owner(n: int, windows: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """For each sub-token, the window where it is farthest from an edge, and its position there."""
    starts = torch.tensor([s for s, _ in windows])
    ends = torch.tensor([e for _, e in windows])
    i = torch.arange(n)
    # Starts and ends both increase, so the windows holding i are a short run [first, last]:
    # scan that run instead of an (n, n_windows) table (quadratic on very long documents).
    first = torch.searchsorted(ends, i, right=True)
    last = torch.searchsorted(starts, i, right=True) - 1
    best, margin = first, torch.minimum(i - starts[first], ends[first] - 1 - i)
    for k in range(1, int((last - first).max()) + 1):
        cand = torch.minimum(first + k, last)
        m = torch.minimum(i - starts[cand], ends[cand] - 1 - i)
        better = m > margin  # strict: ties keep the earlier window, as argmax did
        best, margin = torch.where(better, cand, best), torch.where(better, m, margin)
    return best.tolist(), (i - starts[best]).tolist()


def forward_documents(hf: HFModel, docs: list[list[str]], batch_size: int) -> list[DocState]:
    """Run the model on documents (windows for long ones); one :class:`DocState` per document.

    The states of all documents are read out of the padded batches with one index per layer
    (a gather per document costs more than the model itself on short texts), and each
    document's state holds views of that one tensor.
    """
    if not docs:
        return []
    device = next(hf.model.parameters()).device
    n_pre, n_suf = len(hf.prefix), len(hf.suffix)
    rows: list[list[int]] = []  # input ids of every window of every document
    plans = []  # per document: sub-tokens per word, number of sub-tokens, windows, first row
    for doc in docs:
        pieces = word_ids(hf, doc)
        content = [i for p in pieces for i in p]
        if not content and not (hf.prefix or hf.suffix):
            # A model needs one input: a text without sub-tokens reads as [UNK], which no word
            # owns (the words of such a text, if any, get zero vectors).
            content = list(hf.unk_ids)
        wins = _windows(len(content), hf.window)
        plans.append(([len(p) for p in pieces], len(content), wins, len(rows)))
        rows += [content[s:e] for s, e in wins]
    # Flat position of each row's first input in its batch's (rows x width) grid, the grids of
    # all batches laid end to end; left padding moves it right.
    length = np.array([len(r) for r in rows], dtype=np.int64) + n_pre + n_suf
    firsts = np.arange(0, len(rows), batch_size)
    width = np.maximum.reduceat(length, firsts)
    grid = np.zeros(len(firsts) + 1, dtype=np.int64)
    grid[1:] = np.cumsum(width * np.diff(np.append(firsts, len(rows))))
    batch = np.arange(len(rows)) // batch_size
    row_at = grid[batch] + (np.arange(len(rows)) - firsts[batch]) * width[batch]
    if hf.pad_left:
        row_at += width[batch] - length
    # What to read, document after document: its special tokens, then its sub-tokens.
    take = []
    for _, n, wins, first in plans:
        n_first = wins[0][1] - wins[0][0]
        take.append(row_at[first] + np.r_[0:n_pre, n_pre + n_first : n_pre + n_first + n_suf])
        if len(wins) == 1:
            take.append(row_at[first] + n_pre + np.arange(n))
        else:
            win, pos = _owner(n, wins)
            take.append(row_at[first + np.asarray(win)] + n_pre + np.asarray(pos))
    take = np.concatenate(take).astype(np.int64)
    states = _run_windows(hf, rows, batch_size, grid, take, device)
    n_sub = np.array([p[1] for p in plans], dtype=np.int64)
    n_words = np.array([len(p[0]) for p in plans], dtype=np.int64)
    spans = word_spans([p[0] for p in plans])
    return doc_states(states, n_pre + n_suf, n_sub, spans, n_words)


def _run_windows(hf: HFModel, rows: list[list[int]], batch_size: int, grid, take, device):
    """Run the model on the windows ``rows``, ``batch_size`` at a time; return every layer's
    states at the flat grid positions ``take`` (see :func:`forward_documents`) as
    ``(n_layers, len(take), hidden)``."""
    take = torch.from_numpy(take)
    out = None
    for b, first in enumerate(range(0, len(rows), batch_size)):
        hidden = _run_batch(hf, rows[first : first + batch_size], device)
        mine = torch.nonzero((take >= grid[b]) & (take < grid[b + 1])).flatten()
        if out is None:  # layers may differ in dtype under autocast: keep the widest
            dtype = functools.reduce(torch.promote_types, (h.dtype for h in hidden))
            shape = (len(hidden), len(take), hidden[-1].shape[-1])
            out = torch.empty(shape, dtype=dtype, device=hidden[-1].device)
        index = (take[mine] - int(grid[b])).to(out.device, non_blocking=True)
        whole = len(mine) == len(take)  # the usual case: every document in one batch
        for layer, h in enumerate(hidden):
            flat = h.reshape(-1, h.shape[-1])
            if whole and flat.dtype == out.dtype:
                torch.index_select(flat, 0, index, out=out[layer])
            elif len(mine):
                out[layer, mine.to(out.device)] = flat.index_select(0, index).to(out.dtype)
    return out


def _run_batch(hf: HFModel, rows: list[list[int]], device) -> tuple[torch.Tensor, ...]:
    """Forward one padded batch of windows; returns every layer's ``(n_rows, T, hidden)``."""
    full = [hf.prefix + r + hf.suffix for r in rows]
    T = max(len(f) for f in full)
    ids = np.full((len(full), T), hf.pad_id, dtype=np.int64)
    mask = np.zeros((len(full), T), dtype=np.int64)
    types = np.zeros((len(full), T), dtype=np.int64) if hf.use_types else None
    for i, (f, r) in enumerate(zip(full, rows)):
        sl = slice(T - len(f), T) if hf.pad_left else slice(0, len(f))
        ids[i, sl] = f
        mask[i, sl] = 1
        if types is not None:
            types[i, sl] = hf.prefix_types + [hf.content_type] * len(r) + hf.suffix_types
    inputs = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        inputs["token_type_ids"] = types
    inputs = {k: _to_device(v, device) for k, v in inputs.items()}
    out = hf.model(**inputs, output_hidden_states=True, return_dict=True)
    return tuple(out.hidden_states)


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array of input ids or masks on ``device``. Not through pinned memory: these are
    a few kB per batch, and every pinned buffer would stay pinned for the process's life
    (torch's caching host allocator never gives it back)."""
    return torch.from_numpy(array).to(device)
