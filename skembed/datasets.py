"""Small labelled text sets that ship with skembed, for examples and quick checks."""

from __future__ import annotations

from importlib import resources


def load_reviews(as_frame: bool = False):
    """300 short movie-review sentences labelled ``"positive"`` or ``"negative"``, 150 each.

    The words alone do not give the label away: each template comes in pairs that use the
    same words for both labels ("The plot was dull." and "The plot was not dull at all.";
    "The cast was clumsy, but overall the film was superb." and the reverse), so a
    classifier has to read negation and word order, and which layer of a transformer it
    reads matters (see the quickstart). The reviews were written for skembed by
    ``scripts/make_reviews.py`` (templates and word lists, fixed seed) and are under the
    package's licence (MIT); ``skembed/data/README.md`` says more.

    Parameters
    ----------
    as_frame : bool, default=False
        Return a pandas DataFrame with ``text`` and ``label`` columns instead of two lists.

    Returns
    -------
    (texts, labels) : tuple of lists of str, or DataFrame

    Examples
    --------
    >>> from skembed.datasets import load_reviews
    >>> texts, labels = load_reviews()
    >>> len(texts), sorted(set(labels))
    (300, ['negative', 'positive'])
    """
    import pandas as pd

    with resources.files("skembed").joinpath("data/reviews.csv").open("r", encoding="utf-8") as f:
        frame = pd.read_csv(f)
    if as_frame:
        return frame
    return frame["text"].tolist(), frame["label"].tolist()
