"""Tokens to character ids exactly as AllenNLP's ELMo maps them.

A token becomes ``max_chars`` ids (50 in published models): the beginning-of-word marker, the
token's UTF-8 bytes (cut to ``max_chars - 2`` bytes, even in the middle of a multi-byte
character), the end-of-word marker, then padding. Every id is shifted by one so that 0 stays free
for batch padding. Sentences are wrapped in a beginning- and an end-of-sentence token.
"""

from __future__ import annotations

from functools import lru_cache

import torch

BEGIN_SENTENCE = 256
END_SENTENCE = 257
BEGIN_WORD = 258
END_WORD = 259
PAD_CHAR = 260
# AllenNLP maps these two literal tokens to the sentence boundaries, wherever they occur.
BOS = "<S>"
EOS = "</S>"


@lru_cache(maxsize=1 << 16)
def token_char_ids(token: str, max_chars: int = 50) -> tuple[int, ...]:
    """The ``max_chars`` character ids of one token (already shifted by +1).

    Parameters
    ----------
    token : str
        The token; :data:`BOS` (``"<S>"``) and :data:`EOS` (``"</S>"``) give the sentence
        boundary ids, as in AllenNLP.
    max_chars : int
        Ids per token, markers and padding included.

    Examples
    --------
    >>> token_char_ids("a", max_chars=6)
    (259, 98, 260, 261, 261, 261)
    >>> token_char_ids(BOS, max_chars=6)
    (259, 257, 260, 261, 261, 261)
    """
    if token == BOS:
        body = [BEGIN_SENTENCE]
    elif token == EOS:
        body = [END_SENTENCE]
    else:
        # "ignore" only drops what UTF-8 cannot encode (lone surrogates), as AllenNLP does.
        body = list(token.encode("utf-8", "ignore")[: max_chars - 2])
    ids = [BEGIN_WORD, *body, END_WORD] + [PAD_CHAR] * (max_chars - 2 - len(body))
    return tuple(i + 1 for i in ids)


def batch_char_ids(
    docs: list[list[str]], max_chars: int = 50, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Character ids of a batch of sentences, wrapped in sentence boundaries.

    Repeated tokens are mapped once: the network embeds each distinct token once per batch.

    Parameters
    ----------
    docs : list of list of str
        Non-empty token lists.
    max_chars : int
        Ids per token.
    device : torch device
        Where the returned tensors live.

    Returns
    -------
    unique_ids : LongTensor of shape (n_unique, max_chars)
        Character ids of each distinct token (the boundary tokens included).
    positions : LongTensor of shape (n_docs, max_len + 2)
        Row of ``unique_ids`` for each position of each sentence, boundaries included; padding
        positions point at the end-of-sentence token and are never read.
    lengths : LongTensor of shape (n_docs,)
        Length of each sentence with its two boundary tokens.

    Examples
    --------
    >>> ids, pos, lengths = batch_char_ids([["a", "b"], ["a"]], max_chars=6)
    >>> ids.shape, pos.tolist(), lengths.tolist()
    (torch.Size([4, 6]), [[0, 2, 3, 1], [0, 2, 1, 1]], [4, 3])
    """
    rows: dict = {BOS: 0, EOS: 1}
    width = max(len(d) for d in docs) + 2
    positions = []
    for doc in docs:
        seq = [0] + [rows.setdefault(t, len(rows)) for t in doc] + [1]
        positions.append(seq + [1] * (width - len(seq)))
    unique = [token_char_ids(t, max_chars) for t in rows]
    return (
        torch.tensor(unique, dtype=torch.long, device=device),
        torch.tensor(positions, dtype=torch.long, device=device),
        torch.tensor([len(d) + 2 for d in docs], dtype=torch.long, device=device),
    )
