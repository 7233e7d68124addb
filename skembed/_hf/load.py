"""Loading a Hugging Face model folder: configuration, tokenizer (refused when its files are
missing or need custom code), network (the encoder of encoder-decoder models), and what
building inputs needs (special tokens, window length, padding side) as an :class:`HFModel`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .words import WordCache, word_encoder


@dataclass
class HFModel:
    """A loaded model with what is needed to build inputs for it."""

    model: torch.nn.Module
    tokenizer: object
    n_layers: int  # hidden states returned, the embedding layer included
    hidden_size: int
    window: int  # content sub-tokens per window
    prefix: list[int]
    suffix: list[int]
    prefix_types: list[int]
    suffix_types: list[int]
    content_type: int
    cls_index: int | None  # position of the CLS token in prefix + suffix, if any
    pad_id: int
    pad_left: bool
    unk_ids: list[int]
    use_types: bool
    encode: Callable[[list[str]], list[list[int]]] | None = None  # words -> their sub-tokens
    word_ids: WordCache = field(default_factory=WordCache)


# Passed to every from_pretrained: a folder's auto_map never makes transformers import Python
# files from it, nor ask on stdin whether it may (which it does when the argument is unset).
NO_REMOTE_CODE = {"trust_remote_code": False}


def _custom_code_error(path: str, exc: BaseException) -> ValueError | None:
    """The error for a folder that only loads with its own Python code, when ``exc`` (raised by
    transformers under ``trust_remote_code=False``) says that; else None."""
    if "trust_remote_code" not in str(exc):
        return None
    return ValueError(
        f"Refusing the model folder {path}: it needs custom code (the Python files that "
        "'auto_map' in its configuration names, for a model or tokenizer transformers does not "
        "implement), which skembed never runs: model files are data. Use a model whose type "
        "transformers implements, saved with save_pretrained."
    )


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, **NO_REMOTE_CODE)
    backend = getattr(tok, "backend_tokenizer", None)
    # Byte-level BPE needs add_prefix_space for pre-split words, else words lose their marker.
    if backend is not None and "ByteLevel" in repr(backend.pre_tokenizer):
        if not getattr(tok, "add_prefix_space", False):
            tok = AutoTokenizer.from_pretrained(path, add_prefix_space=True, **NO_REMOTE_CODE)
    return tok


# A tokenizer that sets no length reports a huge sentinel (int(1e30)) as its model_max_length:
# lengths from this one up are read as "not set".
_UNSET_MAX_LENGTH = 1_000_000
# Sub-tokens per input when neither the tokenizer nor the configuration gives a limit.
_DEFAULT_MAX_LENGTH = 512
# The fewest content sub-tokens per window: overlapping windows advance half a window.
_MIN_WINDOW = 2

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")


@contextlib.contextmanager
def _reading(path: str, what: str, expected: str):
    """Errors of reading ``what`` from the folder ``path``: the refusal of a folder that needs
    its own code, else a ValueError naming the folder and what it should hold."""
    try:
        yield
    except Exception as exc:
        refused = _custom_code_error(path, exc)
        if refused is not None:
            raise refused from None
        raise ValueError(f"Could not {what} in {path}: {exc}. {expected}") from exc


def _checked_tokenizer(path: str):
    """The folder's tokenizer; an error naming the folder when its files are missing or broken.

    transformers builds an empty tokenizer (special tokens only) for a folder without tokenizer
    files, which would embed every word as [UNK]: that is refused here.
    """
    with _reading(
        path,
        "load the tokenizer",
        "Expected the tokenizer files written by the tokenizer's save_pretrained "
        "(tokenizer.json, or vocab files).",
    ):
        tok = _load_tokenizer(path)
    names = {"tokenizer.json", *getattr(type(tok), "vocab_files_names", {}).values()}
    if not any((Path(path) / name).is_file() for name in names):
        raise ValueError(
            f"{path} has no tokenizer files: expected one of {sorted(names)}. Save the "
            "tokenizer into the model folder too (tokenizer.save_pretrained(folder))."
        )
    return tok


def _load_network(path: str, config):
    import transformers

    # Encoder-decoder models (T5...): only the encoder gives token states.
    for arch in getattr(config, "architectures", None) or ():
        if arch.endswith("EncoderModel") and hasattr(transformers, arch):
            return getattr(transformers, arch).from_pretrained(path, **NO_REMOTE_CODE)
    model = transformers.AutoModel.from_pretrained(path, **NO_REMOTE_CODE)
    if getattr(config, "is_encoder_decoder", False):
        return model.get_encoder()
    return model


def _template(tok) -> tuple[list[int], list[int], list[int], list[int], int]:
    """Special tokens around a sequence, found by encoding a probe with and without them."""
    content = tok("a", add_special_tokens=False)["input_ids"]
    full = tok("a")
    ids = full["input_ids"]
    types = full.get("token_type_ids") or [0] * len(ids)
    n = len(content)
    for p in range(len(ids) - n + 1):
        if ids[p : p + n] == content:
            return ids[:p], ids[p + n :], types[:p], types[p + n :], types[p] if n else 0
    return [], [], [], [], 0


def load_hf(path: str, device: torch.device) -> HFModel:
    """Load a model folder onto ``device`` in float32, in evaluation mode."""
    from transformers import AutoConfig

    with _reading(
        path,
        "read the model configuration",
        "Expected a folder with a config.json written by save_pretrained.",
    ):
        config = AutoConfig.from_pretrained(path, **NO_REMOTE_CODE)
    from transformers.utils import logging as hf_logging

    tok = _checked_tokenizer(path)
    progress = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar on every fit
    try:
        model = _load_network(path, config)
    except Exception as exc:
        refused = _custom_code_error(path, exc)
        if refused is not None:
            raise refused from None
        found = sorted(p.name for p in Path(path).iterdir() if p.suffix in _WEIGHT_SUFFIXES)
        if "weights only load failed" in str(exc).lower():  # torch.load(weights_only=True)
            raise ValueError(
                f"Refusing the model weights in {path} (found {found}): they refer to code, which "
                f"loading never runs ({exc}). Use model.safetensors files, and only model files "
                "from sources you trust."
            ) from exc
        raise ValueError(
            f"Could not load the model weights in {path} (found {found or 'no weight files'}): "
            f"{exc}. Expected complete model.safetensors or pytorch_model.bin file(s) written by "
            "save_pretrained; a truncated download gives this error, fetch the model again."
        ) from exc
    finally:
        if progress:
            hf_logging.enable_progress_bar()
    model.eval().to(device)
    for attr in ("mem_len", "use_cache"):
        if hasattr(model.config, attr):
            setattr(model.config, attr, None if attr == "mem_len" else False)
    prefix, suffix, ptypes, stypes, ctype = _template(tok)
    limit = tok.model_max_length if tok.model_max_length < _UNSET_MAX_LENGTH else None
    positions = getattr(config, "max_position_embeddings", None) or getattr(
        config, "n_positions", None
    )
    if positions and positions > 0:  # XLNet reports -1: no absolute positions
        if config.model_type in ("roberta", "xlm-roberta", "camembert", "longformer"):
            positions -= (config.pad_token_id or 0) + 1  # positions start after the pad id
        limit = min(limit, positions) if limit else positions
    limit = limit or _DEFAULT_MAX_LENGTH
    window = max(limit - len(prefix) - len(suffix), _MIN_WINDOW)
    specials = prefix + suffix
    cls_id = tok.cls_token_id
    cls_index = specials.index(cls_id) if cls_id is not None and cls_id in specials else None
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    unk = tok.unk_token_id if tok.unk_token_id is not None else pad_id
    n_layers = (
        getattr(config, "num_hidden_layers", None)
        or getattr(config, "n_layer", None)
        or getattr(config, "num_layers", None)
    )
    hidden = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
    if hidden is None:
        hidden = config.n_embd
    return HFModel(
        model=model,
        tokenizer=tok,
        n_layers=int(n_layers) + 1,
        hidden_size=int(hidden),
        window=window,
        prefix=prefix,
        suffix=suffix,
        prefix_types=ptypes,
        suffix_types=stypes,
        content_type=ctype,
        cls_index=cls_index,
        pad_id=pad_id,
        pad_left=tok.padding_side == "left",
        unk_ids=[unk],
        use_types="token_type_ids" in tok.model_input_names,
        encode=word_encoder(tok),
    )
