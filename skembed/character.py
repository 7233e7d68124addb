"""CharacterEmbeddings: a character BiLSTM per token, random or trained end to end in ``fit``.

Flair's ``CharacterEmbeddings`` is a random network that a downstream Flair model trains. Here
the network is trained (or left random, seeded) in ``fit``: with ``y`` it learns from document
labels or per-token labels through a small pooling + linear head, and ``transform`` returns the
trained character features. The weights are a fitted attribute and pickle with the estimator.
"""

from __future__ import annotations

import copy
import hashlib
import numbers
import warnings
from collections.abc import Hashable

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import type_of_target
from torch import nn

from ._device import resolve_device
from ._precision import recurrent_autocast
from .base import BaseTokenEmbedder, store_params
from .tagging import _label_lists

_PAD_BUDGET = 1 << 16  # characters x words per LSTM call: bounds memory on very long tokens


class CharBiLSTM(nn.Module):
    """Character embedding -> one bidirectional LSTM layer; a word is ``[h_forward ; h_backward]``.

    ``h_forward`` is the forward state after the word's last character, ``h_backward`` the
    backward state after its first. Character id 0 is the unknown character.
    """

    def __init__(self, characters: str, char_embedding_dim: int, hidden_size: int):
        super().__init__()
        self.characters = characters
        self.char_index = {c: i + 1 for i, c in enumerate(characters)}
        self.embedding = nn.Embedding(len(characters) + 1, char_embedding_dim)
        self.lstm = nn.LSTM(char_embedding_dim, hidden_size, bidirectional=True)

    def seed_(self, seed: int) -> CharBiLSTM:
        """Initialise from ``seed``: each character's row depends only on the seed and the
        character, so random features do not depend on which characters the corpus had."""
        with torch.no_grad():
            for i, char in enumerate(["<unk>", *self.characters]):
                g = torch.Generator().manual_seed(
                    (seed * 1_000_003 + (ord(char) if i else -1)) % 2**62
                )
                self.embedding.weight[i] = torch.randn(self.embedding.embedding_dim, generator=g)
            g = torch.Generator().manual_seed(seed)
            bound = self.lstm.hidden_size**-0.5  # torch's default LSTM init range
            for _, p in sorted(self.lstm.named_parameters()):
                p.copy_(torch.empty_like(p).uniform_(-bound, bound, generator=g))
        return self

    def forward(self, words: list[str]) -> torch.Tensor:
        """``(len(words), 2 * hidden_size)``; an empty word gives zeros."""
        device = self.embedding.weight.device
        out = torch.zeros((len(words), 2 * self.lstm.hidden_size), device=device)
        order = sorted((i for i, w in enumerate(words) if w), key=lambda i: -len(words[i]))
        start = 0
        while start < len(order):
            longest = len(words[order[start]])
            stop = min(len(order), start + max(1, _PAD_BUDGET // longest))
            group = order[start:stop]
            lengths = torch.tensor([len(words[i]) for i in group])
            flat = [self.char_index.get(c, 0) for i in group for c in words[i]]
            ids = torch.zeros((len(group), longest), dtype=torch.long)
            ids[torch.arange(longest) < lengths[:, None]] = torch.tensor(flat, dtype=torch.long)
            packed = nn.utils.rnn.pack_padded_sequence(
                self.embedding(ids.to(device)), lengths, batch_first=True, enforce_sorted=True
            )
            _, (h, _) = self.lstm(packed)
            out[torch.as_tensor(group, device=device)] = torch.cat([h[0], h[1]], 1).to(out.dtype)
            start = stop
        return out


def _targets(y, docs: list[list[str]]) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(classes, codes, token_level)`` for document labels or per-token label lists."""
    first = next(iter(y), None) if not isinstance(y, str) else None
    token_level = isinstance(first, list | tuple | np.ndarray)
    if token_level:
        lists = _label_lists(y, len(docs))
        for i, (labels, doc) in enumerate(zip(lists, docs)):
            if len(labels) != len(doc):
                raise ValueError(
                    f"Document {i} has {len(doc)} tokens {doc[:8]} but {len(labels)} labels: give "
                    "one label per token, or one label per document."
                )
        flat = np.asarray([label for labels in lists for label in labels])
    else:
        flat = np.asarray(y)
        if flat.ndim != 1 or len(flat) != len(docs):
            raise ValueError(
                f"y must hold one label per document ({len(docs)}) or one list of labels per "
                f"document, got shape {flat.shape}."
            )
    if type_of_target(flat) in ("continuous", "continuous-multioutput"):
        raise ValueError("CharacterEmbeddings trains a classifier head: y must be class labels.")
    classes, codes = np.unique(flat, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"y has a single class {classes.tolist()}; training needs at least two.")
    return classes, codes, token_level


def trains_on_gpu(device) -> bool:
    """Whether ``device`` (a parameter, not resolved) would train on a GPU here."""
    device = str(device) if isinstance(device, torch.device) else device
    if not isinstance(device, str) or device == "cpu":
        return False
    if device == "mps":
        return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return torch.cuda.is_available()  # "auto", "cuda", "cuda:<index>"


class CharacterEmbeddings(BaseTokenEmbedder):
    """Character features of each token from a BiLSTM over its characters (Lample et al., 2016).

    A token's vector is the forward LSTM state after its last character and the backward state
    after its first, ``2 * hidden_size_char`` values; it depends only on the token itself.

    * ``fit(X)``: the network stays random, seeded by ``random_state``: the same seed gives the
      same features (a character's embedding depends only on the seed and the character).
    * ``fit(X, y)``: trains the network end to end, with Adam, on ``y``: one label per document
      (the token features are mean-pooled, then a linear layer classifies) or one list of
      labels per document, one per token (a linear layer classifies each token). A held-out
      ``validation_fraction`` of the documents stops training after ``n_iter_no_change``
      epochs without a lower validation loss, and the best epoch's weights are kept. Training
      runs on ``device`` (a GPU when present with ``"auto"``), in float32. On the CPU the same
      ``random_state`` gives the same weights; on a GPU it need not, bit for bit (cuDNN's LSTM
      training is not deterministic), and the estimator's tags say so (``non_deterministic``).

    The character vocabulary is the characters of the documents given to ``fit``; other
    characters share one "unknown" embedding.

    Parameters
    ----------
    char_embedding_dim : int, default=25
        Size of the character embeddings.
    hidden_size_char : int, default=25
        LSTM size per direction; tokens get twice this many features.
    random_state : int, RandomState or None, default=None
        Seeds the initial weights, the validation split and the shuffling.
    max_epochs : int, default=50
        Most passes over the training documents.
    learning_rate : float, default=0.01
        Adam's learning rate.
    validation_fraction : float, default=0.1
        Share of the documents held out for early stopping (at least one when in (0, 1); no
        early stopping with 0 or fewer than two documents).
    n_iter_no_change : int, default=5
        Epochs without improvement of the validation loss before training stops.
    tokenizer, device, batch_size, precision, show_progress_bar
        As for every skembed embedder; ``batch_size`` is also the number of documents per
        training step, and ``show_progress_bar`` also shows the epochs of ``fit`` with their
        losses.

    Attributes
    ----------
    weights_ : dict of str to torch.Tensor
        The network's ``state_dict`` (CPU tensors); it pickles (as numpy arrays, so that
        ``skops.io`` saves it too) with the estimator.
    characters_ : str
        The character vocabulary.
    classes_ : ndarray or None
        The labels trained on (None without ``y``).
    loss_curve_, validation_loss_curve_ : list of float
        Mean training and validation loss per epoch (empty without ``y``).
    best_epoch_ : int or None
        The epoch (from 0) whose weights were kept.
    n_features_out_ : int
        ``2 * hidden_size_char``.

    Examples
    --------
    >>> emb = CharacterEmbeddings(hidden_size_char=4, random_state=0, device="cpu")
    >>> emb.fit(["Paris is big", "a small town"]).transform(["Paris"])[0].shape
    (1, 8)
    >>> y = [["NAME", "O", "O"], ["O", "O", "O"]]
    >>> trained = CharacterEmbeddings(hidden_size_char=4, random_state=0, max_epochs=2)
    >>> trained.fit(["Paris is big", "a small town"], y).classes_.tolist()
    ['NAME', 'O']
    """

    _shares_states = True  # with sibling processes: one tensor per document
    _caches_model = False  # every fit makes new weights

    _feature_prefix = "char"

    def __init__(
        self,
        char_embedding_dim: int = 25,
        hidden_size_char: int = 25,
        random_state=None,
        max_epochs: int = 50,
        learning_rate: float = 0.01,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 5,
        *,
        tokenizer=None,
        device: str = "auto",
        batch_size: int = 32,
        precision: str = "float32",
        show_progress_bar: bool = False,
    ):
        store_params(self, locals())

    # -- parameters ---------------------------------------------------------------
    def _check_own_params(self) -> None:
        for name in ("char_embedding_dim", "hidden_size_char", "max_epochs", "n_iter_no_change"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        lr = self.learning_rate
        if not isinstance(lr, numbers.Real) or isinstance(lr, bool) or not lr > 0:
            raise ValueError(f"learning_rate must be a positive number, got {lr!r}.")
        vf = self.validation_fraction
        if not isinstance(vf, numbers.Real) or isinstance(vf, bool) or not 0 <= vf < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {vf!r}.")

    # -- persistence: the weights travel as numpy arrays --------------------------------
    def __getstate__(self):
        # Plain arrays, which skops.io saves and loads without trusting any torch type.
        state = dict(super().__getstate__())  # a copy: the object keeps its tensors
        if "weights_" in state:
            state["weights_"] = {k: v.numpy() for k, v in state["weights_"].items()}
        return state

    def __setstate__(self, state):
        if "weights_" in state:
            weights = {
                k: torch.from_numpy(np.array(v)) if isinstance(v, np.ndarray) else v
                for k, v in state["weights_"].items()
            }
            state = {**state, "weights_": weights}
        super().__setstate__(state)

    # -- the model: built from the fitted weights, never shared through MODELS ---------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Trained on a GPU (device "auto" or "cuda" where one is), the weights are not
        # reproducible bit for bit: cuDNN's LSTM backward pass is not deterministic.
        tags.non_deterministic = trains_on_gpu(self.device)
        return tags

    def _model_key(self) -> Hashable:
        return ("character", self._weights_digest)

    def _load_model(self, device: torch.device) -> CharBiLSTM:
        model = CharBiLSTM(self.characters_, self.char_embedding_dim, self.hidden_size_char)
        model.load_state_dict(self.weights_)
        return model.to(device).eval()

    def _n_features(self, model: CharBiLSTM) -> int:
        return 2 * model.lstm.hidden_size

    def _forward(self, model: CharBiLSTM, docs: list[list[str]]) -> list[torch.Tensor]:
        words = list(dict.fromkeys(t for doc in docs for t in doc))  # each word type once
        where = {w: i for i, w in enumerate(words)}
        with recurrent_autocast(self._device, self.precision):
            feats = model(words)
        device = feats.device
        return [
            feats[torch.as_tensor([where[t] for t in doc], dtype=torch.long, device=device)]
            for doc in docs
        ]

    def _combine(self, model: CharBiLSTM, states: list[torch.Tensor]) -> list[torch.Tensor]:
        return states

    # -- fit -----------------------------------------------------------------------
    def fit(self, X, y=None):
        """Learn the character vocabulary, then seed the network, or train it on ``y``.

        Parameters
        ----------
        X : documents
        y : array-like of shape (n_docs,), or list of per-token label lists, optional
            Document labels, or one label per token of each document. Without ``y`` the
            features are random (seeded by ``random_state``).

        Returns
        -------
        self
        """
        self._check_common_params()
        self._check_own_params()
        if X is None:
            raise ValueError(
                "CharacterEmbeddings learns its character vocabulary from the documents: "
                "call fit(X) or fit(X, y)."
            )
        docs = self._documents(X)
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        characters = "".join(sorted({c for doc in docs for t in doc for c in t}))
        model = CharBiLSTM(characters, self.char_embedding_dim, self.hidden_size_char).seed_(seed)
        self.classes_, self.loss_curve_, self.validation_loss_curve_ = None, [], []
        self.best_epoch_ = None
        if y is not None:
            self._train(model, docs, y, seed)
        self.characters_ = characters
        self.weights_ = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        digest = hashlib.sha1(characters.encode("utf-8", "surrogatepass"))
        for name, tensor in self.weights_.items():
            digest.update(name.encode() + tensor.numpy().tobytes())
        self._weights_digest = digest.hexdigest()
        return super().fit(None)

    def _train(self, model: CharBiLSTM, docs: list[list[str]], y, seed: int) -> None:
        """Train ``model`` with a linear head on ``y``; keep the best epoch's weights."""
        classes, codes, token_level = _targets(y, docs)
        device = resolve_device(self.device)
        rng = np.random.RandomState(seed)
        model.to(device).train()
        head = nn.Linear(2 * self.hidden_size_char, len(classes)).to(device)
        with torch.no_grad():
            g = torch.Generator().manual_seed(seed + 1)
            for p in head.parameters():
                p.copy_(torch.empty_like(p, device="cpu").uniform_(-0.1, 0.1, generator=g))
        # Token labels: codes of document i are codes[starts[i]:starts[i + 1]].
        starts = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
        codes = torch.as_tensor(codes, device=device)

        order = rng.permutation(len(docs))
        n_val = 0
        if self.validation_fraction > 0 and len(docs) >= 2:
            n_val = min(len(docs) - 1, max(1, round(self.validation_fraction * len(docs))))
        val, train = order[:n_val], order[n_val:]

        def loss_of(index) -> tuple[torch.Tensor, int]:
            batch = [docs[i] for i in index]
            tokens = [t for doc in batch for t in doc]
            words = list(dict.fromkeys(tokens))
            where = {w: k for k, w in enumerate(words)}
            at = torch.as_tensor([where[t] for t in tokens], dtype=torch.long, device=device)
            feats = model(words)[at]
            if token_level:
                target = torch.cat([codes[starts[i] : starts[i + 1]] for i in index])
            else:
                lengths = torch.as_tensor([len(d) for d in batch], device=device)
                doc_of = torch.repeat_interleave(torch.arange(len(batch), device=device), lengths)
                # Mean per document as a product with an averaging matrix: the same sums in the
                # same order on every run (index_add_ adds with atomics on CUDA, in any order).
                docs_of = torch.arange(len(batch), device=device)[:, None] == doc_of[None, :]
                feats = (docs_of.to(feats.dtype) / lengths.clamp(min=1)[:, None]) @ feats
                target = codes[torch.as_tensor(index, device=device)]
            if len(target) == 0:
                return feats.sum() * 0, 0
            return nn.functional.cross_entropy(head(feats), target, reduction="sum"), len(target)

        params = list(model.parameters()) + list(head.parameters())
        optimizer = torch.optim.Adam(params, lr=self.learning_rate)
        best, waited = np.inf, 0
        best_state = copy.deepcopy(model.state_dict())  # kept if the loss never becomes finite
        epochs = range(self.max_epochs)
        if self.show_progress_bar:
            from tqdm.auto import tqdm

            epochs = tqdm(epochs, desc=type(self).__name__, unit="epoch")
        for epoch in epochs:
            model.train()
            total, count = 0.0, 0
            shuffled = train[rng.permutation(len(train))]
            for s in range(0, len(train), self.batch_size):
                loss, n = loss_of(shuffled[s : s + self.batch_size])
                if n == 0:
                    continue
                optimizer.zero_grad()
                (loss / n).backward()
                nn.utils.clip_grad_norm_(params, 5.0)
                optimizer.step()
                total, count = total + float(loss.detach()), count + n
            self.loss_curve_.append(total / max(count, 1))
            score = self.loss_curve_[-1]
            if n_val:
                model.eval()
                with torch.no_grad():
                    parts = [
                        loss_of(val[s : s + self.batch_size])
                        for s in range(0, n_val, self.batch_size)
                    ]
                n_targets = sum(p[1] for p in parts)
                if n_targets:  # held-out documents without tokens: use the training loss
                    score = sum(float(p[0]) for p in parts) / n_targets
                self.validation_loss_curve_.append(score)
            if self.show_progress_bar:
                epochs.set_postfix(loss=f"{self.loss_curve_[-1]:.4f}", val=f"{score:.4f}")
            if score < best:
                best, waited, self.best_epoch_ = score, 0, epoch
                best_state = copy.deepcopy(model.state_dict())
            else:
                waited += 1
                if waited >= self.n_iter_no_change:
                    break
        if self.best_epoch_ is None:
            warnings.warn(
                "CharacterEmbeddings: the loss was never finite (lower learning_rate?); the "
                "untrained weights are kept.",
                RuntimeWarning,
                stacklevel=3,
            )
        model.load_state_dict(best_state)
        model.eval()
        self.classes_ = classes
