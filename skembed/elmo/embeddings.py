"""ELMoEmbeddings: AllenNLP's ELMo models as a scikit-learn token embedder."""

from __future__ import annotations

from collections.abc import Hashable

import torch

from .._host import compact
from ..base import BaseTokenEmbedder, check_choice, store_params
from ..resolve import file_signature
from .files import resolve_elmo
from .model import ElmoModel
from .weights import load_elmo

EMBEDDING_MODES = ("all", "top", "average")


class ELMoEmbeddings(BaseTokenEmbedder):
    """Contextual token vectors from an ELMo biLM (AllenNLP's published files, run in torch).

    Every document is one sentence for the biLM and starts from zero LSTM state, so a
    document's vectors never depend on the rest of the batch or on earlier calls (AllenNLP's
    ``ElmoEmbedder`` carried state from call to call; this does not).

    Parameters
    ----------
    model : str, path or (str, str), default="original"
        A published id (``"small"``, ``"medium"``, ``"original"``, ``"original-5.5B"``, ``"pt"``,
        ``"pubmed"``), a directory holding one options ``*.json`` and one weights ``*.hdf5``
        file, or an ``(options_path, weights_path)`` pair. Ids are looked up in the skembed cache
        (``$SKEMBED_HOME``) and downloaded there only when downloads are allowed.
    embedding_mode : {"all", "top", "average"}, default="all"
        ``"all"``: the three layers concatenated (3 x 2P features, 3072 for ``original``);
        ``"top"``: the last biLSTM layer (2P); ``"average"``: the mean of the layers (2P).
        Changing it reuses the cached forward pass.
    tokenizer : callable or None, default=None
        Splits string documents into tokens (whitespace when None).
    device : str, default="auto"
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:<index>"``.
    batch_size : int, default=32
        Documents per forward pass.
    precision : {"float32", "float16", "bfloat16"}, default="float32"
        The matmuls run in this dtype; LSTM memory cells and gate arithmetic stay float32.
    show_progress_bar : bool, default=False
        One tqdm bar per call (``transform``, or a pooler's), over its documents.

    Attributes
    ----------
    n_features_out_ : int
        Width of each token vector.
    device_ : str
        The device the model runs on.

    Examples
    --------
    >>> import tempfile
    >>> from skembed.elmo import ElmoOptions, write_random_elmo
    >>> opts = ElmoOptions.from_dict({
    ...     "char_cnn": {"embedding": {"dim": 4}, "filters": [[1, 4], [2, 4]], "n_highway": 1,
    ...                  "activation": "relu"},
    ...     "lstm": {"dim": 16, "projection_dim": 4, "n_layers": 2, "cell_clip": 3, "proj_clip": 3},
    ... })
    >>> files = write_random_elmo(tempfile.mkdtemp(), opts)
    >>> elmo = ELMoEmbeddings(model=files, embedding_mode="top").fit()
    >>> out = elmo.transform(["the cat sat", "hello"])
    >>> out[0].shape, out[1].shape
    ((3, 8), (1, 8))
    """

    _shares_states = True  # with sibling processes: one tensor per document

    _feature_prefix = "elmo"
    _transient = BaseTokenEmbedder._transient + ("_resolved",)

    def __init__(
        self,
        model="original",
        embedding_mode: str = "all",
        *,
        tokenizer=None,
        device: str = "auto",
        batch_size: int = 32,
        precision: str = "float32",
        show_progress_bar: bool = False,
    ):
        store_params(self, locals())

    def _files(self):
        """The resolved ``(options, weights)`` paths, resolved once per value of ``model``."""
        given = self.model
        snapshot = tuple(map(str, given)) if isinstance(given, tuple | list) else str(given)
        cached = self.__dict__.get("_resolved")
        if cached is None or cached[0] != snapshot:
            cached = (snapshot, tuple(p.resolve() for p in resolve_elmo(given)))
            self._resolved = cached
        return cached[1]

    def _model_key(self) -> Hashable:
        options, weights = self._files()
        # Files rewritten in place are a new model: their size and time are in the key.
        return ("elmo", str(options), str(weights), file_signature(options, weights))

    def _load_model(self, device: torch.device) -> ElmoModel:
        return load_elmo(*self._files(), device=device)

    def _check_params(self, model) -> None:
        check_choice("embedding_mode", self.embedding_mode, EMBEDDING_MODES)

    def _forward(self, model: ElmoModel, docs: list[list[str]]) -> list[torch.Tensor]:
        # The state keeps every layer, so embedding_mode is applied in _combine only.
        return model(docs)

    def _combine(self, model: ElmoModel, states: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.embedding_mode == "top":
            # A copy, not a view: a view would keep every layer of the state alive.
            return [compact(s[-1]) for s in states]
        if self.embedding_mode == "average":
            return [s.mean(dim=0) for s in states]
        # (layers, tokens, 2P) -> (tokens, layers * 2P): layer 0 first, as AllenNLP orders them.
        return [s.transpose(0, 1).reshape(s.shape[1], -1) for s in states]

    def _n_features(self, model: ElmoModel) -> int:
        width = model.options.output_dim
        return width * model.n_layers if self.embedding_mode == "all" else width

    def _doc_cost(self, doc: list[str]) -> int:
        # The recurrence costs one step per token: batch documents of similar token counts.
        return len(doc)
