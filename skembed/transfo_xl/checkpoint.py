"""Hugging Face Transformer-XL checkpoints: model names to folders, ``config.json``, weights.

A checkpoint is a folder written by ``save_pretrained`` of transformers 4.x (or the published
``transfo-xl-wt103``): ``config.json`` with ``model_type`` ``transfo-xl``, the weights in
``model.safetensors`` or ``pytorch_model.bin`` (possibly sharded, with an index file), and the
vocabulary in ``vocab.pkl`` or ``vocab.bin`` (see :mod:`.vocab`). Weights are read with
safetensors or ``torch.load(weights_only=True)``: loading never runs code from the files.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from ..resolve import not_found, offline, skembed_home

# The published model under its old short name, and where the Hub keeps it now.
HUB_NAMES = {"transfo-xl-wt103": ["transfo-xl-wt103", "transfo-xl/transfo-xl-wt103"]}
# Files a Transformer-XL folder needs (fetched from the Hub; TensorFlow weights are skipped).
FILES = [
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*.safetensors",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "pytorch_model-*.bin",
    "vocab.pkl",
    "vocab.bin",
    "added_tokens.json",
]
# What a TransfoXLLMHeadModel checkpoint prefixes the encoder's weights with.
_PREFIX = "transformer."


@dataclass(frozen=True)
class TransfoXLConfig:
    """The fields of a Transformer-XL ``config.json`` that the encoder needs.

    Defaults are those of ``transfo-xl-wt103`` (and of transformers' ``TransfoXLConfig``).
    ``tgt_len`` is the segment length: longer documents are run segment by segment, carrying
    the memory of the previous ``mem_len`` positions (as Transformer-XL was trained).
    """

    vocab_size: int = 267735
    cutoffs: tuple[int, ...] = (20000, 40000, 200000)
    d_model: int = 1024
    d_embed: int = 1024
    n_head: int = 16
    d_head: int = 64
    d_inner: int = 4096
    div_val: int = 4
    pre_lnorm: bool = False
    n_layer: int = 18
    mem_len: int = 1600
    clamp_len: int = 1000
    same_length: bool = True
    untie_r: bool = True
    attn_type: int = 0
    layer_norm_epsilon: float = 1e-5
    tgt_len: int = 128

    @classmethod
    def from_file(cls, path: str | Path) -> TransfoXLConfig:
        """Read ``config.json``; check that it describes a Transformer-XL model skembed can run."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not valid JSON ({exc}); expected a config.json.") from exc
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a JSON object (a model configuration).")
        kind = raw.get("model_type", "transfo-xl")
        if kind != "transfo-xl":
            raise ValueError(
                f"{path} describes a {kind!r} model, not a Transformer-XL ('transfo-xl') one; "
                "use TransformerEmbeddings for other transformers."
            )
        raw = dict(raw)
        if "vocab_size" not in raw and "n_token" in raw:  # older configs
            raw["vocab_size"] = raw["n_token"]
        names = {f.name for f in fields(cls)}
        kwargs = {k: raw[k] for k in names if raw.get(k) is not None}
        if "cutoffs" in kwargs:
            kwargs["cutoffs"] = tuple(int(c) for c in kwargs["cutoffs"])
        config = cls(**kwargs)
        config.check(path)
        return config

    def check(self, source) -> None:
        if self.attn_type != 0:
            raise ValueError(
                f"{source}: attn_type={self.attn_type} is not supported; published Transformer-XL "
                "models (and transformers 4.x) use the relative attention, attn_type=0."
            )
        if self.same_length and self.mem_len <= 0:
            raise ValueError(
                f"{source}: same_length=True with mem_len={self.mem_len} masks every position "
                "(transformers 4.x then attends uniformly, future words included); set "
                "same_length to false or mem_len > 0 in config.json."
            )
        if self.tgt_len <= 0:
            raise ValueError(f"{source}: tgt_len must be positive, got {self.tgt_len}.")


def resolve_folder(name) -> Path:
    """A local Transformer-XL folder for a name or path.

    Order: an existing path; ``$SKEMBED_HOME/transformers/<name>``; the Hugging Face cache
    (``transfo-xl-wt103`` is also looked up as ``transfo-xl/transfo-xl-wt103``); a download of
    the needed files only (no TensorFlow weights) when downloads are allowed.
    """
    if not isinstance(name, str | os.PathLike):
        raise TypeError(
            f"pretrained_model_name_or_path must be a name or a path, got {type(name).__name__}."
        )
    name = os.fspath(name)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"{path} is not a Transformer-XL model folder: it has no config.json. Expected a "
                "folder written by save_pretrained (config.json, weights, vocab.pkl)."
            )
        return path
    repos = HUB_NAMES.get(name, [name])
    looked = [path]
    for repo in repos:
        local = skembed_home() / "transformers" / repo.replace("/", "--")
        looked.append(local)
        if (local / "config.json").is_file():
            return local
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError:  # pragma: no cover - comes with transformers and sentence-transformers
        snapshot_download = None
    if snapshot_download is not None:
        for repo in repos:
            looked.append(Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}")
            try:
                found = Path(snapshot_download(repo, local_files_only=True))
            except Exception:
                continue
            if (found / "config.json").is_file():
                return found
        if not offline():
            from .._hf.resolve import hub_snapshot

            try:
                return Path(hub_snapshot(repos[-1], allow_patterns=FILES))
            except Exception as exc:  # no network, unknown name: one clean error
                raise _not_found(name, looked, repos[-1], failed=exc) from None
    raise _not_found(name, looked, repos[-1])


def _not_found(name, looked, repo, failed=None):
    from .._hf.resolve import local_model_names

    local = skembed_home() / "transformers" / repo.replace("/", "--")
    fix = (
        f"Fetch it on a machine with internet: `hf download {repo} config.json "
        f"pytorch_model.bin vocab.pkl --local-dir {local}` (name model.safetensors instead "
        "if the repository has it; then copy that folder here), or pass the path of a folder "
        "written by save_pretrained of transformers 4.x."
    )
    return not_found(
        "Transformer-XL model",
        name,
        looked,
        [f"https://huggingface.co/{repo}"],
        fix,
        failed=failed,
        candidates=[*HUB_NAMES, *local_model_names()],
    )


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused a global: never run it
        raise ValueError(
            f"{path}: refused by torch.load(weights_only=True), which allows tensors and plain "
            f"data only ({exc}). Only open model files from sources you trust."
        ) from exc
    except Exception as exc:  # truncated or not a weights file
        raise ValueError(
            f"Could not read the weights in {path} ({type(exc).__name__}: {exc}). Expected a "
            "complete model.safetensors or pytorch_model.bin; the file may be truncated "
            "(download it again)."
        ) from exc


def load_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """The encoder's weights of a checkpoint folder, without the ``transformer.`` prefix.

    A ``TransfoXLLMHeadModel`` checkpoint (like the published one) keeps the encoder under
    ``transformer.`` next to the output layer (``crit.``), which embeddings do not use.
    """
    folder = Path(folder)
    for single, index in (
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        if (folder / single).is_file():
            state = _load_file(folder / single)
            break
        if (folder / index).is_file():
            shards = json.loads((folder / index).read_text(encoding="utf-8"))["weight_map"]
            state = {}
            for shard in sorted(set(shards.values())):
                state.update(_load_file(folder / shard))
            break
    else:
        raise FileNotFoundError(
            f"{folder} has no Transformer-XL weights: expected model.safetensors or "
            "pytorch_model.bin (or their sharded index files)."
        )
    if any(k.startswith(_PREFIX) for k in state):
        state = {k[len(_PREFIX) :]: v for k, v in state.items() if k.startswith(_PREFIX)}
    return state
