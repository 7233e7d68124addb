"""Training text for character LMs: files, folders or strings, split into training and validation."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from .unpickle import CharDictionary


@dataclass
class Corpus:
    """Training splits (files read one at a time, or in-memory texts) and the validation text.

    ``cuts`` maps a split index to the character where its held-out tail starts.
    """

    train: list[Path | str]
    valid: str
    cuts: dict[int, int] = field(default_factory=dict)

    def train_text(self, index: int) -> str:
        source = self.train[index]
        text = source.read_text(encoding="utf-8") if isinstance(source, Path) else source
        cut = self.cuts.get(index)
        return text if cut is None else text[:cut]

    def describe(self, index: int) -> str:
        source = self.train[index]
        return str(source) if isinstance(source, Path) else f"text #{index}"


def _join(docs: Iterable[str], what: str) -> str:
    if isinstance(docs, str):
        raise TypeError(f"{what}: got a single string; pass a list of documents or a path.")
    parts = []
    for i, doc in enumerate(docs):
        if not isinstance(doc, str):
            raise TypeError(f"{what}: document {i} is a {type(doc).__name__}, not a string.")
        parts.append(doc.replace("\n", " ") + "\n")
    return "".join(parts)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def read_corpus(corpus, valid=None, valid_fraction: float = 0.1) -> Corpus:
    """Resolve the ``corpus`` and ``valid`` arguments of :func:`train_language_model`.

    Parameters
    ----------
    corpus : path or iterable of str
        A text file (one document per line), a folder of text files (one split each; Flair's
        layout, ``train/`` plus ``valid.txt``, is recognised) or an iterable of documents.
    valid : path or iterable of str, optional
        Validation text; by default the tail of the last split (``valid_fraction`` of its
        characters, cut at a line break) is held out.

    Examples
    --------
    >>> c = read_corpus(["one doc", "two doc", "three doc", "four"], valid_fraction=0.15)
    >>> c.train_text(0), c.valid
    ('one doc\\ntwo doc\\nthree doc\\n', 'four\\n')
    """
    if isinstance(corpus, str | PathLike):
        path = Path(corpus).expanduser()
        if path.is_file():
            train: list[Path | str] = [path]
        elif path.is_dir():
            if (path / "train").is_dir():
                train = list(_files(path / "train"))
                if valid is None and (path / "valid.txt").is_file():
                    valid = path / "valid.txt"
            else:
                train = list(_files(path))
            if not train:
                raise ValueError(f"The corpus folder {path} holds no text files.")
        else:
            raise FileNotFoundError(f"The corpus {path} is neither a file nor a folder.")
    else:
        train = [_join(corpus, "corpus")]
    result = Corpus(train=train, valid="")
    if valid is not None:
        if isinstance(valid, str | PathLike):
            result.valid = Path(valid).expanduser().read_text(encoding="utf-8")
        else:
            result.valid = _join(valid, "valid")
    else:
        if not 0.0 < valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be between 0 and 1, got {valid_fraction!r}.")
        last = len(train) - 1
        text = result.train_text(last)
        target = len(text) - max(1, int(len(text) * valid_fraction))
        # Cut at the line break nearest before the target, so documents stay whole.
        newline = text.rfind("\n", 0, target)
        cut = newline + 1 if newline > 0 else target
        result.cuts[last] = cut
        result.valid = text[cut:]
    if len(result.valid) < 3:
        raise ValueError(
            f"The validation text has only {len(result.valid)} characters: give a larger corpus, "
            "a larger valid_fraction, or valid=..."
        )
    if not any(result.train_text(i).strip() for i in range(len(train))):
        raise ValueError("The training corpus is empty.")
    return result


def build_dictionary(corpus: Corpus) -> CharDictionary:
    """All characters of the corpus, most frequent first (ties by code point)."""
    counts: Counter = Counter()
    for i in range(len(corpus.train)):
        counts.update(corpus.train_text(i))
    counts.update(corpus.valid)
    counts.update("\n ")
    return CharDictionary(sorted(counts, key=lambda c: (-counts[c], ord(c))))
