"""Read and validate an AllenNLP ELMo ``options.json``: every size of the network comes from it."""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass
from pathlib import Path

ACTIVATIONS = ("relu", "tanh")


@dataclass(frozen=True)
class ElmoOptions:
    """The architecture described by an ELMo options file.

    Attributes
    ----------
    char_dim : int
        Width of the character embeddings (``char_cnn.embedding.dim``).
    filters : tuple of (width, n_filters)
        The character convolutions (``char_cnn.filters``).
    n_highway : int
        Number of highway layers after the convolutions.
    activation : {"relu", "tanh"}
        Nonlinearity applied after max-pooling each convolution.
    max_chars : int
        Characters per token, boundary markers and padding included (50 in published files).
    cell_dim : int
        LSTM memory cells per direction and layer (``lstm.dim``).
    projection_dim : int
        Size of the token vectors and of each LSTM output (``lstm.projection_dim``), called P.
    n_layers : int
        biLSTM layers; the output has ``n_layers + 1`` layers of width ``2 * P``.
    cell_clip, proj_clip : float or None
        Clipping of the memory cell and of the projected output (None: no clipping).
    skip_connections : bool
        Layers after the first add their input to their output.

    Examples
    --------
    >>> opts = ElmoOptions.from_dict({
    ...     "char_cnn": {"embedding": {"dim": 4}, "filters": [[1, 4], [2, 8]], "n_highway": 1,
    ...                  "activation": "relu"},
    ...     "lstm": {"dim": 8, "projection_dim": 4, "n_layers": 2},
    ... })
    >>> opts.n_filters, opts.output_dim
    (12, 8)
    """

    char_dim: int
    filters: tuple[tuple[int, int], ...]
    n_highway: int
    activation: str
    max_chars: int
    cell_dim: int
    projection_dim: int
    n_layers: int
    cell_clip: float | None
    proj_clip: float | None
    skip_connections: bool

    @property
    def n_filters(self) -> int:
        """Width of the concatenated convolution outputs (input of the highway layers)."""
        return sum(n for _, n in self.filters)

    @property
    def output_dim(self) -> int:
        """Width of one output layer: forward and backward halves, ``2 * projection_dim``."""
        return 2 * self.projection_dim

    @classmethod
    def from_dict(cls, options: dict, source: str = "options") -> ElmoOptions:
        """Validate a parsed options dictionary; errors name ``source`` and the offending key."""

        def get(path: str, kind: str = "int", default=...):
            node = options
            for part in path.split("."):
                if not isinstance(node, dict) or part not in node:
                    if default is not ...:
                        return default
                    raise ValueError(
                        f"{source}: missing key {path!r} (an ELMo options file has it)."
                    )
                node = node[part]
            if node is None and default is not ...:
                return default
            if kind == "int":
                ok = isinstance(node, numbers.Integral) and not isinstance(node, bool) and node > 0
                if not ok:
                    raise ValueError(
                        f"{source}: {path!r} must be a positive integer, got {node!r}."
                    )
                return int(node)
            if kind == "clip":
                ok = isinstance(node, numbers.Real) and not isinstance(node, bool) and node > 0
                if not ok:
                    raise ValueError(f"{source}: {path!r} must be a positive number, got {node!r}.")
                return float(node)
            return node

        raw_filters = get("char_cnn.filters", kind="list")
        if not isinstance(raw_filters, list) or not raw_filters:
            raise ValueError(
                f"{source}: 'char_cnn.filters' must be a non-empty list of [width, n_filters]."
            )
        filters = []
        for k, pair in enumerate(raw_filters):
            if (
                not isinstance(pair, list | tuple)
                or len(pair) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair)
            ):
                raise ValueError(
                    f"{source}: 'char_cnn.filters'[{k}] must be [width, n_filters] with positive "
                    f"integers, got {pair!r}."
                )
            filters.append((int(pair[0]), int(pair[1])))

        activation = get("char_cnn.activation", kind="str")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"{source}: 'char_cnn.activation'={activation!r}; choose one of {list(ACTIVATIONS)}."
            )
        n_highway = get("char_cnn.n_highway", kind="raw", default=0)
        if not isinstance(n_highway, int) or isinstance(n_highway, bool) or n_highway < 0:
            raise ValueError(f"{source}: 'char_cnn.n_highway' must be an integer >= 0.")
        max_chars = get("char_cnn.max_characters_per_token", default=50)
        if max_chars < max(w for w, _ in filters) or max_chars < 3:
            raise ValueError(
                f"{source}: 'char_cnn.max_characters_per_token'={max_chars} is shorter than the "
                "widest filter or than the 3 boundary markers."
            )
        skip = get("lstm.use_skip_connections", kind="raw", default=True)
        if not isinstance(skip, bool):
            raise ValueError(f"{source}: 'lstm.use_skip_connections' must be true or false.")
        return cls(
            char_dim=get("char_cnn.embedding.dim"),
            filters=tuple(filters),
            n_highway=n_highway,
            activation=activation,
            max_chars=max_chars,
            cell_dim=get("lstm.dim"),
            projection_dim=get("lstm.projection_dim"),
            n_layers=get("lstm.n_layers"),
            cell_clip=get("lstm.cell_clip", kind="clip", default=None),
            proj_clip=get("lstm.proj_clip", kind="clip", default=None),
            skip_connections=skip,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> ElmoOptions:
        """Read an ``options.json`` file."""
        path = Path(path)
        try:
            options = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"{path} is not valid JSON ({exc}); is it an ELMo options file?"
            ) from exc
        if not isinstance(options, dict):
            raise ValueError(f"{path}: expected a JSON object with 'char_cnn' and 'lstm' keys.")
        return cls.from_dict(options, source=str(path))

    def to_dict(self) -> dict:
        """The options in AllenNLP's JSON layout (for writing test and benchmark models)."""
        lstm = {
            "dim": self.cell_dim,
            "projection_dim": self.projection_dim,
            "n_layers": self.n_layers,
            "use_skip_connections": self.skip_connections,
        }
        if self.cell_clip is not None:
            lstm["cell_clip"] = self.cell_clip
        if self.proj_clip is not None:
            lstm["proj_clip"] = self.proj_clip
        return {
            "char_cnn": {
                "embedding": {"dim": self.char_dim},
                "filters": [list(f) for f in self.filters],
                "n_highway": self.n_highway,
                "activation": self.activation,
                "n_characters": 262,
                "max_characters_per_token": self.max_chars,
            },
            "lstm": lstm,
        }
