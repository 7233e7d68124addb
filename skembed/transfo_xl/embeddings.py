"""TransformerXLEmbeddings: word vectors from a Transformer-XL language model, natively.

transformers 5 removed Transformer-XL; this class runs Hugging Face Transformer-XL checkpoints
(such as ``transfo-xl-wt103``) with skembed's own encoder (:mod:`.model`) and gives the same
hidden states transformers 4.x gave.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .._layers import mix_weights, parse_layers, scalar_mix
from ..base import BaseTokenEmbedder, check_choice, store_params
from ..resolve import file_signature
from .checkpoint import TransfoXLConfig, load_state_dict, resolve_folder
from .model import TransfoXL
from .vocab import Vocabulary, load_vocabulary


@dataclass
class LoadedTransfoXL:
    """A Transformer-XL checkpoint ready to run: the encoder, its vocabulary and config."""

    net: TransfoXL
    vocab: Vocabulary
    config: TransfoXLConfig

    @property
    def n_layers(self) -> int:
        return self.net.n_layers


def load_transfo_xl(folder: str | Path, device="cpu") -> LoadedTransfoXL:
    """Load a Hugging Face Transformer-XL folder (config, weights, vocabulary) onto ``device``.

    Examples
    --------
    >>> from pathlib import Path
    >>> import skembed
    >>> folder = Path(skembed.__file__).parents[1] / "tests/data/transfo_xl/model_a"
    >>> loaded = load_transfo_xl(folder)
    >>> loaded.n_layers, loaded.config.d_model, loaded.vocab.ids(["the", "zebra"])
    (4, 16, [2, 0])
    """
    folder = Path(folder)
    config = TransfoXLConfig.from_file(folder / "config.json")
    net = TransfoXL.from_state_dict(config, load_state_dict(folder), source=str(folder))
    vocab = load_vocabulary(folder)
    vocab.limit(config.vocab_size)
    return LoadedTransfoXL(net.to(device), vocab, config)


class TransformerXLEmbeddings(BaseTokenEmbedder):
    """Contextual word embeddings from a Transformer-XL language model.

    Transformer-XL works on words: each token of a document is one word of the model's
    vocabulary (words it does not know become ``<unk>``), so every token gets exactly one
    vector and there is no sub-token pooling. Each document starts from a fresh memory; one
    longer than the model's segment length (``tgt_len`` in ``config.json``, 128 for
    ``transfo-xl-wt103``) runs segment by segment with the memory of the previous segments, so
    every token gets a row. The network runs once per document: ``layers`` and
    ``use_scalar_mix`` only combine stored states.

    Parameters
    ----------
    pretrained_model_name_or_path : str or path, default="transfo-xl-wt103"
        A folder written by ``save_pretrained`` of transformers 4.x (``config.json``,
        ``pytorch_model.bin`` or ``model.safetensors``, ``vocab.pkl`` or ``vocab.bin``), or a
        name looked up in ``$SKEMBED_HOME/transformers``, the Hugging Face cache and (when
        downloads are allowed) the Hub.
    layers : str, int or tuple of int, default="1,2,3"
        Hidden states to use: 0 is the word-embedding layer, 1 the first Transformer-XL
        layer, -1 the last; ``"all"`` for every one. Several are concatenated in the order given.
    use_scalar_mix : bool, default=False
        Average the selected layers into one vector instead of concatenating them.
    tokenizer : None, "whitespace" or callable, default=None
        How string documents are split into words (whitespace by default). Transformer-XL's
        vocabulary expects Moses-style tokens (``"don 't"``, ``"1 @,@ 000"``), so pass token
        lists or a matching tokenizer for best results.
    device : str, default="auto"
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    batch_size : int, default=32
        Documents per forward pass.
    precision : {"float32", "float16", "bfloat16"}, default="float32"
        Autocast precision of the forward pass; outputs are float32.
    show_progress_bar : bool, default=False
        One tqdm bar per call (``transform``, or a pooler's), over its documents.

    Attributes
    ----------
    n_features_out_ : int
        Size of each token vector: ``d_model`` times the number of layers (1 with the mix).
    device_ : str
        The device the model runs on.

    Examples
    --------
    >>> from pathlib import Path
    >>> import skembed
    >>> from skembed import TransformerXLEmbeddings
    >>> folder = Path(skembed.__file__).parents[1] / "tests/data/transfo_xl/model_a"
    >>> emb = TransformerXLEmbeddings(folder, layers="-1,0").fit()
    >>> r = emb.transform(["the film was shown in the city .", "zebra"])
    >>> r[0].shape, r[1].shape
    ((8, 32), (1, 32))
    """

    _shares_states = True  # with sibling processes: one tensor per document

    _feature_prefix = "transfoxl"

    def __init__(
        self,
        pretrained_model_name_or_path="transfo-xl-wt103",
        layers="1,2,3",
        use_scalar_mix=False,
        tokenizer=None,
        device="auto",
        batch_size=32,
        precision="float32",
        show_progress_bar=False,
    ):
        store_params(self, locals())

    def _model_key(self):
        folder = str(resolve_folder(self.pretrained_model_name_or_path).resolve())
        return ("transfo-xl", folder, file_signature(folder))  # rewritten files: a new model

    def _load_model(self, device):
        return load_transfo_xl(self._model_key()[1], device)

    def _check_params(self, model):
        check_choice("use_scalar_mix", self.use_scalar_mix, (True, False))
        parse_layers(self.layers, model.n_layers)

    def _n_features(self, model):
        n = 1 if self.use_scalar_mix else len(parse_layers(self.layers, model.n_layers))
        return n * model.config.d_model

    def _doc_cost(self, doc):
        return len(doc)  # one position per word

    def _forward(self, model, docs):
        # State of a document: all its hidden states, (n_layer + 1, n_words, d_model).
        return model.net.encode([model.vocab.ids(doc) for doc in docs])

    def _combine(self, model, states):
        layers = parse_layers(self.layers, model.n_layers)
        index = torch.tensor(layers, device=states[0].device)
        chosen = torch.cat(states, 1).index_select(0, index).float()  # (layers, words, d)
        if self.use_scalar_mix:
            chosen = scalar_mix(chosen, mix_weights(None, len(layers)))
        flat = chosen.permute(1, 0, 2).reshape(chosen.shape[1], -1)
        return list(torch.split(flat, [s.shape[1] for s in states], 0))
