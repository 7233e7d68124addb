"""FlairEmbeddings: contextual string embeddings from a character LM, as a sklearn transformer."""

from __future__ import annotations

import copy
import hashlib
import numbers
import warnings
from collections.abc import Hashable
from os import PathLike

import numpy as np
import torch

from .._host import compact
from .._precision import cpu_lstm_works, recurrent_autocast
from ..base import BaseTokenEmbedder, store_params
from ..resolve import file_signature
from .ids import is_lowercased, resolve_model_file
from .lm import CharLM


def token_positions(
    tokens: list[str], is_forward_lm: bool, delimiter: str = "\n"
) -> tuple[np.ndarray, np.ndarray]:
    """Where each token's vector is read in the LM's input ``delimiter + text + " "``.

    ``text`` is the tokens joined by single spaces (reversed for a backward LM). A forward LM
    reads a token ``[s, e)`` of ``text`` at the character after it (``len(delimiter) + e``, the
    space), a backward LM at ``len(delimiter) + len(text) - s``; without the whitespace, one
    index less (the token's own last character).

    Returns
    -------
    with_whitespace, without_whitespace : ndarray of int, shape (n_tokens,)

    Examples
    --------
    >>> token_positions(["ab", "c"], True)
    (array([3, 5]), array([2, 4]))
    >>> token_positions(["ab", "c"], False)
    (array([5, 2]), array([4, 1]))
    """
    pos, _ = batch_positions([tokens], is_forward_lm, delimiter)
    return pos[: len(tokens)], pos[len(tokens) :]


def batch_positions(
    docs: list[list[str]], is_forward_lm: bool, delimiter: str = "\n"
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`token_positions` of many documents at once, flat: ``(positions, columns)``.

    Document ``b`` owns ``2 * n_b`` consecutive entries: its tokens' positions with the
    whitespace, then without; ``columns`` repeats ``b`` for each.
    """
    counts = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    n = int(counts.sum())
    lengths = np.fromiter((len(t) for d in docs for t in d), dtype=np.int64, count=n)
    doc_of = np.repeat(np.arange(len(docs)), counts)
    first = np.cumsum(counts) - counts  # index of each document's first token
    total = np.cumsum(lengths + 1)  # running length of "tok " over all documents
    base = np.where(first > 0, total[np.maximum(first - 1, 0)] if n else 0, 0)
    ends = total - base[doc_of] - 1  # end of each token inside its own text
    starts = ends - lengths
    if is_forward_lm:
        with_ws = len(delimiter) + ends
    else:
        text_len = np.zeros(len(docs), dtype=np.int64)
        np.add.at(text_len, doc_of, lengths + 1)
        with_ws = len(delimiter) + (text_len - 1)[doc_of] - starts
    local = np.arange(n) - first[doc_of]
    pos = np.empty(2 * n, dtype=np.int64)
    pos[2 * first[doc_of] + local] = with_ws
    pos[2 * first[doc_of] + counts[doc_of] + local] = np.maximum(with_ws - 1, 0)
    return pos, np.repeat(np.arange(len(docs)), 2 * counts)


def _fingerprint(lm: CharLM) -> str:
    """A content hash of an in-memory LM, so clones share the model and state caches."""
    digest = hashlib.sha1()
    for key in ("is_forward_lm", "hidden_size", "nlayers", "nout", "recurrent_type"):
        digest.update(repr(getattr(lm, key)).encode())
    digest.update(lm.document_delimiter.encode("utf-8", "surrogatepass"))
    digest.update(b"".join(lm.dictionary.idx2item))
    for name, tensor in lm.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class FlairEmbeddings(BaseTokenEmbedder):
    """Flair's contextual string embeddings: each word is a character LM's state around it.

    A forward LM reads the text left to right and gives each word its state at the character
    after it; a backward LM reads right to left and uses the state before the word. The vectors
    equal Flair's for the same file and tokens. Stack a forward and a backward model (for
    instance with :class:`~skembed.StackedEmbeddings`) as Flair's tutorials do.

    Parameters
    ----------
    model : str, path or CharLM, default="news-forward"
        A published Flair id (``"news-forward"``, ``"news-backward-fast"``, ``"multi-forward"``,
        ``"de-forward"``, ``"pubmed-backward"``... see :data:`skembed.flair.PRETRAINED`; case
        and language names such as ``"german-forward"`` are accepted as in Flair), a path to a
        Flair ``.pt`` file or a training folder holding ``best-lm.pt``, or a :class:`CharLM`.
        Ids resolve from the skembed cache, then Flair's cache (``~/.flair/embeddings`` or
        ``$FLAIR_CACHE_ROOT``), then a download when allowed.
    with_whitespace : bool, default=True
        Read the state at the whitespace next to the word (True, Flair's default) or at its
        last character. Both are stored, so switching reuses the cached forward pass.
    chars_per_chunk : int, default=512
        Characters run through the LSTM at a time (the state is carried over): bounds memory,
        never changes results.
    tokenizer : callable or None, default=None
        Splits string documents into tokens (whitespace when None).
    device : str, default="auto"
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:<index>"``.
    batch_size : int, default=32
        Documents per forward pass.
    precision : {"float32", "float16", "bfloat16"}, default="float32"
        Autocast precision of the forward pass; outputs are float32. On the CPU, torch's LSTM
        has no float16 kernel (and a bfloat16 one only on CPUs with AVX-512): ``fit`` refuses
        a precision the CPU's LSTM cannot run with a ValueError that says what to use.
    show_progress_bar : bool, default=False
        One tqdm bar per call (``transform``, or a pooler's), over its documents.

    Attributes
    ----------
    n_features_out_ : int
        Width of each token vector (the LM's ``nout``, or its hidden size).
    device_ : str
        The device the model runs on.

    Examples
    --------
    >>> from skembed.flair import CharLM
    >>> lm = CharLM("abcdefghijklmnopqrstuvwxyz ", hidden_size=16, embedding_size=8)
    >>> emb = FlairEmbeddings(lm).fit()
    >>> out = emb.transform(["the cat sat", "hello"])
    >>> out[0].shape, out[1].shape
    ((3, 16), (1, 16))
    """

    _shares_states = True  # with sibling processes: one tensor per document

    _feature_prefix = "flair"
    _transient = BaseTokenEmbedder._transient + ("_resolved",)

    def __init__(
        self,
        model="news-forward",
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

    # -- model -----------------------------------------------------------------
    def _source(self) -> tuple:
        """``("file", path, lowercase)`` or ``("lm", fingerprint)``, resolved once per value."""
        given = self.model
        if isinstance(given, CharLM):
            # In-place training bumps tensor versions: then the fingerprint is recomputed.
            snapshot = (id(given), sum(t._version for t in given.state_dict().values()))
        elif isinstance(given, str | PathLike):
            snapshot = str(given)
        else:
            raise TypeError(
                "model must be a Flair id such as 'news-forward', a path to a Flair .pt file, "
                f"or a skembed.flair.CharLM; got {type(given).__name__}."
            )
        cached = self.__dict__.get("_resolved")
        if cached is None or cached[0] != snapshot:
            if isinstance(given, CharLM):
                source = ("lm", _fingerprint(given))
            else:
                path, model_id = resolve_model_file(given)
                source = ("file", path.resolve(), is_lowercased(model_id))
            cached = (snapshot, source)
            self._resolved = cached
        return cached[1]

    def _model_key(self) -> Hashable:
        source = self._source()
        if source[0] == "lm":
            return ("flair", "lm", source[1])
        # A retrained file at the same path is a different model: its size and time are in it.
        return ("flair", str(source[1]), file_signature(source[1]), source[2])

    def _load_model(self, device: torch.device) -> CharLM:
        source = self._source()
        if source[0] == "lm":
            # Never move or switch the mode of the caller's module: run a copy.
            lm = copy.deepcopy(self.model)
        else:
            lm = CharLM.load(source[1])
        lm.lowercase = source[0] == "file" and source[2]
        return lm.to(device).eval()

    def _check_params(self, model: CharLM) -> None:
        if not isinstance(self.with_whitespace, bool | np.bool_):
            raise ValueError(
                f"with_whitespace must be True or False, got {self.with_whitespace!r}."
            )
        cpc = self.chars_per_chunk
        if not isinstance(cpc, numbers.Integral) or isinstance(cpc, bool) or cpc < 1:
            raise ValueError(f"chars_per_chunk must be a positive integer, got {cpc!r}.")
        if self._lstm_in_float32(model):
            instead = "'float32' or 'bfloat16'" if cpu_lstm_works("bfloat16") else "'float32'"
            raise ValueError(
                f"precision={self.precision!r} is not available for {type(self).__name__} on "
                f"this CPU: torch's CPU LSTM (oneDNN) has no {self.precision} kernel here. Use "
                f"precision={instead} on the CPU, or {self.precision!r} on a GPU "
                "(device='cuda')."
            )

    def _lstm_in_float32(self, model: CharLM) -> bool:
        """Whether the LSTM must run in float32: ``precision`` on the CPU has no LSTM kernel."""
        return (
            self._device.type == "cpu"
            and model.recurrent_type == "lstm"
            and not cpu_lstm_works(self.precision)
        )

    def _n_features(self, model: CharLM) -> int:
        return model.embedding_length

    # -- forward and combine -----------------------------------------------------
    def _forward(self, model: CharLM, docs: list[list[str]]) -> list[torch.Tensor]:
        """Run the LM once over each document; keep its outputs at the tokens' two positions.

        The state of a document is ``(2, n_tokens, dim)``: the outputs with and without the
        whitespace, so ``with_whitespace`` is chosen in ``_combine``.
        """
        device = model.encoder.weight.device
        delim = model.document_delimiter
        texts = [" ".join(doc) for doc in docs]
        if getattr(model, "lowercase", False):
            # As Flair: lower-case the text, but keep the offsets of the original tokens.
            texts = [t.lower() for t in texts]
        marked = [delim + (t if model.is_forward_lm else t[::-1]) + " " for t in texts]
        ids = model.dictionary.encode("".join(marked))  # one lookup for the whole batch
        # Positions to keep: per document, all "with whitespace" rows then all "without".
        pos, cols = batch_positions(docs, model.is_forward_lm, delim)
        counts = [len(doc) for doc in docs]

        # Padding sits after each text's end: a causal LSTM's earlier outputs never see it.
        width = max(len(m) for m in marked)
        batch = np.zeros((width, len(marked)), dtype=np.int64)
        at = 0
        for j, text in enumerate(marked):
            batch[: len(text), j] = ids[at : at + len(text)]
            at += len(text)
        batch = torch.from_numpy(batch).to(device)

        hidden, pieces = None, []
        cpc = int(self.chars_per_chunk)
        flat = pos * len(docs) + cols  # row of (position, column) in a (time * batch, dim) view
        # ``fit`` refuses such a precision; an estimator fitted elsewhere (on a GPU, then
        # unpickled here) runs the LSTM in float32 rather than fail.
        in_float32 = self._lstm_in_float32(model)
        if in_float32:
            warnings.warn(
                f"{type(self).__name__}: precision={self.precision!r} has no LSTM kernel on "
                "this CPU; the LSTM runs in float32 (the rest in the precision asked for).",
                RuntimeWarning,
                stacklevel=2,
            )
        for start in range(0, width, cpc):
            # Out of autocast where it would pick the wrong dtype (float16 on CUDA for
            # bfloat16) or one this CPU lacks; the state carried to the next chunk is float32,
            # so the chunk size decides where the state is read, not how it is rounded.
            with recurrent_autocast(device, self.precision, in_float32):
                out, hidden = model.recurrent(batch[start : start + cpc], hidden)
            hidden = tuple(h.float() for h in hidden)
            take = np.flatnonzero((pos >= start) & (pos < start + cpc))
            if len(take):
                index = torch.from_numpy(flat[take] - start * len(docs)).to(device)
                pieces.append((take, out.reshape(-1, out.shape[-1]).index_select(0, index)))
        if len(pieces) == 1:
            rows = pieces[0][1]  # one chunk held every position, in order
        else:
            rows = pieces[0][1].new_empty((len(pos), pieces[0][1].shape[-1]))
            for take, values in pieces:
                rows.index_copy_(0, torch.from_numpy(take).to(device), values)
        # The projection is per position: apply it to the kept rows only.
        rows = model.project(rows)
        states, at = [], 0
        for n in counts:
            states.append(rows[at : at + 2 * n].reshape(2, n, -1).clone())
            at += 2 * n
        return states

    def _combine(self, model: CharLM, states: list[torch.Tensor]) -> list[torch.Tensor]:
        pick = 0 if self.with_whitespace else 1
        # A copy, not a view: a view would keep the other half of the state alive.
        return [compact(s[pick]) for s in states]
