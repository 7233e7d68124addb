"""Transformer-XL embeddings, run natively (transformers 5 removed the model)."""

from .embeddings import LoadedTransfoXL, TransformerXLEmbeddings, load_transfo_xl
from .vocab import UnsafeVocabularyError

__all__ = ["LoadedTransfoXL", "TransformerXLEmbeddings", "UnsafeVocabularyError", "load_transfo_xl"]
