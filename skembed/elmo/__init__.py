"""ELMo in native torch, reading AllenNLP's published ``options.json`` + ``weights.hdf5``."""

from .chars import batch_char_ids, token_char_ids
from .embeddings import ELMoEmbeddings
from .files import ELMO_MODELS, resolve_elmo
from .model import ElmoModel
from .options import ElmoOptions
from .weights import load_elmo, read_weights, write_random_elmo

__all__ = [
    "ELMO_MODELS",
    "ELMoEmbeddings",
    "ElmoModel",
    "ElmoOptions",
    "batch_char_ids",
    "load_elmo",
    "read_weights",
    "resolve_elmo",
    "token_char_ids",
    "write_random_elmo",
]
