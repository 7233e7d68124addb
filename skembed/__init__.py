"""skembed: contextual token and document embeddings as scikit-learn transformers."""

from ._input import check_documents, whitespace_tokenizer
from .base import BaseTokenEmbedder
from .cache import cache_info, clear_cache, set_cache
from .character import CharacterEmbeddings
from .document import DocumentPoolEmbeddings, TransformerDocumentEmbeddings
from .elmo import ELMoEmbeddings
from .flair import FlairEmbeddings
from .flair.pooled import PooledFlairEmbeddings
from .ragged import RaggedEmbeddings
from .stack import StackedEmbeddings
from .tagging import split_tokens, token_xy
from .transfo_xl import TransformerXLEmbeddings
from .transformer import (
    BertEmbeddings,
    OpenAIGPT2Embeddings,
    OpenAIGPTEmbeddings,
    RoBERTaEmbeddings,
    TransformerEmbeddings,
    XLMEmbeddings,
    XLNetEmbeddings,
)
from .word import WordEmbeddings

__version__ = "0.1.0"

__all__ = [
    "BaseTokenEmbedder",
    "BertEmbeddings",
    "CharacterEmbeddings",
    "DocumentPoolEmbeddings",
    "ELMoEmbeddings",
    "FlairEmbeddings",
    "PooledFlairEmbeddings",
    "OpenAIGPT2Embeddings",
    "OpenAIGPTEmbeddings",
    "RoBERTaEmbeddings",
    "TransformerDocumentEmbeddings",
    "TransformerEmbeddings",
    "TransformerXLEmbeddings",
    "XLMEmbeddings",
    "XLNetEmbeddings",
    "RaggedEmbeddings",
    "cache_info",
    "check_documents",
    "clear_cache",
    "set_cache",
    "whitespace_tokenizer",
    "StackedEmbeddings",
    "WordEmbeddings",
    "split_tokens",
    "token_xy",
]
