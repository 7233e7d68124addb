"""Classic static word vectors: file formats, the binary cache and :class:`WordEmbeddings`."""

from .embeddings import WordEmbeddings, WordVectors
from .formats import detect_format, open_vectors
from .ids import flair_file_name, resolve_word_file
from .store import cache_root, ensure_cached, load_cached

__all__ = [
    "WordEmbeddings",
    "WordVectors",
    "cache_root",
    "detect_format",
    "ensure_cached",
    "flair_file_name",
    "load_cached",
    "open_vectors",
    "resolve_word_file",
]
