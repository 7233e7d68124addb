"""Flair's contextual string embeddings: character language models, their files, training.

Public names: :class:`FlairEmbeddings` (the sklearn transformer), :class:`CharLM` (the model,
reads and writes Flair's ``.pt`` files), :func:`train_language_model`, :data:`PRETRAINED`
(Flair's published ids and URLs).
"""

from .embeddings import FlairEmbeddings, token_positions
from .ids import PRETRAINED, canonical_id, resolve_model_file
from .lm import CharLM
from .train import TrainingResult, train_language_model
from .unpickle import CharDictionary, UnsafeModelFileError

__all__ = [
    "PRETRAINED",
    "CharDictionary",
    "CharLM",
    "FlairEmbeddings",
    "TrainingResult",
    "UnsafeModelFileError",
    "canonical_id",
    "resolve_model_file",
    "token_positions",
    "train_language_model",
]
