"""What the forward pass keeps per document (:class:`DocState`), and the states of a batch
packed into named tensors for files and back (:func:`pack_states`, :func:`unpack_states`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class DocState:
    """What the network computed for one document."""

    sub: torch.Tensor  # (n_layers, n_subtokens, hidden): the words' sub-tokens
    special: torch.Tensor  # (n_layers, n_special, hidden): special tokens of the first window
    spans: torch.Tensor  # (n_words, 2) start/end of each word in ``sub``
    # The (n_layers, positions, hidden) states of the whole forward pass that ``sub`` is a
    # view of, and where ``sub`` starts in them: documents of one pass are combined with one
    # read. None for a state that owns its tensors.
    pass_states: torch.Tensor | None = None
    sub_start: int = 0
    # ``spans`` plus ``sub_start``: each word's sub-tokens as positions in ``pass_states``.
    pass_spans: torch.Tensor | None = None
    # Words without sub-tokens (empty spans): they get zero vectors. Counted on the host when
    # the state is made, so combining never waits on the device to find out.
    n_empty: int = 0

    @property
    def nbytes(self) -> int:
        tensors = (self.sub, self.special, self.spans, self.pass_spans)
        return sum(t.element_size() * t.nelement() for t in tensors if t is not None)


def doc_states(states: torch.Tensor, n_spec: int, n_sub, spans: torch.Tensor, n_words):
    """One :class:`DocState` per document, each a view of ``states``, ``(n_layers, positions,
    hidden)``, which holds each document's ``n_spec`` special tokens then its ``n_sub``
    sub-tokens; ``spans`` are the words of all documents (``n_words`` each) in their
    document's sub-tokens."""
    sub_starts = np.cumsum(n_sub + n_spec) - n_sub  # where each document's sub-tokens start
    shift = torch.from_numpy(np.repeat(sub_starts, n_words))[:, None]
    pass_spans = (spans + shift).to(states.device)
    empty = np.zeros(len(spans) + 1, dtype=np.int64)  # words without sub-tokens, cumulated
    np.cumsum((spans[:, 1] == spans[:, 0]).numpy(), out=empty[1:])
    word_ends = np.cumsum(n_words)
    n_empty = empty[word_ends] - empty[word_ends - n_words]
    spans = spans.to(states.device)
    out, first_word = [], 0
    for n, start, words, empty_words in zip(
        n_sub.tolist(), sub_starts.tolist(), n_words.tolist(), n_empty.tolist()
    ):
        out.append(
            DocState(
                sub=states[:, start : start + n],
                special=states[:, start - n_spec : start],
                spans=spans[first_word : first_word + words],
                pass_states=states,
                sub_start=start,
                pass_spans=pass_spans[first_word : first_word + words],
                n_empty=empty_words,
            )
        )
        first_word += words
    return out


def pack_states(states: list[DocState]) -> dict[str, torch.Tensor]:
    """Documents' states as named tensors (see :func:`unpack_states`): every document's
    special tokens then sub-tokens, end to end, and the words' spans."""
    whole = states[0].pass_states
    in_order = (  # the states of one forward pass, in order: its tensor is already that layout
        whole is not None
        and all(s.pass_states is whole for s in states)
        and states[0].sub_start == states[0].special.shape[1]
        and whole.shape[1] == sum(s.special.shape[1] + s.sub.shape[1] for s in states)
        and all(
            a.sub_start + a.sub.shape[1] + b.special.shape[1] == b.sub_start
            for a, b in zip(states, states[1:])
        )
    )
    if not in_order:
        whole = torch.cat([t for s in states for t in (s.special, s.sub)], 1)
    return {
        "states": whole,
        "n_spec": torch.tensor([states[0].special.shape[1]]),
        "n_sub": torch.tensor([s.sub.shape[1] for s in states]),
        "n_words": torch.tensor([len(s.spans) for s in states]),
        "spans": torch.cat([s.spans for s in states]).cpu(),
    }


def unpack_states(tensors: dict[str, torch.Tensor], device) -> list[DocState]:
    """The states :func:`pack_states` packed, views of one tensor on ``device``."""
    n_sub, n_words = tensors["n_sub"].numpy(), tensors["n_words"].numpy()
    if len(n_sub) != len(n_words) or int(n_words.sum()) != len(tensors["spans"]):
        raise ValueError("inconsistent packed states")
    states = tensors["states"].to(device)
    return doc_states(states, int(tensors["n_spec"][0]), n_sub, tensors["spans"], n_words)


def word_spans(counts: list[list[int]]) -> torch.Tensor:
    """``[start, end)`` of every word in its document's sub-tokens, all documents stacked."""
    per_word = np.fromiter((c for doc in counts for c in doc), dtype=np.int64)
    ends = np.cumsum(per_word)
    words = np.array([len(doc) for doc in counts], dtype=np.int64)
    before = np.concatenate([[0], ends])[np.cumsum(words) - words]  # sub-tokens of earlier docs
    ends -= np.repeat(before, words)
    return torch.from_numpy(np.stack([ends - per_word, ends], 1))
