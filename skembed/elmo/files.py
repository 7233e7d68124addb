"""ELMo model ids, directories and ``(options, weights)`` pairs to the two local files."""

from __future__ import annotations

import os
from pathlib import Path

from ..resolve import (
    ModelNotFoundError,
    did_you_mean,
    download,
    not_found,
    offline,
    skembed_home,
)

_BASE = "https://allennlp.s3.amazonaws.com/models/elmo/"


def _published(folder: str, stem: str, weights: str = "weights.hdf5") -> tuple[str, str]:
    return (f"{_BASE}{folder}/{stem}_options.json", f"{_BASE}{folder}/{stem}_{weights}")


#: The published AllenNLP models: id -> (options URL, weights URL).
ELMO_MODELS: dict[str, tuple[str, str]] = {
    "small": _published("2x1024_128_2048cnn_1xhighway", "elmo_2x1024_128_2048cnn_1xhighway"),
    "medium": _published("2x2048_256_2048cnn_1xhighway", "elmo_2x2048_256_2048cnn_1xhighway"),
    "original": _published("2x4096_512_2048cnn_2xhighway", "elmo_2x4096_512_2048cnn_2xhighway"),
    "original-5.5B": _published(
        "2x4096_512_2048cnn_2xhighway_5.5B", "elmo_2x4096_512_2048cnn_2xhighway_5.5B"
    ),
    "pt": _published("contributed/pt", "elmo_pt"),
    "pubmed": _published(
        "contributed/pubmed",
        "elmo_2x4096_512_2048cnn_2xhighway",
        weights="weights_PubMed_only.hdf5",
    ),
}
_IDS = {name.lower(): name for name in ELMO_MODELS}


def _from_directory(folder: Path) -> tuple[Path, Path]:
    options = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == ".json")
    weights = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".hdf5", ".h5"))
    if len(options) != 1 or len(weights) != 1:
        raise ValueError(
            f"ELMo directory {folder} must hold exactly one options file (*.json) and one "
            f"weights file (*.hdf5); found options {[p.name for p in options]} and weights "
            f"{[p.name for p in weights]}. Pass model=(options_path, weights_path) instead."
        )
    return options[0], weights[0]


def _from_id(name: str) -> tuple[Path, Path]:
    urls = ELMO_MODELS[name]
    paths = [skembed_home() / url.rsplit("/", 1)[1] for url in urls]
    missing = [(url, path) for url, path in zip(urls, paths) if not path.is_file()]
    if missing and not offline():
        try:
            for url, path in missing:
                download(url, path)
        except Exception as exc:  # network errors become the not-found error below
            raise not_found("ELMo model", name, paths, urls, failed=exc) from None
    elif missing:
        raise not_found("ELMo model", name, paths, urls)
    return paths[0], paths[1]


def resolve_elmo(model) -> tuple[Path, Path]:
    """The ``(options.json, weights.hdf5)`` paths of an ELMo ``model`` parameter.

    Parameters
    ----------
    model : str, path or (str, str) pair
        A published id (one of :data:`ELMO_MODELS`, case-insensitive: found in the skembed cache,
        downloaded there only when downloads are allowed), a directory holding one ``*.json``
        options file and one ``*.hdf5`` weights file, or an ``(options_path, weights_path)`` pair.

    Examples
    --------
    >>> import tempfile
    >>> from skembed.elmo import ElmoOptions, write_random_elmo
    >>> folder = tempfile.mkdtemp()
    >>> opts = ElmoOptions.from_dict({
    ...     "char_cnn": {"embedding": {"dim": 4}, "filters": [[1, 4]], "activation": "relu"},
    ...     "lstm": {"dim": 8, "projection_dim": 2, "n_layers": 1},
    ... })
    >>> _ = write_random_elmo(folder, opts)
    >>> [p.name for p in resolve_elmo(folder)]
    ['options.json', 'weights.hdf5']
    """
    if isinstance(model, tuple | list):
        if len(model) != 2 or not all(isinstance(p, str | os.PathLike) for p in model):
            raise TypeError(
                f"model={model!r}: a pair must be (options_path, weights_path) of two paths."
            )
        paths = tuple(Path(p).expanduser() for p in model)
        for kind, path in zip(("options", "weights"), paths):
            if not path.is_file():
                raise FileNotFoundError(f"ELMo {kind} file {path} does not exist.")
        return paths
    if not isinstance(model, str | os.PathLike):
        raise TypeError(
            f"model must be an id {list(ELMO_MODELS)}, a directory or an (options_path, "
            f"weights_path) pair; got {type(model).__name__}."
        )
    path = Path(model).expanduser()
    if path.is_dir():
        return _from_directory(path)
    if isinstance(model, str) and model.lower() in _IDS:
        return _from_id(_IDS[model.lower()])
    if path.is_file():
        raise ValueError(
            f"model={str(model)!r} is a single file; ELMo needs two: pass "
            "(options_path, weights_path), or the directory holding both."
        )
    suggestion = did_you_mean(str(model), ELMO_MODELS)
    raise ModelNotFoundError(
        f"Could not find ELMo model {str(model)!r}: it is not one of the ids {list(ELMO_MODELS)}, "
        f"and {path} is not a directory. Looked in:\n  - {path.resolve()}\n"
        + (f"{suggestion}\n" if suggestion else "")
        + "Pass an id, a directory with one options (*.json) and one weights (*.hdf5) file, "
        "or a pair of paths."
    )
