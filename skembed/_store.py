"""The state store seen by one call: each document's forward-pass states from the memory tier
(:data:`skembed.cache.STATES`, an LRU with a byte budget), else from the folder tier
(:mod:`skembed._shared`: other processes' batch files, or a directory kept across sessions),
else computed here, batch by batch, and kept in both tiers.

:func:`state_batches` is the interface: "the states of these documents, batch by batch,
computing the missing ones". It makes a :class:`CallStates` for the call; families never see
it. A family's states are written to the folder tier with its ``_pack_states`` and
``_unpack_states`` hooks; :func:`pack_tensors` and :func:`unpack_tensors` serve states that
are one tensor per document.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable, Iterator

import numpy as np
import torch

from ._batching import BatchSize, Progress, call_progress, forward_in_batches, length_sorted
from ._caches import _nbytes, doc_key
from ._shared import SHARED, patience, wait
from .cache import STATES, admits


def state_keys(embedder, docs: list[list[str]], index) -> list:
    """The state-store keys of ``docs[i] for i in index``: the embedder's model, precision,
    device and forward parameters (``_state_prefix``), and each document's digest."""
    prefix = embedder._state_prefix()
    return [prefix + (doc_key(docs[i]),) for i in index]


def to_embed(docs: list[list[str]], subset, skip_empty: bool = True) -> list[int]:
    """The documents of ``subset`` that go through the network: the non-empty ones (all of
    them with ``skip_empty=False``, for document-level outputs that embed the special tokens
    of an empty text)."""
    return [i for i in subset if docs[i] or not skip_empty]


def state_batches(
    embedder,
    model,
    docs: list[list[str]],
    subset,
    progress: Progress | None,
    *,
    n_docs: int | None = None,
    keys: dict | None = None,
    count_lookups: bool = True,
    skip_empty: bool = True,
) -> Iterator[tuple[list[int], list[int], list]]:
    """Yield ``(batch, its documents embedded, their states)`` over the documents ``subset``
    in length-sorted batches of ``embedder.batch_size``: states from the store, the missing
    ones computed with ``embedder._forward`` batch by batch (or read from other processes,
    whose documents come in batches of their own at the end).

    ``progress``: the call's bar, advanced by each batch's documents (None: a bar of its own,
    if the embedder shows one); ``n_docs``: the documents of the whole call when ``subset`` is
    part of it (the store judges by it whether to keep the call's states); ``keys``: the
    documents' keys when the caller has them (``{document: key}``); ``count_lookups=False``:
    the caller counted the lookups in the cache statistics already; ``skip_empty``: see
    :func:`to_embed`.
    """
    subset = list(subset)
    cost = dict(zip(subset, embedder._doc_costs(model, [docs[i] for i in subset])))
    batches = length_sorted(subset, cost.__getitem__, embedder.batch_size)
    n_subset = sum(map(len, batches))
    with call_progress(progress, embedder, n_subset) as progress:
        work = CallStates(embedder, model, docs, max(n_subset, n_docs or 0))
        for batch, index, states in work.batches(batches, keys, count_lookups, skip_empty):
            progress.update(len(batch))
            yield batch, index, states


def pack_tensors(states: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """States that are one tensor per document, as the named tensors of one batch file."""
    return {
        "flat": torch.cat([s.reshape(-1) for s in states]),
        "shapes": torch.tensor([list(s.shape) for s in states], dtype=torch.int64),
    }


def unpack_tensors(tensors: dict[str, torch.Tensor], device) -> list[torch.Tensor]:
    """The states :func:`pack_tensors` packed, on ``device``."""
    shapes = tensors["shapes"].tolist()
    flat = tensors["flat"].to(device)
    sizes = [int(np.prod(shape)) for shape in shapes]
    if sum(sizes) != len(flat):
        raise ValueError("inconsistent packed states")
    return [part.view(shape) for part, shape in zip(torch.split(flat, sizes), shapes)]


class CallStates:
    """The states one call needs that the memory tier lacks: read from the folder tier, or
    computed by forward passes (halved after running out of memory), and kept in both tiers
    when the call keeps its states (``admits``, decided on its first forward pass).

    With the folder tier in use, the missing documents are claimed before a forward pass; the
    claimed ones are computed and published, those done by another process are read, and
    those another process is computing are left for :meth:`from_others`, which waits for them
    after this call's own work (so no process waits while it holds claims it has not
    finished), and computes them here when nothing arrives for
    :func:`skembed._shared.patience` seconds (a stuck process).
    """

    _FILES = 4  # batch files read recently, unpacked (a batch's neighbours are in them)

    def __init__(self, embedder, model, docs: list[list[str]], n_docs: int):
        self.embedder, self.model, self.docs, self.n_docs = embedder, model, docs, n_docs
        self.batch = BatchSize(embedder.batch_size)  # halved for the rest of the call after OOM
        self.keeps: bool | None = None  # whether the call keeps its states (first pass decides)
        self.shared = embedder._shares_states and STATES.enabled and SHARED.usable()
        self.elsewhere: list[tuple[int, Hashable]] = []  # (document, key) computed elsewhere
        self.batch_seconds = 0.0  # the slowest batch this call ran through the network
        self._files: OrderedDict[str, list] = OrderedDict()

    def complete(self, index: list[int], keys: list, states: list, missing: list[int]) -> list[int]:
        """Fill in ``states[j]`` for ``j in missing`` (positions in ``index``); return the
        positions left to other processes (kept in ``elsewhere``)."""
        if not self.shared:
            self._compute(index, keys, states, missing)
            return []
        sub_index = [index[j] for j in missing]
        sub_keys = [keys[j] for j in missing]
        found = [None] * len(missing)
        pending = self._through_folder(sub_index, sub_keys, found)
        for j, state in zip(missing, found):
            states[j] = state
        self.elsewhere += [(sub_index[k], sub_keys[k]) for k in pending]
        return [missing[k] for k in pending]

    def batches(self, batches, keys: dict | None, count_lookups: bool, skip_empty: bool):
        """The batches of :func:`state_batches`, before they are counted."""
        for batch in batches:
            index = to_embed(self.docs, batch, skip_empty)
            batch_keys = (
                [keys[i] for i in index]
                if keys is not None
                else state_keys(self.embedder, self.docs, index)
            )
            states = STATES.get_many(batch_keys, count=count_lookups)
            missing = [j for j, s in enumerate(states) if s is None]
            if missing:
                elsewhere = self.complete(index, batch_keys, states, missing)
                if elsewhere:  # computed by another process: yielded by from_others()
                    drop = {index[j] for j in elsewhere}
                    batch = [i for i in batch if i not in drop]
                    kept = [j for j in range(len(index)) if index[j] not in drop]
                    index, states = [index[j] for j in kept], [states[j] for j in kept]
            if batch:
                yield batch, index, states
        yield from self.from_others()

    def from_others(self):
        """Yield ``(documents, documents, states)`` for the documents left to other processes,
        as they are published (or computed here, when a sibling gave them up, is gone, or has
        published none of them for :func:`skembed._shared.patience` seconds)."""
        step = 0.001
        since = time.monotonic()  # the last arrival
        while self.elsewhere:
            index = [i for i, _ in self.elsewhere]
            keys = [k for _, k in self.elsewhere]
            states: list = [None] * len(index)
            if self.shared:
                pending = self._through_folder(index, keys, states)
                if pending and time.monotonic() - since > patience(self.batch_seconds):
                    # A live sibling sits on them (stopped, deadlocked): the same numbers here.
                    self._compute(index, keys, states, pending)
                    pending = []
            else:  # sharing stopped in this call: compute them here
                self._compute(index, keys, states, list(range(len(index))))
                pending = []
            ready = [k for k, s in enumerate(states) if s is not None]
            if ready:
                docs = [index[k] for k in ready]
                yield docs, docs, [states[k] for k in ready]
                since = time.monotonic()  # progress: the clock restarts
            else:
                step = wait(step)
            self.elsewhere = [self.elsewhere[k] for k in pending]

    def _through_folder(self, index: list[int], keys: list, states: list) -> list[int]:
        """Fill ``states`` (all missing) from siblings or by claiming and computing; return
        the positions a sibling is computing."""
        names = SHARED.names(keys)
        mine, pending, done = SHARED.claim(names)
        self._read_files(done, states)
        read = [k for k in done if states[k] is not None]
        gone = [k for k in done if states[k] is None]  # cleared by the first process, damaged
        SHARED.hits += len(read)
        if read and self.keeps is None:
            self.keeps = admits(sum(_nbytes(states[k]) for k in read) / len(read), self.n_docs)
        if self.keeps:
            for k in read:
                STATES.put(keys[k], states[k])
        if mine:
            self._compute_claimed(index, keys, states, mine, [names[k] for k in mine])
        if gone and SHARED.active:  # published anew: the next reader finds them
            self._compute_claimed(index, keys, states, gone, [names[k] for k in gone])
        elif gone:
            self._compute(index, keys, states, gone)
        return pending

    def _read_files(self, done: dict[int, str], states: list) -> None:
        """``states[k]``: the state each ``file:position`` target of ``done`` names (left
        None when its file is gone or damaged: then it is computed). A document's state is a
        view of its file's tensor; when not all of a file's documents are taken, the taken
        ones are copied out, so that the cache holds no more than it counts."""
        by_file: dict[str, list[tuple[int, int]]] = {}
        for k, target in done.items():
            file, _, position = target.rpartition(":")
            by_file.setdefault(file, []).append((k, int(position)))
        emb = self.embedder
        for file, items in by_file.items():
            loaded = self._files.get(file)
            if loaded is None:
                tensors = SHARED.load(file)  # None when gone or unreadable
                try:
                    loaded = None if tensors is None else emb._unpack_states(tensors)
                except (KeyError, ValueError, IndexError):  # readable, but not states
                    loaded = None
                if loaded is None:
                    continue
                self._files[file] = loaded
                if len(self._files) > self._FILES:
                    self._files.popitem(last=False)
            if max(position for _, position in items) >= len(loaded):
                continue
            taken = [loaded[position] for _, position in items]
            if len(taken) < len(loaded):
                taken = emb._unpack_states(emb._pack_states(taken))
            for (k, _), state in zip(items, taken):
                states[k] = state

    def _compute_claimed(self, index, keys, states, positions, names) -> None:
        """Compute claimed documents and publish them (or give the claims up)."""
        try:
            new = self._compute(index, keys, states, positions)
        except BaseException:
            SHARED.release(names)
            raise
        # A kept directory takes every state (it has a disk budget); a session's folder only
        # those that fit in memory too (siblings keep what they read).
        publish = self.keeps or SHARED.kept
        packed = self.embedder._pack_states(new) if publish else None
        if packed is None or not SHARED.publish(names, packed, STATES.max_bytes):
            SHARED.release(names)
            self.shared = self.shared and bool(publish) and SHARED.enabled

    def _compute(self, index: list[int], keys: list, states: list, positions: list[int]):
        """Run the network on ``index[j] for j in positions`` into ``states`` (and the cache,
        when the call keeps its states); return the new states."""
        emb = self.embedder
        start = time.perf_counter()
        todo = [index[j] for j in positions]
        new = forward_in_batches(emb, self.model, self.docs, todo, self.batch)
        batches = -(-len(positions) // self.batch.size)
        per_batch = (time.perf_counter() - start) / max(1, batches)
        self.batch_seconds = max(self.batch_seconds, per_batch)
        STATES.count_computed(len(new))
        if self.keeps is None:
            self.keeps = admits(sum(map(_nbytes, new)) / len(new), self.n_docs)
        for j, state in zip(positions, new):
            states[j] = state
            if self.keeps:
                STATES.put(keys[j], state)
        return new
