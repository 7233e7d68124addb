"""skembed: contextual token and document embeddings as scikit-learn transformers.

The public names are imported on first use (PEP 562), so ``import skembed`` and the command
line's ``--help`` and ``--version`` do not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "check_documents": "._input",
    "set_default_device": "._device",
    "whitespace_tokenizer": "._input",
    "BaseTokenEmbedder": ".base",
    "cache_info": ".cache",
    "clear_cache": ".cache",
    "set_cache": ".cache",
    "CharacterEmbeddings": ".character",
    "DocumentPoolEmbeddings": ".document",
    "TransformerDocumentEmbeddings": ".document",
    "ELMoEmbeddings": ".elmo",
    "FlairEmbeddings": ".flair",
    "PooledFlairEmbeddings": ".flair.pooled",
    "RaggedEmbeddings": ".ragged",
    "StackedEmbeddings": ".stack",
    "split_tokens": ".tagging",
    "token_xy": ".tagging",
    "TransformerXLEmbeddings": ".transfo_xl",
    "BertEmbeddings": ".transformer",
    "OpenAIGPT2Embeddings": ".transformer",
    "OpenAIGPTEmbeddings": ".transformer",
    "RoBERTaEmbeddings": ".transformer",
    "TransformerEmbeddings": ".transformer",
    "XLMEmbeddings": ".transformer",
    "XLNetEmbeddings": ".transformer",
    "WordEmbeddings": ".word",
}

__all__ = [
    "BaseTokenEmbedder",
    "BertEmbeddings",
    "CharacterEmbeddings",
    "DocumentPoolEmbeddings",
    "ELMoEmbeddings",
    "FlairEmbeddings",
    "OpenAIGPT2Embeddings",
    "OpenAIGPTEmbeddings",
    "PooledFlairEmbeddings",
    "RaggedEmbeddings",
    "RoBERTaEmbeddings",
    "StackedEmbeddings",
    "TransformerDocumentEmbeddings",
    "TransformerEmbeddings",
    "TransformerXLEmbeddings",
    "WordEmbeddings",
    "XLMEmbeddings",
    "XLNetEmbeddings",
    "cache_info",
    "check_documents",
    "clear_cache",
    "set_cache",
    "set_default_device",
    "split_tokens",
    "token_xy",
    "whitespace_tokenizer",
]


def __getattr__(name: str):
    """Import a public name (or a sub-module, e.g. ``skembed.flair``) on first use."""
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module, __name__), name)
    else:
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from ._device import set_default_device
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
