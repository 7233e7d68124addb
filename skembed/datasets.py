"""Small labelled text sets that ship with skembed, for examples and quick checks."""

from __future__ import annotations

from importlib import resources


def load_reviews(as_frame: bool = False):
    """200 short movie-review sentences labelled ``"positive"`` or ``"negative"``.

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
    (200, ['negative', 'positive'])
    """
    import pandas as pd

    with resources.files("skembed").joinpath("data/reviews.csv").open("r", encoding="utf-8") as f:
        frame = pd.read_csv(f)
    if as_frame:
        return frame
    return frame["text"].tolist(), frame["label"].tolist()
