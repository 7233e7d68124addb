"""Pooled rows kept in the state store: one table per block of columns (one layer, one
sub-token and document pooling), so that the folds and candidates of a grid search pool a
document once per setting, and candidates that share layers share rows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import numpy as np
import torch

from ._batching import Progress
from ._caches import doc_key
from ._precision import cheap_operations
from ._store import state_batches, state_keys, to_embed
from .cache import STATES

# A document's entry in a RowTable's index (its digest and the dictionary slot), roughly.
_INDEX_ENTRY_BYTES = 120


class RowTable:
    """The pooled rows of one block of columns (one layer, one pooling...) by document
    digest: one entry of the state cache, however many documents it holds.

    Rows are read with one fancy index per block (not one lookup and one copy per document
    and block: on short texts those cost more than the pooling). The byte budget counts the
    rows and the index. Kept by :func:`pooled_rows`.

    Examples
    --------
    >>> import numpy as np
    >>> table = RowTable(2, np.float32)
    >>> table.add([b"a", b"b"], np.array([[1, 2], [3, 4]], dtype=np.float32))
    >>> at = table.find([b"b", b"c"])
    >>> at
    [1, None]
    >>> table.take(at[:1]).tolist()
    [[3.0, 4.0]]
    """

    def __init__(self, width: int, dtype):
        self.index: dict[bytes, int] = {}
        self.data = np.empty((64, width), dtype=dtype)
        self.n = 0  # rows in use
        self._lock = threading.Lock()

    def find(self, digests: list[bytes]) -> list[int | None]:
        """Each document's row number, or None."""
        return list(map(self.index.get, digests))

    def take(self, rows: list[int]) -> np.ndarray:
        return self.data[rows]

    def add(self, digests: list[bytes], rows: np.ndarray) -> None:
        """Add the rows of documents (a document already in keeps its row)."""
        with self._lock:
            new: dict[bytes, int] = {}
            for k, d in enumerate(digests):
                if d not in self.index and d not in new:
                    new[d] = k
            n = self.n
            if len(self.data) < n + len(new):
                size = max(n + len(new), 2 * len(self.data))
                grown = np.empty((size, self.data.shape[1]), dtype=self.data.dtype)
                grown[:n] = self.data[:n]
                self.data = grown
            self.data[n : n + len(new)] = rows[list(new.values())]
            for j, d in enumerate(new):  # after the rows: a reader never finds an empty one
                self.index[d] = n + j
            self.n = n + len(new)

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + _INDEX_ENTRY_BYTES * len(self.index)


def pooled_rows(
    docs: list[list[str]],
    keys: list[tuple],
    pool_blocks: Callable[[list[list[str]], list[int], Progress], np.ndarray],
    progress: Progress,
) -> torch.Tensor:
    """The pooled rows of ``docs``: one block of columns per key of ``keys`` (one layer and
    setting, say), each read from its row table in the state store. The documents missing
    from some tables are pooled by ``pool_blocks(those documents, the positions of the
    blocks they lack, progress)``, which returns their rows of those blocks side by side as a
    host array (it runs the network only for documents without states), and added to the
    tables.

    The rows are on the host (where results usually go: one copy per call). ``progress``
    (the call's :class:`skembed._batching.Progress`) counts the documents found in the tables
    at once, the others as ``pool_blocks`` pools them.
    """
    digests = list(map(doc_key, docs))
    tables = STATES.get_many(keys, count=False)
    found = [t.find(digests) if t is not None else [None] * len(docs) for t in tables]
    need = [j for j, at in enumerate(found) if None in at]
    missing = sorted({i for j in need for i, k in enumerate(found[j]) if k is None})
    progress.update(len(docs) - len(missing))
    if need:
        fresh = pool_blocks([docs[i] for i in missing], need, progress)
        width = fresh.shape[1] // len(need)
        for k, j in enumerate(need):
            table = tables[j] if tables[j] is not None else RowTable(width, fresh.dtype)
            table.add([digests[i] for i in missing], fresh[:, k * width : (k + 1) * width])
            STATES.put(keys[j], table)  # again: its size changed
            tables[j], found[j] = table, table.find(digests)
    if len(keys) == 1:
        return torch.from_numpy(tables[0].take(found[0]))
    return torch.from_numpy(np.concatenate([t.take(at) for t, at in zip(tables, found)], 1))


# Stored states are pooled _POOL_CHUNK batches at a time: few calls (each has a fixed cost),
# memory still a multiple of the batch size.
_POOL_CHUNK = 8


def iter_pooled_states(
    embedder,
    model,
    docs: list[list[str]],
    width: int,
    pool_states: Callable[[list], torch.Tensor],
    group_of: Callable[[Any], Hashable],
    n_docs: int | None,
    progress: Progress,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Yield ``(document indices, rows)``: each document's rows (``width`` features) pooled
    straight from its states by ``pool_states(states)``, which pools a group of states at
    once: those ``group_of(state)`` says came from one forward pass. Documents with stored
    states come first, in chunks of whole forward passes; then the others in length-sorted
    batches through the network (``embedder``'s state store, :func:`skembed._store.state_batches`).
    Memory stays within a batch's worth. An empty document gets a zero row. ``progress``: the
    call's :class:`skembed._batching.Progress`, advanced as documents are yielded."""
    empty = [i for i, doc in enumerate(docs) if not doc]
    if empty:
        progress.update(len(empty))
        yield empty, torch.zeros((len(empty), width), device=embedder._device)
    index = to_embed(docs, range(len(docs)))
    keys = state_keys(embedder, docs, index)
    states = STATES.get_many(keys)
    cached = [(group_of(s), k) for k, s in enumerate(states) if s is not None]
    cached.sort(key=lambda item: item[0])
    chunk_size = _POOL_CHUNK * embedder.batch_size  # documents pooled per call, at least
    chunk: list[int] = []
    for pos, (group, k) in enumerate(cached):
        chunk.append(k)
        following = cached[pos + 1][0] if pos + 1 < len(cached) else None
        if following is None or (following != group and len(chunk) >= chunk_size):
            with torch.inference_mode(), cheap_operations(embedder._device):
                rows = pool_states([states[k] for k in chunk])
            progress.update(len(chunk))
            yield [index[k] for k in chunk], rows
            chunk = []
    missing = {index[k]: keys[k] for k, s in enumerate(states) if s is None}
    del states, cached
    batches = state_batches(
        embedder,
        model,
        docs,
        missing,
        progress,
        n_docs=n_docs or len(docs),
        keys=missing,
        count_lookups=False,
    )
    for _, found, found_states in batches:
        if found:
            with torch.inference_mode(), cheap_operations(embedder._device):
                rows = pool_states(found_states)
            yield found, rows
