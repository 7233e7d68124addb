"""Flair's word-embedding ids (``glove``, ``crawl``, ``de-wiki``...) to local files.

Flair publishes its word embeddings as gensim ``KeyedVectors`` files: ``<name>`` plus
``<name>.vectors.npy``, cached in ``~/.flair/embeddings``. The same file names are looked up in
the skembed cache and in Flair's cache before anything is downloaded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..resolve import download, find_file, flair_cache, not_found, offline

FLAIR_URL = "https://flair.informatik.hu-berlin.de/resources/embeddings/token"

# id (and Flair's "en-" alias) -> Flair's file name
_ENGLISH = {
    "glove": "glove.gensim",
    "turian": "turian",
    "extvec": "extvec.gensim",
    "pubmed": "pubmed_pmc_wiki_sg_1M.gensim",
    "crawl": "en-fasttext-crawl-300d-1M",
    "news": "en-fasttext-news-300d-1M",
    "twitter": "twitter.gensim",
}
KNOWN_IDS = (*_ENGLISH, "en", "<xx> or <xx>-wiki (e.g. de, de-wiki)", "<xx>-crawl (e.g. de-crawl)")


def flair_file_name(name: str) -> str | None:
    """Flair's file name for a word-embedding id, or None when ``name`` is not an id.

    Examples
    --------
    >>> flair_file_name("glove"), flair_file_name("de-crawl"), flair_file_name("nl")
    ('glove.gensim', 'de-crawl-fasttext-300d-1M', 'nl-wiki-fasttext-300d-1M')
    """
    key = name.lower()
    if key.startswith("en-") and key[3:] in _ENGLISH:
        key = key[3:]
    if key == "en":
        key = "news"
    if key in _ENGLISH:
        return _ENGLISH[key]
    match = re.fullmatch(r"([a-z]{2})(-wiki|-crawl)?", key)
    if match:
        kind = "crawl" if match.group(2) == "-crawl" else "wiki"
        return f"{match.group(1)}-{kind}-fasttext-300d-1M"
    return None


def resolve_word_file(name) -> Path:
    """Local file of a word-embedding path or Flair id.

    Order: an existing path; for ids, the skembed cache then Flair's cache (and a download
    when allowed). Raises :class:`skembed.resolve.ModelNotFoundError` listing where it looked.
    """
    if not isinstance(name, str | os.PathLike):
        raise TypeError(
            f"embeddings must be a Flair id (e.g. 'glove') or the path of a word-vector file, "
            f"got {type(name).__name__}."
        )
    path = Path(name).expanduser()
    if path.is_file():
        return path
    filename = flair_file_name(str(name)) if isinstance(name, str) else None
    if filename is None:
        raise not_found(
            "word embeddings",
            str(name),
            [path],
            hint="It is neither an existing file nor a known id. Ids: " + ", ".join(KNOWN_IDS),
            candidates=[*_ENGLISH, *(f"en-{k}" for k in _ENGLISH)],
        )
    urls = [f"{FLAIR_URL}/{filename}", f"{FLAIR_URL}/{filename}.vectors.npy"]
    main = find_file("word embeddings", str(name), filename, urls, extra_dirs=[flair_cache()])
    vectors = main.with_name(f"{filename}.vectors.npy")
    if not vectors.is_file():
        if offline():
            raise not_found("word embeddings", str(name), [vectors], urls[1:])
        try:
            download(urls[1], vectors)
        except Exception as exc:  # network errors become the not-found error
            raise not_found("word embeddings", str(name), [vectors], urls[1:], failed=exc) from None
    return main
