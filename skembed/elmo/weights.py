"""AllenNLP's ELMo ``weights.hdf5``: checked reading into :class:`ElmoModel`, and writing.

The file holds TensorFlow's layout (see ``docs/elmo.md``). Reading only touches numeric
datasets through h5py, so loading a model never executes anything from the file. Every dataset's
shape is checked against the options file first, and a mismatch names the dataset.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .model import ElmoModel
from .options import ElmoOptions

_CELL = "RNN_{d}/RNN/MultiRNNCell/Cell{layer}/LSTMCell/"


def expected_shapes(options: ElmoOptions) -> dict[str, tuple[int, ...]]:
    """Every dataset ELMo reads, with the shape ``options`` implies.

    Examples
    --------
    >>> opts = ElmoOptions.from_dict({
    ...     "char_cnn": {"embedding": {"dim": 4}, "filters": [[1, 4]], "activation": "relu"},
    ...     "lstm": {"dim": 8, "projection_dim": 2, "n_layers": 1},
    ... })
    >>> expected_shapes(opts)["RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/W_0"]
    (4, 32)
    """
    E, D = options.char_dim, options.n_filters
    P, C = options.projection_dim, options.cell_dim
    shapes = {"char_embed": (261, E)}
    for i, (width, n) in enumerate(options.filters):
        shapes[f"CNN/W_cnn_{i}"] = (1, width, E, n)
        shapes[f"CNN/b_cnn_{i}"] = (n,)
    for k in range(options.n_highway):
        for part in ("transform", "carry"):
            shapes[f"CNN_high_{k}/W_{part}"] = (D, D)
            shapes[f"CNN_high_{k}/b_{part}"] = (D,)
    shapes["CNN_proj/W_proj"] = (D, P)
    shapes["CNN_proj/b_proj"] = (P,)
    for d in range(2):
        for layer in range(options.n_layers):
            cell = _CELL.format(d=d, layer=layer)
            shapes[cell + "W_0"] = (2 * P, 4 * C)
            shapes[cell + "B"] = (4 * C,)
            shapes[cell + "W_P_0"] = (C, P)
    return shapes


def read_weights(path: str | Path, options: ElmoOptions) -> dict[str, np.ndarray]:
    """Read every dataset ELMo needs as float32 arrays, checking names and shapes."""
    import h5py  # on use: importing it registers an exit hook

    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path} is not a readable HDF5 file ({exc}).") from exc
    arrays = {}
    with handle:
        for name, shape in expected_shapes(options).items():
            if name not in handle or not isinstance(handle[name], h5py.Dataset):
                raise ValueError(
                    f"{path}: dataset {name!r} is missing; is this the weights file that goes "
                    "with the options file?"
                )
            data = handle[name]
            if tuple(data.shape) != shape:
                raise ValueError(
                    f"{path}: dataset {name!r} has shape {tuple(data.shape)} but the options "
                    f"file implies {shape}; the options and weights files do not match."
                )
            if not np.issubdtype(data.dtype, np.floating):
                raise ValueError(f"{path}: dataset {name!r} holds {data.dtype}, not floats.")
            arrays[name] = np.asarray(data[...], dtype=np.float32)
    return arrays


def _tf_gates_to_ours(matrix: np.ndarray, cells: int) -> np.ndarray:
    """TensorFlow's gate blocks (input, candidate, forget, output) to (input, forget, output,
    candidate), along the last axis."""
    i, j, f, o = (matrix[..., k * cells : (k + 1) * cells] for k in range(4))
    return np.concatenate([i, f, o, j], axis=-1)


def load_elmo(
    options_path: str | Path, weights_path: str | Path, device: torch.device | str = "cpu"
) -> ElmoModel:
    """Build an :class:`ElmoModel` from AllenNLP's ``options.json`` and ``weights.hdf5``.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> opts = ElmoOptions.from_dict({
    ...     "char_cnn": {"embedding": {"dim": 4}, "filters": [[1, 4]], "activation": "tanh"},
    ...     "lstm": {"dim": 8, "projection_dim": 2, "n_layers": 1},
    ... })
    >>> model = load_elmo(*write_random_elmo(folder, opts))
    >>> tuple(model([["a", "b"]])[0].shape)
    (2, 2, 4)
    """
    options = ElmoOptions.from_file(options_path)
    w = read_weights(weights_path, options)
    # Built on the meta device: no memory or random init for weights replaced right away.
    with torch.device("meta"):
        model = ElmoModel(options)
    P, C = options.projection_dim, options.cell_dim
    tensors = {}
    tensors["chars.embedding"] = np.concatenate(
        [np.zeros((1, options.char_dim), np.float32), w["char_embed"]]
    )
    for i in range(len(options.filters)):
        # TF conv filter (1, width, in, out) -> torch Conv1d weight (out, in, width).
        tensors[f"chars.convs.{i}.weight"] = w[f"CNN/W_cnn_{i}"][0].transpose(2, 1, 0)
        tensors[f"chars.convs.{i}.bias"] = w[f"CNN/b_cnn_{i}"]
    for k in range(options.n_highway):
        # TF computes x @ W; torch's Linear computes x @ weight.T.
        tensors[f"chars.highways.{k}.weight"] = np.concatenate(
            [w[f"CNN_high_{k}/W_transform"].T, w[f"CNN_high_{k}/W_carry"].T]
        )
        tensors[f"chars.highways.{k}.bias"] = np.concatenate(
            [w[f"CNN_high_{k}/b_transform"], w[f"CNN_high_{k}/b_carry"]]
        )
    tensors["chars.projection.weight"] = w["CNN_proj/W_proj"].T
    tensors["chars.projection.bias"] = w["CNN_proj/b_proj"]
    for layer in range(options.n_layers):
        cells = [_CELL.format(d=d, layer=layer) for d in range(2)]
        # W_0 multiplies cat(input, previous output): the first P rows are the input's.
        kernel = np.stack([_tf_gates_to_ours(w[c + "W_0"], C) for c in cells])
        tensors[f"lstm.w_input.{layer}"] = kernel[:, :P]
        tensors[f"lstm.w_state.{layer}"] = kernel[:, P:]
        bias = np.stack([_tf_gates_to_ours(w[c + "B"], C) for c in cells])
        bias[:, C : 2 * C] += 1.0  # TensorFlow's LSTMCell adds forget_bias=1.0 at run time
        tensors[f"lstm.bias.{layer}"] = bias
        tensors[f"lstm.w_proj.{layer}"] = np.stack([w[c + "W_P_0"] for c in cells])
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.requires_grad_(False).to(device).eval()


def write_random_elmo(
    folder: str | Path, options: ElmoOptions, seed: int = 0, scale: float = 1.0
) -> tuple[Path, Path]:
    """Write ``options.json`` and ``weights.hdf5`` with random weights in AllenNLP's layout.

    For tests, examples and benchmarks: the vectors mean nothing, but the files have exactly the
    format of the published ones. ``scale`` multiplies every weight.

    Returns
    -------
    (options_path, weights_path)
    """
    import h5py

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    options_path, weights_path = folder / "options.json", folder / "weights.hdf5"
    options_path.write_text(json.dumps(options.to_dict(), indent=2), encoding="utf-8")
    with h5py.File(weights_path, "w") as out:
        for name, shape in expected_shapes(options).items():
            # Fan-in scaling keeps activations in a useful range, so clipping is reached sometimes.
            fan_in = shape[0] if len(shape) == 2 else int(np.prod(shape[:-1])) if shape else 1
            std = scale / np.sqrt(fan_in) if len(shape) > 1 and name != "char_embed" else scale
            if len(shape) == 1:
                std = 0.1 * scale
            data = rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
            out.create_dataset(name, data=data)
    return options_path, weights_path
