"""Flair's published character-LM ids, their download URLs and the file names caches use.

The table is data (from Flair 0.15.1's list of pretrained models). Ids match case-insensitively,
and language names are accepted as Flair accepts them (``german-forward`` is ``de-forward``).
"""

from __future__ import annotations

from collections import Counter
from os import PathLike
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from ..resolve import close_names, find_file, flair_cache, not_found

_HU = "https://flair.informatik.hu-berlin.de/resources/embeddings/flair/"

#: id -> download URL of every published Flair character language model.
PRETRAINED: dict[str, str] = {
    "multi-forward": _HU + "lm-jw300-forward-v0.1.pt",
    "multi-backward": _HU + "lm-jw300-backward-v0.1.pt",
    "multi-v0-forward": _HU + "lm-multi-forward-v0.1.pt",
    "multi-v0-backward": _HU + "lm-multi-backward-v0.1.pt",
    "multi-forward-fast": _HU + "lm-multi-forward-fast-v0.1.pt",
    "multi-backward-fast": _HU + "lm-multi-backward-fast-v0.1.pt",
    "en-forward": _HU + "news-forward-0.4.1.pt",
    "en-backward": _HU + "news-backward-0.4.1.pt",
    "en-forward-fast": _HU + "lm-news-english-forward-1024-v0.2rc.pt",
    "en-backward-fast": _HU + "lm-news-english-backward-1024-v0.2rc.pt",
    "news-forward": _HU + "news-forward-0.4.1.pt",
    "news-backward": _HU + "news-backward-0.4.1.pt",
    "news-forward-fast": _HU + "lm-news-english-forward-1024-v0.2rc.pt",
    "news-backward-fast": _HU + "lm-news-english-backward-1024-v0.2rc.pt",
    "mix-forward": _HU + "lm-mix-english-forward-v0.2rc.pt",
    "mix-backward": _HU + "lm-mix-english-backward-v0.2rc.pt",
    "ar-forward": _HU + "lm-ar-opus-large-forward-v0.1.pt",
    "ar-backward": _HU + "lm-ar-opus-large-backward-v0.1.pt",
    "bg-forward-fast": _HU + "lm-bg-small-forward-v0.1.pt",
    "bg-backward-fast": _HU + "lm-bg-small-backward-v0.1.pt",
    "bg-forward": _HU + "lm-bg-opus-large-forward-v0.1.pt",
    "bg-backward": _HU + "lm-bg-opus-large-backward-v0.1.pt",
    "cs-forward": _HU + "lm-cs-opus-large-forward-v0.1.pt",
    "cs-backward": _HU + "lm-cs-opus-large-backward-v0.1.pt",
    "cs-v0-forward": _HU + "lm-cs-large-forward-v0.1.pt",
    "cs-v0-backward": _HU + "lm-cs-large-backward-v0.1.pt",
    "da-forward": _HU + "lm-da-opus-large-forward-v0.1.pt",
    "da-backward": _HU + "lm-da-opus-large-backward-v0.1.pt",
    "de-forward": _HU + "lm-mix-german-forward-v0.2rc.pt",
    "de-backward": _HU + "lm-mix-german-backward-v0.2rc.pt",
    "de-historic-ha-forward": _HU + "lm-historic-hamburger-anzeiger-forward-v0.1.pt",
    "de-historic-ha-backward": _HU + "lm-historic-hamburger-anzeiger-backward-v0.1.pt",
    "de-historic-wz-forward": _HU + "lm-historic-wiener-zeitung-forward-v0.1.pt",
    "de-historic-wz-backward": _HU + "lm-historic-wiener-zeitung-backward-v0.1.pt",
    "de-historic-rw-forward": _HU + "redewiedergabe_lm_forward.pt",
    "de-historic-rw-backward": _HU + "redewiedergabe_lm_backward.pt",
    "es-forward": _HU + "lm-es-forward.pt",
    "es-backward": _HU + "lm-es-backward.pt",
    "es-forward-fast": _HU + "lm-es-forward-fast.pt",
    "es-backward-fast": _HU + "lm-es-backward-fast.pt",
    "eu-forward": _HU + "lm-eu-opus-large-forward-v0.2.pt",
    "eu-backward": _HU + "lm-eu-opus-large-backward-v0.2.pt",
    "eu-v1-forward": _HU + "lm-eu-opus-large-forward-v0.1.pt",
    "eu-v1-backward": _HU + "lm-eu-opus-large-backward-v0.1.pt",
    "eu-v0-forward": _HU + "lm-eu-large-forward-v0.1.pt",
    "eu-v0-backward": _HU + "lm-eu-large-backward-v0.1.pt",
    "fa-forward": _HU + "lm-fa-opus-large-forward-v0.1.pt",
    "fa-backward": _HU + "lm-fa-opus-large-backward-v0.1.pt",
    "fi-forward": _HU + "lm-fi-opus-large-forward-v0.1.pt",
    "fi-backward": _HU + "lm-fi-opus-large-backward-v0.1.pt",
    "fr-forward": _HU + "lm-fr-charlm-forward.pt",
    "fr-backward": _HU + "lm-fr-charlm-backward.pt",
    "he-forward": _HU + "lm-he-opus-large-forward-v0.1.pt",
    "he-backward": _HU + "lm-he-opus-large-backward-v0.1.pt",
    "hi-forward": _HU + "lm-hi-opus-large-forward-v0.1.pt",
    "hi-backward": _HU + "lm-hi-opus-large-backward-v0.1.pt",
    "hr-forward": _HU + "lm-hr-opus-large-forward-v0.1.pt",
    "hr-backward": _HU + "lm-hr-opus-large-backward-v0.1.pt",
    "id-forward": _HU + "lm-id-opus-large-forward-v0.1.pt",
    "id-backward": _HU + "lm-id-opus-large-backward-v0.1.pt",
    "it-forward": _HU + "lm-it-opus-large-forward-v0.1.pt",
    "it-backward": _HU + "lm-it-opus-large-backward-v0.1.pt",
    "ja-forward": _HU + "japanese-forward.pt",
    "ja-backward": _HU + "japanese-backward.pt",
    "ml-forward": "https://raw.githubusercontent.com/qburst/models-repository/master/FlairMalayalamModels/ml-forward.pt",
    "ml-backward": "https://raw.githubusercontent.com/qburst/models-repository/master/FlairMalayalamModels/ml-backward.pt",
    "nl-forward": _HU + "lm-nl-opus-large-forward-v0.1.pt",
    "nl-backward": _HU + "lm-nl-opus-large-backward-v0.1.pt",
    "nl-v0-forward": _HU + "lm-nl-large-forward-v0.1.pt",
    "nl-v0-backward": _HU + "lm-nl-large-backward-v0.1.pt",
    "no-forward": _HU + "lm-no-opus-large-forward-v0.1.pt",
    "no-backward": _HU + "lm-no-opus-large-backward-v0.1.pt",
    "pl-forward": _HU + "lm-polish-forward-v0.2.pt",
    "pl-backward": _HU + "lm-polish-backward-v0.2.pt",
    "pl-opus-forward": _HU + "lm-pl-opus-large-forward-v0.1.pt",
    "pl-opus-backward": _HU + "lm-pl-opus-large-backward-v0.1.pt",
    "pt-forward": _HU + "lm-pt-forward.pt",
    "pt-backward": _HU + "lm-pt-backward.pt",
    "pubmed-forward": _HU + "pubmed-forward.pt",
    "pubmed-backward": _HU + "pubmed-backward.pt",
    "pubmed-2015-forward": _HU + "pubmed-2015-fw-lm.pt",
    "pubmed-2015-backward": _HU + "pubmed-2015-bw-lm.pt",
    "sl-forward": _HU + "lm-sl-opus-large-forward-v0.1.pt",
    "sl-backward": _HU + "lm-sl-opus-large-backward-v0.1.pt",
    "sl-v0-forward": _HU + "lm-sl-large-forward-v0.1.pt",
    "sl-v0-backward": _HU + "lm-sl-large-backward-v0.1.pt",
    "sv-forward": _HU + "lm-sv-opus-large-forward-v0.1.pt",
    "sv-backward": _HU + "lm-sv-opus-large-backward-v0.1.pt",
    "sv-v0-forward": _HU + "lm-sv-large-forward-v0.1.pt",
    "sv-v0-backward": _HU + "lm-sv-large-backward-v0.1.pt",
    "ta-forward": _HU + "lm-ta-opus-large-forward-v0.1.pt",
    "ta-backward": _HU + "lm-ta-opus-large-backward-v0.1.pt",
    "es-clinical-forward": _HU + "es-clinical-forward.pt",
    "es-clinical-backward": _HU + "es-clinical-backward.pt",
    "de-impresso-hipe-v1-forward": "https://files.ifi.uzh.ch/cl/siclemat/impresso/clef-hipe-2020/flair/de-hipe-flair-v1-forward/best-lm.pt",
    "de-impresso-hipe-v1-backward": "https://files.ifi.uzh.ch/cl/siclemat/impresso/clef-hipe-2020/flair/de-hipe-flair-v1-backward/best-lm.pt",
    "en-impresso-hipe-v1-forward": "https://files.ifi.uzh.ch/cl/siclemat/impresso/clef-hipe-2020/flair/en-flair-v1-forward/best-lm.pt",
    "en-impresso-hipe-v1-backward": "https://files.ifi.uzh.ch/cl/siclemat/impresso/clef-hipe-2020/flair/en-flair-v1-backward/best-lm.pt",
    "fr-impresso-hipe-v1-forward": "https://files.ifi.uzh.ch/cl/siclemat/impresso/clef-hipe-2020/flair/fr-hipe-flair-v1-forward/best-lm.pt",
    "fr-impresso-hipe-v1-backward": "https://files.ifi.uzh.ch/cl/siclemat/impresso/clef-hipe-2020/flair/fr-hipe-flair-v1-backward/best-lm.pt",
    "am-forward": "http://ltdata1.informatik.uni-hamburg.de/amharic/models/flair//best-lm.pt",
    "uk-forward": "https://huggingface.co/dchaplinsky/flair-uk-forward/resolve/main/best-lm.pt",
    "uk-backward": "https://huggingface.co/dchaplinsky/flair-uk-backward/resolve/main/best-lm.pt",
}

# Flair accepts language names in place of codes (``german-forward``).
_LANGUAGE_NAMES = {
    "arabic": "ar",
    "basque": "eu",
    "bulgarian": "bg",
    "croatian": "hr",
    "czech": "cs",
    "danish": "da",
    "dutch": "nl",
    "farsi": "fa",
    "persian": "fa",
    "finnish": "fi",
    "french": "fr",
    "german": "de",
    "hebrew": "he",
    "hindi": "hi",
    "indonesian": "id",
    "italian": "it",
    "japanese": "ja",
    "norwegian": "no",
    "polish": "pl",
    "portuguese": "pt",
    "slovenian": "sl",
    "spanish": "es",
    "swedish": "sv",
}

# Several URLs end in the same ``best-lm.pt``: those files are cached as ``<id>/best-lm.pt``.
_SEGMENT_COUNT = Counter(PurePosixPath(urlparse(u).path).name for u in set(PRETRAINED.values()))


def canonical_id(name: str) -> str | None:
    """The published id ``name`` stands for, or None when it is not one.

    Examples
    --------
    >>> canonical_id("News-Forward"), canonical_id("german-backward"), canonical_id("x.pt")
    ('news-forward', 'de-backward', None)
    """
    key = name.strip().lower()
    if key in PRETRAINED:
        return key
    language, sep, rest = key.partition("-")
    if sep and language in _LANGUAGE_NAMES:
        key = f"{_LANGUAGE_NAMES[language]}-{rest}"
        if key in PRETRAINED:
            return key
    return None


def cache_filename(model_id: str) -> str:
    """Where a published model lives inside a cache folder (``~/.flair/embeddings`` layout).

    Examples
    --------
    >>> cache_filename("news-forward")
    'news-forward-0.4.1.pt'
    >>> cache_filename("de-impresso-hipe-v1-forward")
    'de-impresso-hipe-v1-forward/best-lm.pt'
    """
    segment = PurePosixPath(urlparse(PRETRAINED[model_id]).path).name
    if _SEGMENT_COUNT[segment] > 1:
        return f"{model_id}/{segment}"
    return segment


def is_lowercased(model_id: str | None) -> bool:
    """Whether the model was trained on lower-cased text (Flair lower-cases its input then)."""
    return model_id is not None and "impresso-hipe" in model_id


def resolve_model_file(name: str | PathLike) -> tuple[Path, str | None]:
    """The local file of a ``model`` parameter, and the published id it stands for (or None).

    Looks, in order, at: an existing path (a file, or a training folder holding
    ``best-lm.pt``); for published ids, the skembed cache (``$SKEMBED_HOME``), Flair's cache
    (``$FLAIR_CACHE_ROOT/embeddings`` or ``~/.flair/embeddings``), then a download into the
    skembed cache when downloads are allowed.

    Raises
    ------
    ModelNotFoundError
        Naming the model, every place looked and the URL to fetch it from.
    """
    path = Path(name).expanduser()
    if path.is_dir() and (path / "best-lm.pt").is_file():
        return path / "best-lm.pt", None
    if path.is_file():
        return path, None
    model_id = canonical_id(str(name))
    if model_id is None:
        close = close_names(str(name), PRETRAINED, cutoff=0.6)
        hint = "It is neither a file nor one of Flair's published ids"
        hint += f" (did you mean {', '.join(map(repr, close))}?)." if close else "."
        hint += " See skembed.flair.PRETRAINED for the ids, or train one with `skembed train-lm`."
        raise not_found("Flair language model", str(name), [path], hint=hint)
    found = find_file(
        "Flair language model",
        model_id,
        cache_filename(model_id),
        [PRETRAINED[model_id]],
        extra_dirs=[flair_cache()],
    )
    return found, model_id
