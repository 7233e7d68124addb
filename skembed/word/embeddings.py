"""WordEmbeddings: classic static word vectors (GloVe, word2vec, fastText, Flair's files)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from .._batching import Progress, call_progress
from ..base import BaseTokenEmbedder, store_params
from ..ragged import RaggedEmbeddings
from ..resolve import file_signature
from .formats import companions
from .ids import resolve_word_file
from .store import ensure_cached, load_cached

_DIGIT = re.compile(r"\d")
_MEMO_LIMIT = 200_000


class WordVectors:
    """A vocabulary and its (memory-mapped) vectors, looked up with Flair's fallbacks.

    A word is looked up as is, then lower-cased, then lower-cased with every digit as ``#``,
    then with every digit as ``0``; a word found in none of these forms gets a zero vector.
    When a word occurs twice in the file, its first vector is used (as gensim does).

    Parameters
    ----------
    words : list of str
        The vocabulary, in row order.
    vectors : ndarray of shape (len(words), dim)
        Usually a read-only memory map.

    Examples
    --------
    >>> import numpy as np
    >>> wv = WordVectors(["the", "##", "00:00"], np.eye(3, dtype=np.float32))
    >>> [wv.index_of(w) for w in ["The", "42", "12:30", "unknown"]]
    [0, 1, 2, -1]
    """

    def __init__(self, words: list[str], vectors: np.ndarray, path: Path | None = None):
        self.words = words
        self.vectors = vectors
        self.path = path
        # reversed: the first occurrence of a duplicated word keeps its row
        self.index = dict(zip(reversed(words), range(len(words) - 1, -1, -1)))
        self._memo: dict[str, int] = {}

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def index_of(self, word: str) -> int:
        """Row of ``word`` after the fallbacks; -1 when it is out of the vocabulary."""
        row = self.index.get(word)
        if row is not None:
            return row
        row = self._memo.get(word)
        if row is None:
            lower = word.lower()
            for form in (lower, _DIGIT.sub("#", lower), _DIGIT.sub("0", lower)):
                row = self.index.get(form)
                if row is not None:
                    break
            else:
                row = -1
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[word] = row
        return row

    def lookup(self, tokens: list[str]) -> np.ndarray:
        """A float32 ``(len(tokens), dim)`` array: each token's vector, zeros when unknown."""
        rows = np.fromiter((self.index_of(t) for t in tokens), dtype=np.int64, count=len(tokens))
        known = rows >= 0
        out = np.zeros((len(tokens), self.dim), dtype=np.float32)
        if known.any():
            # Sorted, unique row reads touch each page of the memory map once.
            unique, inverse = np.unique(rows[known], return_inverse=True)
            out[known] = np.asarray(self.vectors[unique], dtype=np.float32)[inverse]
        return out


class WordEmbeddings(BaseTokenEmbedder):
    """Static word vectors: one fixed vector per word, whatever its context.

    Reads word2vec text and binary files, GloVe text files (no header), fastText ``.vec``
    files and gensim ``KeyedVectors`` files (with the ``gensim`` extra). A file is converted
    once into a binary cache in ``$SKEMBED_HOME/word-vectors`` (a memory-mapped array and its
    vocabulary), so later loads take a fraction of a second; the conversion is redone when
    the source file changes.

    Parameters
    ----------
    embeddings : str or path, default="glove"
        A word-vector file, or one of Flair's ids: ``"glove"``, ``"turian"``, ``"extvec"``,
        ``"crawl"``, ``"news"``, ``"twitter"``, ``"pubmed"``, a two-letter language code
        (``"de"``, ``"de-wiki"``) or ``"de-crawl"``. Ids are looked up in the skembed cache and
        in Flair's cache (``~/.flair/embeddings``), then downloaded when allowed.
    tokenizer : None, "whitespace" or callable, default=None
        How string documents are split into words (whitespace by default).
    device : str, default="auto"
        Where the output vectors are put. The table itself stays memory-mapped on the CPU.
    batch_size : int, default=32
        Documents per batch in :meth:`iter_batches`.
    precision : {"float32", "float16", "bfloat16"}, default="float32"
        Accepted for a uniform interface; a lookup is exact and outputs are float32.
    show_progress_bar : bool, default=False
        One tqdm bar per call (``transform``, or a pooler's), over its documents.

    Attributes
    ----------
    n_features_out_ : int
        Size of the vectors.
    path_ : str
        The source file.
    device_ : str
        The device of the output vectors.

    Notes
    -----
    Out-of-vocabulary words are looked up as Flair does: as is, lower-cased, lower-cased with
    digits as ``#``, lower-cased with digits as ``0``; then they get a zero vector.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.txt")
    >>> with open(path, "w") as f:
    ...     _ = f.write("cat 1 0\\ndog 0 1\\n")
    >>> emb = WordEmbeddings(path, device="cpu").fit()
    >>> emb.transform(["Cat dog bird"])[0]
    array([[1., 0.],
           [0., 1.],
           [0., 0.]], dtype=float32)
    """

    _feature_prefix = "word"
    _runs_network = False  # a lookup: precision is validated, never probed on the CPU

    def __init__(
        self,
        embeddings="glove",
        tokenizer=None,
        device="auto",
        batch_size=32,
        precision="float32",
        show_progress_bar=False,
    ):
        store_params(self, locals())

    # -- model -----------------------------------------------------------------
    def _model_key(self):
        path = resolve_word_file(self.embeddings).resolve()
        # The source's size and time are part of the key: an edited file is loaded afresh.
        return ("word", file_signature(path, *companions(path)))

    def _load_model(self, device):
        path = Path(self._model_key()[1][0][0])
        words, vectors, _ = load_cached(ensure_cached(path))
        return WordVectors(words, vectors, path)

    def _n_features(self, model) -> int:
        return model.dim

    def _check_params(self, model) -> None:
        self.path_ = str(model.path)

    # -- lookups (no forward pass: nothing to cache) ------------------------------
    def embed_documents(
        self,
        docs: list[list[str]],
        n_docs: int | None = None,
        progress: Progress | None = None,
    ) -> RaggedEmbeddings:
        """Look up every token of already validated documents in one pass (``progress``: the
        call's bar, see :meth:`skembed.BaseTokenEmbedder.embed_documents`)."""
        check_is_fitted(self, "n_features_out_")
        model = self._get_model()
        with call_progress(progress, self, len(docs)) as progress:
            flat = [t for doc in docs for t in doc]
            data = torch.from_numpy(model.lookup(flat))  # on the host, as every token output
            progress.update(len(docs))
        offsets = np.zeros(len(docs) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(d) for d in docs])
        return RaggedEmbeddings(data, offsets, docs, self.get_feature_names_out())

    def iter_batches(
        self,
        docs: list[list[str]],
        n_docs: int | None = None,
        progress: Progress | None = None,
    ) -> Iterator[tuple[list[int], list[torch.Tensor]]]:
        """Yield ``(document indices, token tensors)`` for ``batch_size`` documents at a time
        (lookups keep no states: ``n_docs`` changes nothing)."""
        check_is_fitted(self, "n_features_out_")
        with call_progress(progress, self, len(docs)) as progress:
            for start in range(0, len(docs), self.batch_size):
                index = list(range(start, min(start + self.batch_size, len(docs))))
                part = [docs[i] for i in index]
                yield index, self.embed_documents(part, progress=progress).split()
