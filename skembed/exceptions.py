"""Warnings and errors of skembed that users may want to catch or filter."""

from __future__ import annotations

from .resolve import ModelNotFoundError

__all__ = ["InconsistentVersionWarning", "ModelNotFoundError"]


class InconsistentVersionWarning(UserWarning):
    """An estimator was unpickled by another version of skembed than the one that pickled it
    (as scikit-learn's warning of the same name, for skembed's own version).

    Attributes
    ----------
    estimator_name : str
    original_version : str or None
        The version that pickled it; None for a pickle of a version that did not record it.
    current_version : str
    missing : list of str
        Parameters the pickle did not hold, set to their defaults.

    Examples
    --------
    >>> import pickle, warnings
    >>> from skembed import TransformerEmbeddings
    >>> blob = pickle.dumps(TransformerEmbeddings("all-MiniLM-L6-v2"))
    >>> with warnings.catch_warnings():  # to silence it
    ...     warnings.simplefilter("ignore", InconsistentVersionWarning)
    ...     loaded = pickle.loads(blob)
    """

    def __init__(self, *, estimator_name, original_version, current_version, missing=()):
        self.estimator_name = estimator_name
        self.original_version = original_version
        self.current_version = current_version
        self.missing = list(missing)

    def __str__(self) -> str:
        saved = (
            f"skembed {self.original_version}"
            if self.original_version is not None
            else "an older skembed (which did not record its version)"
        )
        text = (
            f"Trying to unpickle {self.estimator_name} saved with {saved} when using skembed "
            f"{self.current_version}. It may fail or give other results: refit it with this "
            "version, or load it with the version that saved it."
        )
        if self.missing:
            text += (
                f" The pickle has no value for the parameters {self.missing}: they are set to "
                "their defaults."
            )
        return text
