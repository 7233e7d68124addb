"""Words to sub-token ids: each word tokenized as a pre-split word, once per loaded model, the
ids kept in a byte-bounded :class:`WordCache` that follows the state cache (off and cleared
with it, see :func:`skembed.set_cache`)."""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from .. import cache as _cache
from .._input import replace_lone_surrogates
from .._lru import ByteLRU

if TYPE_CHECKING:
    from .load import HFModel

# Bytes of words and their sub-token ids kept per loaded model, as :func:`_entry_bytes`
# estimates them: about 120,000 typical words (the common vocabulary of a large corpus; rarer
# words are tokenized again when they come back), or 3,000 pasted 10 kB tokens.
WORD_CACHE_BYTES = 32 << 20
# What an entry of an OrderedDict (the LRU's) costs besides its key and value: its hash-table slot and
# index, and its node in the order list (75 to 105 bytes with tracemalloc on CPython 3.11,
# by how full the table is).
_ENTRY_OVERHEAD = 112
_INT_BYTES = 28  # a Python int id (ids below 257 are shared, so this over-counts them)
# New words tokenized per call of the tokenizer when a call's words are primed: few calls
# (each has a fixed cost), bounded memory for the ids of a large corpus's vocabulary.
_PRIME_CHUNK = 8192
_WORD_CACHES: weakref.WeakSet[WordCache] = weakref.WeakSet()


def _entry_bytes(word: str, ids: list[int]) -> int:
    """Memory a word and its sub-token ids hold in a :class:`WordCache`, estimated."""
    return sys.getsizeof(word) + sys.getsizeof(ids) + _INT_BYTES * len(ids) + _ENTRY_OVERHEAD


class WordCache:
    """Sub-token ids of the words one tokenizer has seen: ``word -> ids``, least recently
    used first out once the entries pass ``max_bytes`` (estimated by :func:`_entry_bytes`).

    It follows :func:`skembed.set_cache`: with caching off, a call forgets its words when it
    ends (see :func:`in_call`); :func:`skembed.clear_cache` empties it.
    """

    def __init__(self, max_bytes: int = WORD_CACHE_BYTES):
        self._lru = ByteLRU(max_bytes)
        _WORD_CACHES.add(self)

    @property
    def max_bytes(self) -> int:
        return self._lru.max_bytes

    @max_bytes.setter
    def max_bytes(self, max_bytes: int) -> None:
        self._lru.resize(max_bytes)

    def __contains__(self, word) -> bool:
        return word in self._lru

    def __getitem__(self, word: str) -> list[int]:
        return self._lru[word]

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def nbytes(self) -> int:
        """The entries' bytes, as :func:`_entry_bytes` estimates them."""
        return self._lru.nbytes

    def n_subtokens(self, words: list[str]) -> int:
        """The sub-tokens of ``words``; KeyError when one is not cached."""
        return sum(map(len, map(self._lru.__getitem__, words)))

    def lookup(self, words: Iterable[str]) -> dict[str, list[int] | None]:
        """``{word: ids, or None when not cached}``; the words found become the most recent."""
        words = list(words)
        return dict(zip(words, self._lru.get_many(words)))

    def add(self, fresh: dict[str, list[int]]) -> None:
        """Keep ``fresh`` words (a word larger than the whole budget is not kept), then drop
        the least recently used ones beyond the budget."""
        self._lru.put_many((w, ids, _entry_bytes(w, ids)) for w, ids in fresh.items())

    def clear(self) -> None:
        self._lru.clear()


def clear_word_caches() -> None:
    """Empty the word cache of every loaded model (for :func:`skembed.clear_cache`)."""
    for word_cache in list(_WORD_CACHES):
        word_cache.clear()


def in_call(hf: HFModel, batches: Iterator) -> Iterator:
    """Yield from ``batches`` (one call's work); with caching off
    (:func:`skembed.set_cache`), the words the call tokenized are forgotten when it ends."""
    try:
        yield from batches
    finally:
        if not _cache.STATES.enabled:
            hf.word_ids.clear()


# Words whose sub-tokens tell apart a tokenizer that does more than its Rust backend.
_PROBE = ["Hello", "world", "unbelievable", "naïve", "Ärger", "12,345", "don't", "e-mail",
          "東京", "", "\u200b", "  ", "[CLS]", "<s>", "<unk>", "ﬁne", "Ⅻ"]  # fmt: skip


def word_encoder(tok) -> Callable[[list[str]], list[list[int]]]:
    """``words -> sub-token ids of each word``, tokenized without special tokens.

    Calling a transformers tokenizer wraps its Rust backend and converts every result to
    Python objects, which costs twice the tokenizing itself on single words; when the
    tokenizer adds nothing else (checked on probe words), the backend is called directly.
    """

    def wrapped(words):
        return tok(words, add_special_tokens=False)["input_ids"]

    try:
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:  # pragma: no cover - other transformers versions
        return wrapped
    backend = getattr(tok, "_tokenizer", None)
    plain = type(tok)._encode_plus is TokenizersBackend._encode_plus
    if backend is None or not isinstance(tok, TokenizersBackend) or not plain:
        return wrapped

    def direct(words):
        return [e.ids for e in backend.encode_batch(words, add_special_tokens=False)]

    # The wrapped call first: it leaves the backend without truncation or padding.
    return direct if wrapped(_PROBE) == direct(_PROBE) else wrapped


def _clip(ids: list[int], limit: int) -> list[int]:
    """A word's sub-tokens, at most ``limit``: its first and last ones when it has more.

    A word longer than a window (a 1 MB blob pasted as one token) would otherwise cost one
    forward pass per half window for a single output row; first/last pooling stay exact.
    """
    if len(ids) <= limit:
        return ids
    head = limit // 2
    return ids[:head] + ids[len(ids) - (limit - head) :]


def word_ids(hf: HFModel, words: list[str]) -> list[list[int]]:
    """Sub-token ids of each word, tokenized as a pre-split word.

    A word the tokenizer reduces to nothing (``"\\u200b"``, ``""``) has no sub-tokens: it is
    left out of the model input and gets a zero vector, as Flair does, so the other words get
    the vectors they get without it. A word with more sub-tokens than a window keeps its first
    and last ones (see ``_clip``).
    """
    found = hf.word_ids.lookup(set(words))
    new = [w for w, ids in found.items() if ids is None]
    if new:
        # Lone surrogates (text decoded with "surrogateescape") are not valid Unicode and the
        # tokenizers refuse them: read each as U+FFFD, as decoding with errors="replace" would.
        texts = list(map(replace_lone_surrogates, new))
        encoded = (hf.encode or word_encoder(hf.tokenizer))(texts)
        fresh = {w: _clip(ids, hf.window) for w, ids in zip(new, encoded)}
        found.update(fresh)
        hf.word_ids.add(fresh)
    return [found[w] for w in words]


def prime_words(hf: HFModel, docs: list[list[str]], chunk: int = _PRIME_CHUNK) -> None:
    """Tokenize the words of ``docs`` not seen before, in a few large calls (one call per
    document costs more than the tokenizing itself on short texts). Words that do not fit in
    the word cache are tokenized again when their documents run."""
    cache = hf.word_ids
    new = list(dict.fromkeys(w for doc in docs for w in doc if w not in cache))
    for start in range(0, len(new), chunk):
        word_ids(hf, new[start : start + chunk])
