"""The character language model of Flair's contextual string embeddings, on plain torch.

``CharLM`` is Embedding -> LSTM (or GRU) of any depth -> optional ``proj`` Linear -> decoder,
with the parameter names of Flair's ``LanguageModel``, so its ``state_dict`` is Flair's and
:meth:`CharLM.load` / :meth:`CharLM.save` read and write Flair's ``.pt`` files (the new format,
and the old one of Flair 0.4.x, which lacks ``document_delimiter``, ``recurrent_type`` and
``has_decoder``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from os import PathLike
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .unpickle import CharDictionary, _LegacyCharDictionary, load_pt, save_pt

_RECURRENT = {"lstm": nn.LSTM, "gru": nn.GRU}
_REQUIRED = ("state_dict", "dictionary", "is_forward_lm", "hidden_size", "nlayers")


class CharLM(nn.Module):
    """A character-level language model in Flair's layout.

    Parameters
    ----------
    dictionary : CharDictionary or iterable of str
        The characters (index 0 is ``<unk>``).
    is_forward_lm : bool, default=True
        Reads text left to right (True) or right to left (False).
    hidden_size : int, default=128
        Size of the recurrent state.
    nlayers : int, default=1
        Number of stacked recurrent layers.
    embedding_size : int, default=100
        Size of the character embeddings.
    nout : int or None, default=None
        When set, a ``proj`` Linear maps the recurrent output to ``nout`` features.
    dropout : float, default=0.1
        Dropout on the embeddings and outputs (and between layers), during training only.
    document_delimiter : str, default="\\n"
        The character that starts every text (Flair's start marker).
    recurrent_type : {"lstm", "gru"}, default="lstm"
    has_decoder : bool, default=True
        Whether the model has the next-character decoder (needed to train, not to embed).

    Examples
    --------
    >>> lm = CharLM("abc ", hidden_size=8, embedding_size=4)
    >>> out = lm.embed_texts(["ab c"])
    >>> out.shape  # (characters + start and end marker, texts, hidden_size)
    torch.Size([6, 1, 8])
    """

    def __init__(
        self,
        dictionary: CharDictionary | Iterable[str],
        is_forward_lm: bool = True,
        hidden_size: int = 128,
        nlayers: int = 1,
        embedding_size: int = 100,
        nout: int | None = None,
        dropout: float = 0.1,
        document_delimiter: str = "\n",
        recurrent_type: str = "lstm",
        has_decoder: bool = True,
    ):
        super().__init__()
        if not isinstance(dictionary, CharDictionary):
            dictionary = CharDictionary(dictionary)
        recurrent_type = str(recurrent_type).lower()
        if recurrent_type not in _RECURRENT:
            raise ValueError(
                f"recurrent_type={recurrent_type!r} is not valid; choose one of {list(_RECURRENT)}."
            )
        self.dictionary = dictionary
        self.is_forward_lm = bool(is_forward_lm)
        self.hidden_size = int(hidden_size)
        self.nlayers = int(nlayers)
        self.embedding_size = int(embedding_size)
        self.nout = None if nout is None else int(nout)
        self.dropout = float(dropout)
        self.document_delimiter = document_delimiter
        self.recurrent_type = recurrent_type

        self.drop = nn.Dropout(self.dropout)
        self.encoder = nn.Embedding(len(dictionary), self.embedding_size)
        self.rnn = _RECURRENT[recurrent_type](
            self.embedding_size,
            self.hidden_size,
            self.nlayers,
            dropout=self.dropout if self.nlayers > 1 else 0.0,
        )
        self.proj = nn.Linear(self.hidden_size, self.nout) if self.nout is not None else None
        out_size = self.nout if self.nout is not None else self.hidden_size
        self.decoder = nn.Linear(out_size, len(dictionary)) if has_decoder else None
        self._init_weights()

    def _init_weights(self) -> None:
        # Flair's initialisation: uniform(-0.1, 0.1) embeddings and decoder, zero decoder bias,
        # Glorot-uniform projection; the recurrent layer keeps torch's default.
        with torch.no_grad():
            self.encoder.weight.uniform_(-0.1, 0.1)
            if self.decoder is not None:
                self.decoder.weight.uniform_(-0.1, 0.1)
                self.decoder.bias.zero_()
            if self.proj is not None:
                bound = math.sqrt(3.0 / sum(self.proj.weight.shape))
                self.proj.weight.uniform_(-bound, bound)

    @property
    def has_decoder(self) -> bool:
        return self.decoder is not None

    @property
    def embedding_length(self) -> int:
        """Size of the token vectors: ``nout`` when there is a projection, else ``hidden_size``."""
        return self.nout if self.nout is not None else self.hidden_size

    # -- computation -------------------------------------------------------------
    def init_hidden(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """Zero recurrent state for ``batch_size`` columns."""
        weight = self.encoder.weight
        n_states = 2 if self.recurrent_type == "lstm" else 1
        return tuple(
            weight.new_zeros(self.nlayers, batch_size, self.hidden_size) for _ in range(n_states)
        )

    def recurrent(self, ids: torch.Tensor, hidden=None):
        """Embedding and recurrent layers on ``(time, batch)`` ids: ``(raw output, hidden)``.

        The raw output is before ``proj``; apply :meth:`project` to the rows you need.
        """
        emb = self.drop(self.encoder(ids))
        if hidden is None:
            hidden = self.init_hidden(ids.shape[1])
        if self.recurrent_type == "lstm":
            output, hidden = self.rnn(emb, tuple(hidden))
        else:
            output, h = self.rnn(emb, hidden[0])
            hidden = (h,)
        return output, hidden

    def project(self, output: torch.Tensor) -> torch.Tensor:
        return self.proj(output) if self.proj is not None else output

    def forward(self, ids: torch.Tensor, hidden=None):
        """``(logits, output, hidden)`` for ``(time, batch)`` character ids, as Flair's model."""
        output, hidden = self.recurrent(ids, hidden)
        output = self.drop(self.project(output))
        logits = self.decoder(output) if self.decoder is not None else None
        return logits, output, hidden

    def encode_text(self, text: str) -> np.ndarray:
        """Character ids of ``text`` as the model reads it (reversed for a backward LM)."""
        return self.dictionary.encode(text if self.is_forward_lm else text[::-1])

    @torch.no_grad()
    def embed_texts(self, texts: list[str], chars_per_chunk: int = 512) -> torch.Tensor:
        """Outputs ``(len + 2, n_texts, embedding_length)`` at every character of each text.

        Each text is read as Flair does: ``delimiter + text + " "`` (the text reversed for a
        backward LM). Mostly for inspection and tests; :class:`FlairEmbeddings` keeps only the
        rows it needs.
        """
        marked = [
            self.document_delimiter + (t if self.is_forward_lm else t[::-1]) + " " for t in texts
        ]
        ids = [self.dictionary.encode(m) for m in marked]
        width = max(len(i) for i in ids)
        batch = np.zeros((len(ids), width), dtype=np.int64)
        for j, row in enumerate(ids):
            batch[j, : len(row)] = row
        device = self.encoder.weight.device
        batch = torch.from_numpy(batch).T.contiguous().to(device)
        hidden, parts = None, []
        was_training = self.training
        self.eval()  # no dropout when embedding
        try:
            for start in range(0, width, chars_per_chunk):
                out, hidden = self.recurrent(batch[start : start + chars_per_chunk], hidden)
                parts.append(self.project(out))
        finally:
            self.train(was_training)
        return torch.cat(parts)

    # -- files -------------------------------------------------------------------
    def file_state(self, legacy: bool = False) -> dict:
        """The dict that Flair's ``LanguageModel.save`` writes (Flair 0.4.x keys if ``legacy``)."""
        state = {
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "dictionary": self.dictionary,
            "is_forward_lm": self.is_forward_lm,
            "hidden_size": self.hidden_size,
            "nlayers": self.nlayers,
            "embedding_size": self.embedding_size,
            "nout": self.nout,
            "dropout": self.dropout,
        }
        if legacy:
            if self.recurrent_type != "lstm" or self.decoder is None:
                raise ValueError("Flair 0.4.x files hold only LSTM models with a decoder.")
            legacy_dict = _LegacyCharDictionary.__new__(_LegacyCharDictionary)
            legacy_dict.__setstate__(self.dictionary.__getstate__())
            state["dictionary"] = legacy_dict
        else:
            state["document_delimiter"] = self.document_delimiter
            state["recurrent_type"] = self.recurrent_type
            state["has_decoder"] = self.decoder is not None
        # Flair's state_dict is an OrderedDict; keep the type (and the key order).
        state["state_dict"] = OrderedDict(state["state_dict"])
        return state

    def save(self, path: str | PathLike, legacy: bool = False, **extra) -> None:
        """Write the model as Flair's ``LanguageModel.save`` does; ``extra`` keys are added.

        Parameters
        ----------
        path : str or path
        legacy : bool, default=False
            Write the old format of Flair 0.4.x (no ``document_delimiter``, ``recurrent_type``
            and ``has_decoder`` keys, legacy torch serialisation).
        **extra
            More entries, e.g. the optimizer state of a training checkpoint.
        """
        state = self.file_state(legacy)
        state.update(extra)
        save_pt(state, path, legacy=legacy)

    @classmethod
    def from_file_state(cls, state, source: str = "the file") -> CharLM:
        """Build a model from the dict stored in a Flair ``.pt`` file."""
        if not isinstance(state, dict) or any(k not in state for k in _REQUIRED):
            found = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"{source} is not a Flair character language model: expected the keys "
                f"{list(_REQUIRED)}, found {found}."
            )
        weights = state["state_dict"]
        # A file may say has_decoder=False yet carry decoder weights, or the reverse.
        has_decoder = bool(state.get("has_decoder", True)) and "decoder.weight" in weights
        if not has_decoder:
            weights = {k: v for k, v in weights.items() if not k.startswith("decoder.")}
        model = cls(
            dictionary=state["dictionary"],
            is_forward_lm=state["is_forward_lm"],
            hidden_size=state["hidden_size"],
            nlayers=state["nlayers"],
            embedding_size=state.get("embedding_size", weights["encoder.weight"].shape[1]),
            nout=state.get("nout"),
            dropout=state.get("dropout", 0.1),
            document_delimiter=state.get("document_delimiter", "\n"),
            recurrent_type=state.get("recurrent_type", "lstm"),
            has_decoder=has_decoder,
        )
        try:
            model.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"The weights in {source} do not fit its sizes: {exc}") from exc
        return model.eval()

    @classmethod
    def load(cls, path: str | PathLike) -> CharLM:
        """Read a Flair language-model file (any version), never executing code from it.

        Examples
        --------
        >>> import tempfile, os
        >>> lm = CharLM("ab ", hidden_size=4, embedding_size=2)
        >>> path = os.path.join(tempfile.mkdtemp(), "lm.pt")
        >>> lm.save(path)
        >>> CharLM.load(path).hidden_size
        4
        """
        return cls.from_file_state(load_pt(path), source=str(Path(path)))
