"""PooledFlairEmbeddings: Flair vectors plus a word memory built over the corpus given to fit.

Flair's ``PooledFlairEmbeddings`` keeps a memory of every word it has embedded and grows it
with every call. Here the memory is built once, in ``fit``, and ``transform`` is a pure function
of the fitted memory and the document: it aggregates the memory with the document's own
occurrences of each word, exactly as Flair does when it embeds that document alone right after
embedding the corpus once.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from sklearn.utils.validation import check_is_fitted

from .._batching import Progress
from ..base import check_choice, store_params
from .embeddings import FlairEmbeddings
from .lm import CharLM

POOLINGS = ("min", "max", "mean", "fade")


def is_pooled(token: str, only_capitalized: bool) -> bool:
    """Whether ``token`` enters the memory: non-empty, and capitalised when asked."""
    return bool(token) and (not only_capitalized or token[0].isupper())


def occurrence_rank(ids: torch.Tensor) -> torch.Tensor:
    """For each entry, how many equal ids come before it.

    Examples
    --------
    >>> occurrence_rank(torch.tensor([4, 2, 4, 4, 2])).tolist()
    [0, 0, 1, 2, 1]
    """
    order = torch.argsort(ids, stable=True)
    sorted_ids = ids[order]
    position = torch.arange(len(ids), device=ids.device)
    is_start = torch.ones_like(sorted_ids, dtype=torch.bool)
    is_start[1:] = sorted_ids[1:] != sorted_ids[:-1]
    group_start = torch.cummax(torch.where(is_start, position, 0), 0).values
    rank = torch.empty_like(position)
    rank[order] = position - group_start
    return rank


def aggregate_(
    rows: torch.Tensor, counts: torch.Tensor, ids: torch.Tensor, values: torch.Tensor, pooling: str
) -> None:
    """Fold ``values[k]`` into ``rows[ids[k]]`` in order, the way Flair updates its memory.

    ``counts[w]`` is how many vectors row ``w`` already holds (0: the row is empty and its
    first vector is stored as is). ``min``/``max`` keep the element-wise extreme, ``fade``
    replaces the row by ``(row + new) / 2`` occurrence by occurrence, and ``mean`` adds to a
    running sum (divide by ``counts`` to read the mean). ``rows`` and ``counts`` are updated
    in place.
    """
    if len(ids) == 0:
        return
    if pooling == "mean":
        rows.index_add_(0, ids, values)
    else:
        rank = occurrence_rank(ids)
        if pooling == "fade":
            # Occurrences of one word must be folded one after the other; distinct words are
            # independent, so each round folds the r-th occurrence of every word at once.
            for r in range(int(rank.max()) + 1):
                sel = torch.nonzero(rank == r).squeeze(1)
                w, v = ids[sel], values[sel]
                new = (rows[w] + v) / 2
                if r == 0:
                    new = torch.where((counts[w] == 0)[:, None], v, new)
                rows[w] = new
        else:
            first = torch.nonzero((rank == 0) & (counts[ids] == 0)).squeeze(1)
            rows[ids[first]] = values[first]  # an empty row starts from its first vector
            reduce = "amin" if pooling == "min" else "amax"
            target = ids[:, None].expand_as(values)
            rows.scatter_reduce_(0, target, values, reduce=reduce, include_self=True)
    counts += torch.bincount(ids, minlength=len(counts))


class PooledFlairEmbeddings(FlairEmbeddings):
    """Flair embeddings with a memory of each word's vectors over the corpus given to ``fit``.

    Every token gets ``[local ; pooled]`` (twice the LM's size): ``local`` is the vector of
    :class:`FlairEmbeddings`; ``pooled`` aggregates the word's vectors in the fitted memory
    with the word's occurrences in the same document.

    ``fit(X)`` runs the LM over ``X`` and builds the memory, keyed by the exact token text:
    for each word, the element-wise ``min`` or ``max`` of all its vectors, their ``mean``, or
    ``fade`` (the first vector, then ``(memory + new) / 2`` for each further occurrence, in
    corpus order). ``transform`` never changes the memory: for a token ``w`` of document ``d``,
    ``pooled`` is the memory entry of ``w`` updated with every occurrence of ``w`` in ``d``
    (in document order, by the same rule); every occurrence of ``w`` in ``d`` gets that same
    vector, and other documents never influence it. A word neither in the memory nor pooled
    (see ``only_capitalized``; empty tokens are never pooled) gets its local vector as pooled.

    This is what Flair's ``PooledFlairEmbeddings`` gives for a document embedded alone right
    after embedding the fit corpus once, in order, in eval mode (Flair would then also add the
    document to its memory; skembed does not). A document of the fit corpus is counted twice,
    as in Flair when it is embedded again.

    Parameters
    ----------
    model : str, path or CharLM, default="news-forward"
        As for :class:`FlairEmbeddings`.
    pooling : {"min", "max", "mean", "fade"}, default="min"
        How a word's vectors are aggregated. Changing it needs a new ``fit`` (which reuses the
        LM outputs from the state cache).
    only_capitalized : bool, default=False
        Pool only words whose first character is upper-case (names, in most languages); other
        words get their local vector twice. Saves memory and time.
    with_whitespace, chars_per_chunk, tokenizer, device, batch_size, precision, show_progress_bar
        As for :class:`FlairEmbeddings`.

    Attributes
    ----------
    vocabulary_ : dict of str to int
        The row of each pooled word in ``memory_``, in order of first occurrence.
    memory_ : ndarray of shape (memory_size_, lm_size), float32
        The aggregated vector of each word over the fit corpus (for ``mean``, the mean).
    memory_counts_ : ndarray of shape (memory_size_,), int64
        Occurrences of each word in the fit corpus.
    memory_size_ : int
        Number of words in the memory.
    n_features_out_ : int
        Twice the LM's vector size.

    Examples
    --------
    >>> from skembed.flair import CharLM
    >>> lm = CharLM("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ", hidden_size=8)
    >>> emb = PooledFlairEmbeddings(lm, pooling="mean").fit(["the cat sat", "the dog ran"])
    >>> emb.memory_size_, int(emb.memory_counts_[emb.vocabulary_["the"]])
    (5, 2)
    >>> emb.transform(["a cat"])[0].shape
    (2, 16)
    """

    _feature_prefix = "pooledflair"
    _transient = FlairEmbeddings._transient + ("_memory_on",)

    def __init__(
        self,
        model="news-forward",
        pooling: str = "min",
        only_capitalized: bool = False,
        with_whitespace: bool = True,
        chars_per_chunk: int = 512,
        *,
        tokenizer=None,
        device: str = "auto",
        batch_size: int = 32,
        precision: str = "float32",
        show_progress_bar: bool = False,
    ):
        store_params(self, locals())

    def _check_params(self, model: CharLM) -> None:
        super()._check_params(model)
        check_choice("pooling", self.pooling, POOLINGS)
        check_choice("only_capitalized", self.only_capitalized, (True, False))

    def _n_features(self, model: CharLM) -> int:
        return 2 * model.embedding_length

    def _memory_params(self) -> tuple:
        return (self.pooling, bool(self.only_capitalized), bool(self.with_whitespace))

    # -- fit: build the memory -------------------------------------------------------
    def fit(self, X=None, y=None):
        """Run the LM over ``X`` and build the word memory from its vectors.

        Parameters
        ----------
        X : documents, optional
            The corpus to remember. Without it the memory is empty, and each document pools
            only its own occurrences.
        y : ignored

        Returns
        -------
        self
        """
        super().fit(None)
        docs = self._documents(X) if X is not None else []
        self.__dict__.pop("_memory_on", None)
        vocabulary: dict[str, int] = {}
        for doc in docs:
            for token in doc:
                if is_pooled(token, self.only_capitalized):
                    vocabulary.setdefault(token, len(vocabulary))
        dim = self.n_features_out_ // 2
        rows = torch.zeros((len(vocabulary), dim), device=self._device)
        counts = torch.zeros(len(vocabulary), dtype=torch.long, device=self._device)
        # Corpus-order chunks (fade depends on the order), each batched by length inside.
        chunk = 16 * self.batch_size
        show = bool(self.show_progress_bar and docs)
        with Progress(len(docs), f"{type(self).__name__} memory", show) as progress:
            for start in range(0, len(docs), chunk):
                part = docs[start : start + chunk]
                local = [None] * len(part)
                for index, tensors in self._local_batches(part, progress):
                    for i, t in zip(index, tensors):
                        local[i] = t
                tokens = [t for doc in part for t in doc]
                keep = [k for k, t in enumerate(tokens) if is_pooled(t, self.only_capitalized)]
                if keep:
                    flat = torch.cat([t for doc, t in zip(part, local) if doc], 0)
                    values = flat[torch.as_tensor(keep, device=self._device)]
                    ids = [vocabulary[tokens[k]] for k in keep]
                    ids = torch.as_tensor(ids, device=self._device)
                    aggregate_(rows, counts, ids, values, self.pooling)
        if self.pooling == "mean":
            rows /= counts.clamp(min=1)[:, None]
        self.vocabulary_ = vocabulary
        self.memory_ = rows.cpu().numpy()
        self.memory_counts_ = counts.cpu().numpy()
        self.memory_size_ = len(vocabulary)
        self._memory_for = self._memory_params()
        return self

    def _local_batches(self, docs: list[list[str]], progress: Progress):
        """The plain Flair vectors (LM outputs through the state cache), counted on
        ``progress`` (fit's one bar over the whole corpus)."""
        return super().iter_batches(docs, progress=progress)

    # -- transform: memory + the document's own occurrences -----------------------------
    def _device_memory(self) -> tuple[torch.Tensor, torch.Tensor]:
        cached = self.__dict__.get("_memory_on")
        if cached is None or cached[0] != str(self._device):
            memory = torch.as_tensor(self.memory_, device=self._device)
            counts = torch.as_tensor(self.memory_counts_, device=self._device)
            cached = (str(self._device), memory, counts)
            self._memory_on = cached
        return cached[1], cached[2]

    def iter_batches(
        self,
        docs: list[list[str]],
        n_docs: int | None = None,
        progress: Progress | None = None,
    ) -> Iterator[tuple[list[int], list[torch.Tensor]]]:
        """Yield ``(document indices, token tensors)``: ``[local ; pooled]`` per token."""
        check_is_fitted(self, "memory_")
        if self._memory_params() != self._memory_for:
            names = ("pooling", "only_capitalized", "with_whitespace")
            raise ValueError(
                f"The memory was built with {dict(zip(names, self._memory_for))} but the "
                f"parameters are now {dict(zip(names, self._memory_params()))}: call fit again."
            )
        for index, local in super().iter_batches(docs, n_docs=n_docs, progress=progress):
            yield index, self._with_pooled([docs[i] for i in index], local)

    def _with_pooled(self, docs: list[list[str]], local: list[torch.Tensor]) -> list[torch.Tensor]:
        """Append the pooled part to each document's local vectors (documents are independent)."""
        if not any(docs):
            return local  # only empty documents: already (0, n_features_out_)
        memory, memory_counts = self._device_memory()
        device = memory.device
        # One key per (document, word): documents of a batch never share a key.
        keys: dict[tuple[int, str], int] = {}
        at_memory, key_of, pooled_rows = [], [], []
        row = 0
        for j, doc in enumerate(docs):
            for token in doc:
                if is_pooled(token, self.only_capitalized):
                    key = keys.get((j, token))
                    if key is None:
                        key = keys[(j, token)] = len(keys)
                        at_memory.append(self.vocabulary_.get(token, -1))
                    key_of.append(key)
                    pooled_rows.append(row)
                row += 1
        flat = torch.cat([t for doc, t in zip(docs, local) if doc], 0)
        pooled = flat.clone()
        if keys:
            at_memory = torch.as_tensor(at_memory, device=device)
            known = torch.nonzero(at_memory >= 0).squeeze(1)
            rows = torch.zeros((len(keys), flat.shape[1]), device=device)
            counts = torch.zeros(len(keys), dtype=torch.long, device=device)
            rows[known] = memory[at_memory[known]]
            counts[known] = memory_counts[at_memory[known]]
            if self.pooling == "mean":
                rows *= counts[:, None]  # back to the running sum
            ids = torch.as_tensor(key_of, device=device)
            where = torch.as_tensor(pooled_rows, device=device)
            aggregate_(rows, counts, ids, flat[where], self.pooling)
            if self.pooling == "mean":
                rows /= counts[:, None]
            pooled[where] = rows[ids]
        both = torch.cat([flat, pooled], 1).split([len(doc) for doc in docs if doc])
        parts = iter(both)
        return [next(parts) if doc else t for doc, t in zip(docs, local)]
