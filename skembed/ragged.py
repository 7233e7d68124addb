"""RaggedEmbeddings: one block of token vectors per document, stored flat."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ._host import to_host
from ._input import is_default_index, replace_lone_surrogates


def token_column(tokens: list[str], dtype=None):
    """``tokens`` as the values of one pandas column (``dtype``, or what pandas infers).

    A lone surrogate (not valid Unicode: Arrow-backed strings, pandas 3's default, and Parquet
    files refuse it) shows as U+FFFD, as ``errors="replace"`` decoding would give, whatever the
    pandas version.

    Examples
    --------
    >>> list(token_column(["a", "b" + chr(0xD800)]))
    ['a', 'b\ufffd']
    """
    import pandas as pd

    try:
        "".join(tokens).encode("utf-8")  # at C speed: fails only on a lone surrogate
    except UnicodeEncodeError:
        tokens = [replace_lone_surrogates(t) for t in tokens]
    return pd.Series(tokens, dtype=dtype).array


class RaggedEmbeddings:
    """Token vectors of several documents: a flat ``(total_tokens, dim)`` tensor plus offsets.

    Document ``i`` owns rows ``offsets[i]:offsets[i + 1]`` of ``data``. This is what every
    token embedder's ``transform`` returns.

    Parameters
    ----------
    data : torch.Tensor of shape (total_tokens, dim)
        The token vectors of all documents, one after the other.
    offsets : array-like of int, shape (n_docs + 1,)
        Start of each document's rows, then the total number of rows.
    tokens : list of list of str
        The tokens of each document.
    feature_names : sequence of str, optional
        One name per column; ``f"x{j}"`` when omitted.
    index : pandas.Index, optional
        One label per document: the index of the pandas Series or DataFrame the documents came
        from, which :meth:`to_frame` shows in its ``doc`` level. ``None`` (the default, also
        for a list or a Series with the default ``0..n-1`` index) means positions.

    Examples
    --------
    >>> import torch
    >>> r = RaggedEmbeddings.from_list([torch.ones(2, 3), torch.zeros(1, 3)], [["a", "b"], ["c"]])
    >>> len(r), r[0].shape, r.to_numpy().shape
    (2, (2, 3), (3, 3))
    >>> r.to_frame().loc[1]  # doctest: +NORMALIZE_WHITESPACE
             token   x0   x1   x2
    position
    0            c  0.0  0.0  0.0
    """

    def __init__(self, data, offsets, tokens, feature_names=None, index=None):
        data = torch.as_tensor(data)
        if data.ndim != 2:
            raise ValueError(f"data must be 2-D (total_tokens, dim), got shape {tuple(data.shape)}")
        offsets = np.asarray(offsets, dtype=np.int64)
        if offsets.ndim != 1 or offsets[0] != 0 or offsets[-1] != data.shape[0]:
            raise ValueError("offsets must start at 0 and end at data.shape[0]")
        if len(tokens) != len(offsets) - 1:
            raise ValueError(f"{len(tokens)} token lists for {len(offsets) - 1} documents")
        self.data = data
        self.offsets = offsets
        self.tokens = [list(t) for t in tokens]
        if feature_names is None:
            feature_names = [f"x{j}" for j in range(data.shape[1])]
        self.feature_names = np.asarray(feature_names, dtype=object)
        if len(self.feature_names) != data.shape[1]:
            raise ValueError(f"{len(self.feature_names)} feature names for {data.shape[1]} columns")
        self.index = _check_index(index, len(self.tokens))
        self.source = None

    @classmethod
    def deferred(cls, embedder, documents: list[list[str]], feature_names) -> RaggedEmbeddings:
        """The token vectors of ``documents`` by the fitted token embedder ``embedder``,
        computed when ``data`` is first read (``embedder.embed_documents(documents)``).

        Until then they are only a promise that a pooler can keep without materialising the
        token rows: :class:`~skembed.DocumentPoolEmbeddings` standing after the embedder in a
        ``Pipeline`` reads ``source`` (the embedder and the documents) and takes each document's
        pooled row from the state store, as when it wraps the embedder.
        """
        out = cls.__new__(cls)
        out._data = None
        out.offsets = np.zeros(len(documents) + 1, dtype=np.int64)
        out.offsets[1:] = np.cumsum([len(d) for d in documents])
        out.tokens = documents
        out.feature_names = np.asarray(feature_names, dtype=object)
        out.index = None
        out.source = (embedder, documents)
        return out

    @property
    def data(self) -> torch.Tensor:
        """The flat ``(total_tokens, dim)`` tensor (computed on first read when deferred)."""
        if self._data is None:
            embedder, documents = self.source
            self._data = embedder.embed_documents(documents).data
        return self._data

    @data.setter
    def data(self, value) -> None:
        self._data = value

    @classmethod
    def from_list(cls, arrays: Sequence, tokens, feature_names=None, dim: int | None = None):
        """Build from one ``(n_tokens_i, dim)`` array or tensor per document."""
        tensors = [torch.as_tensor(a) for a in arrays]
        if not tensors:
            width = (
                dim if dim is not None else (len(feature_names) if feature_names is not None else 0)
            )
            data = torch.zeros((0, width))
        else:
            data = torch.cat(tensors, 0)
        offsets = np.zeros(len(tensors) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([t.shape[0] for t in tensors])
        return cls(data, offsets, tokens, feature_names)

    # -- sizes -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Number of tokens of each document."""
        return np.diff(self.offsets)

    @property
    def dim(self) -> int:
        """Number of features per token."""
        return len(self.feature_names)

    @property
    def shape(self) -> tuple[int, int]:
        """``(total_tokens, dim)`` of the flat data."""
        return int(self.offsets[-1]), self.dim

    def __repr__(self) -> str:
        device = "not computed yet" if self._data is None else self._data.device
        return (
            f"RaggedEmbeddings(n_docs={len(self)}, total_tokens={self.shape[0]}, "
            f"dim={self.dim}, device={device})"
        )

    # -- indexing --------------------------------------------------------------
    def __getitem__(self, idx):
        if isinstance(idx, int | np.integer):
            i = int(idx)
            if i < 0:
                i += len(self)
            if not 0 <= i < len(self):
                raise IndexError(f"document index {idx} out of range for {len(self)} documents")
            return self.data[self.offsets[i] : self.offsets[i + 1]].detach().cpu().numpy()
        if isinstance(idx, slice):
            positions = np.arange(len(self))[idx]
        else:
            positions = np.asarray(idx)
            if positions.dtype == bool:
                if positions.shape != (len(self),):
                    raise IndexError(
                        f"boolean mask of length {positions.shape} for {len(self)} documents"
                    )
                positions = np.flatnonzero(positions)
            positions = positions.astype(np.int64).reshape(-1)
            positions = np.where(positions < 0, positions + len(self), positions)
            if positions.size and (positions.min() < 0 or positions.max() >= len(self)):
                raise IndexError(f"document index out of range for {len(self)} documents")
        return self._take(positions)

    def _take(self, positions: np.ndarray) -> RaggedEmbeddings:
        starts, ends = self.offsets[positions], self.offsets[positions + 1]
        rows = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)] or [np.zeros(0)])
        index = torch.as_tensor(rows.astype(np.int64), device=self.data.device)
        offsets = np.zeros(len(positions) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(ends - starts)
        return RaggedEmbeddings(
            self.data.index_select(0, index),
            offsets,
            [self.tokens[p] for p in positions],
            self.feature_names,
            None if self.index is None else self.index[positions],
        )

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    # -- conversions -----------------------------------------------------------
    def to_numpy(self) -> np.ndarray:
        """The flat ``(total_tokens, dim)`` data as a numpy array (one device-to-host copy)."""
        return to_host(self.data.detach()).numpy()

    def to_list(self) -> list[np.ndarray]:
        """One ``(n_tokens_i, dim)`` numpy array per document."""
        flat = self.to_numpy()
        return [flat[s:e] for s, e in zip(self.offsets[:-1], self.offsets[1:])]

    def to_torch(self, device=None) -> torch.Tensor:
        """The flat data as a tensor, moved to ``device`` when given."""
        return self.data if device is None else self.data.to(device)

    def split(self) -> list[torch.Tensor]:
        """One tensor view per document, on the data's device."""
        return list(torch.split(self.data, self.lengths.tolist(), dim=0))

    def padded(self, padding_value: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """``(n_docs, max_len, dim)`` array and a boolean ``(n_docs, max_len)`` mask of real tokens."""
        lengths = self.lengths
        max_len = int(lengths.max()) if len(lengths) else 0
        out = np.full((len(self), max_len, self.dim), padding_value, dtype=self._np_dtype())
        mask = np.arange(max_len)[None, :] < lengths[:, None]
        out[mask] = self.to_numpy()
        return out, mask

    def _np_dtype(self):
        return torch.empty((), dtype=self.data.dtype).numpy().dtype

    def to_frame(self):
        """Long pandas DataFrame: index ``(doc, position)``, a ``token`` column, one column per feature.

        ``doc`` is the document's label in the pandas Series or DataFrame that was embedded
        (see ``index``), or its position when the input had no such labels (a list, or the
        default ``0..n-1`` index). The ``token`` column is a pandas string column; a lone surrogate (not valid Unicode,
        which Arrow-backed strings refuse) shows as U+FFFD there, as ``errors="replace"``
        decoding would give. The vectors are those of the tokens as given."""
        import pandas as pd

        lengths = self.lengths
        if self.index is None:
            doc = np.repeat(np.arange(len(self)), lengths)
        else:
            doc = self.index.repeat(lengths)
            if isinstance(doc, pd.MultiIndex):  # one level "doc" holding the label tuples
                doc = doc.to_flat_index()
        pos = np.concatenate([np.arange(n) for n in lengths] or [np.zeros(0, dtype=np.int64)])
        index = pd.MultiIndex.from_arrays([doc, pos.astype(np.int64)], names=["doc", "position"])
        frame = pd.DataFrame(self.to_numpy(), index=index, columns=list(self.feature_names))
        frame.insert(0, "token", token_column([t for toks in self.tokens for t in toks]))
        return frame

    def __array__(self, dtype=None, copy=None):
        # Not one row per document: an array of it would give a classifier one sample per
        # token (sklearn: "inconsistent numbers of samples"). Say what to do instead.
        raise TypeError(
            "A RaggedEmbeddings holds one block of token vectors per document "
            f"({len(self)} documents, {int(self.offsets[-1])} tokens of {self.dim} features), "
            "not one row per document, so it is not the 2-D input of a classifier. Add "
            "DocumentPoolEmbeddings() after the token embedder (or wrap it: "
            "DocumentPoolEmbeddings(embedder)) to get one row per document; for token-level "
            "arrays use .padded(), .to_frame(), .to_numpy() (flat) or .to_list()."
        )

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_data"] = self.data.detach().cpu()
        state["source"] = None  # the embedder stays here: its vectors travel
        return state

    def __setstate__(self, state) -> None:
        if "data" in state:  # pickled before ``data`` could be deferred
            state["_data"] = state.pop("data")
        state.setdefault("source", None)
        state.setdefault("index", None)
        self.__dict__.update(state)


def _check_index(index, n_docs: int):
    """``index`` as a pandas Index of ``n_docs`` labels, or None (positions)."""
    if index is None:
        return None
    import pandas as pd

    index = pd.Index(index)
    if len(index) != n_docs:
        raise ValueError(f"{len(index)} index labels for {n_docs} documents")
    return index


def labelled(ragged: RaggedEmbeddings, X) -> RaggedEmbeddings:
    """``ragged``, embedded from ``X``, labelled with the index of ``X`` when ``X`` is a pandas
    Series or DataFrame whose index is not the default ``0..n-1`` (then positions say it all),
    so that :meth:`RaggedEmbeddings.to_frame` shows those labels."""
    import pandas as pd

    if isinstance(X, pd.Series | pd.DataFrame):
        if not is_default_index(X.index):
            ragged.index = _check_index(X.index, len(ragged))
    return ragged
