"""ELMo internals: options, character ids, HDF5 reading, and parity with TensorFlow and numpy."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from tolerances import CONTRACT_ATOL, U32

from skembed.elmo import ElmoOptions, batch_char_ids, load_elmo, token_char_ids, write_random_elmo

DATA = Path(__file__).parent / "data" / "elmo"


def tiny_options(**changes) -> ElmoOptions:
    base = {
        "char_cnn": {
            "embedding": {"dim": 4},
            "filters": [[1, 4], [2, 6], [3, 5]],
            "n_highway": 2,
            "activation": "relu",
        },
        "lstm": {"dim": 12, "projection_dim": 5, "n_layers": 2, "cell_clip": 3, "proj_clip": 3},
    }
    for key, value in changes.items():
        section = "lstm" if key in base["lstm"] or key == "use_skip_connections" else "char_cnn"
        base[section][key] = value
    return ElmoOptions.from_dict(base)


# -- character ids ---------------------------------------------------------------------------
def expected_ids(body: list[int]) -> list[int]:
    """AllenNLP's layout written out: [258, body..., 259, 260...] + 1."""
    return [259] + [b + 1 for b in body] + [260] + [261] * (48 - len(body))


@pytest.mark.parametrize(
    "token, body",
    [
        ("The", [84, 104, 101]),
        ("café", [99, 97, 102, 0xC3, 0xA9]),
        ("😀", [0xF0, 0x9F, 0x98, 0x80]),
        ("", []),
        ("x" * 60, [120] * 48),
        # 1 + 2 * 30 bytes: the cut at 48 bytes falls inside an "é" and keeps its first byte.
        ("a" + "é" * 30, [97] + [0xC3, 0xA9] * 23 + [0xC3]),
        # A lone surrogate cannot be UTF-8 encoded and is dropped.
        ("\ud800x", [120]),
    ],
)
def test_token_char_ids_match_allennlp_layout(token, body):
    assert list(token_char_ids(token)) == expected_ids(body)


def test_sentence_boundaries_and_literal_markers():
    bos = [259, 257, 260] + [261] * 47
    eos = [259, 258, 260] + [261] * 47
    assert list(token_char_ids("<S>")) == bos
    assert list(token_char_ids("</S>")) == eos
    ids, positions, lengths = batch_char_ids([["a", "b", "a"], ["b"]])
    assert ids[positions[0, 0]].tolist() == bos
    assert ids[positions[0, 4]].tolist() == eos
    assert positions.tolist() == [[0, 2, 3, 2, 1], [0, 3, 1, 1, 1]]
    assert lengths.tolist() == [5, 3]
    assert ids.shape == (4, 50)


# -- options -----------------------------------------------------------------------------------
def test_options_from_published_fixture():
    opts = ElmoOptions.from_file(DATA / "options.json")
    assert opts.filters == ((1, 4), (2, 8), (3, 16), (4, 32), (5, 64))
    assert (opts.n_filters, opts.n_highway, opts.cell_dim, opts.projection_dim) == (124, 2, 64, 16)
    assert (opts.cell_clip, opts.proj_clip, opts.skip_connections) == (3.0, 3.0, True)
    assert ElmoOptions.from_dict(opts.to_dict()) == opts


@pytest.mark.parametrize(
    "change, message",
    [
        ({"activation": "gelu"}, "'char_cnn.activation'='gelu'; choose one of"),
        ({"dim": 0}, "'lstm.dim' must be a positive integer"),
        ({"filters": [[2]]}, r"'char_cnn.filters'\[0\]"),
        ({"max_characters_per_token": 2}, "max_characters_per_token"),
    ],
)
def test_options_errors_name_the_key(change, message):
    with pytest.raises(ValueError, match=message):
        tiny_options(**change)


def test_options_missing_key_and_bad_json(tmp_path):
    path = tmp_path / "options.json"
    path.write_text(json.dumps({"char_cnn": {"filters": [[1, 2]], "activation": "relu"}}))
    with pytest.raises(ValueError, match=r"options.json: missing key 'char_cnn.embedding.dim'"):
        ElmoOptions.from_file(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        ElmoOptions.from_file(path)


# -- weights -----------------------------------------------------------------------------------
def test_shape_mismatch_names_the_dataset(tmp_path):
    options_path, weights_path = write_random_elmo(tmp_path, tiny_options())
    with h5py.File(weights_path, "a") as f:
        del f["CNN/W_cnn_1"]
        f.create_dataset("CNN/W_cnn_1", data=np.zeros((1, 2, 4, 7), np.float32))
    with pytest.raises(ValueError, match=r"'CNN/W_cnn_1' has shape \(1, 2, 4, 7\).*\(1, 2, 4, 6\)"):
        load_elmo(options_path, weights_path)
    with h5py.File(weights_path, "a") as f:
        del f["CNN/W_cnn_1"]
        f.create_dataset("CNN/W_cnn_1", data=np.zeros((1, 2, 4, 6), np.float32))
        del f["RNN_1/RNN/MultiRNNCell/Cell1/LSTMCell/W_P_0"]
    with pytest.raises(
        ValueError, match="'RNN_1/RNN/MultiRNNCell/Cell1/LSTMCell/W_P_0' is missing"
    ):
        load_elmo(options_path, weights_path)
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        load_elmo(options_path, options_path)


def test_weights_of_other_options_are_refused(tmp_path):
    options_path, _ = write_random_elmo(tmp_path / "a", tiny_options())
    _, other_weights = write_random_elmo(tmp_path / "b", tiny_options(projection_dim=6))
    with pytest.raises(ValueError, match="CNN_proj/W_proj"):
        load_elmo(options_path, other_weights)


# -- parity with AllenNLP's TensorFlow outputs ---------------------------------------------------
def test_fixture_top_layer_matches_tensorflow():
    model = load_elmo(DATA / "options.json", DATA / "lm_weights.hdf5")
    sentences = json.loads((DATA / "sentences.json").read_text())
    # Batch 0 is the only one the TF bilm ran from zero state (it carried state afterwards).
    docs = [sentences[k][0].split() for k in range(3)]
    with torch.inference_mode():
        batch = model(docs)
        alone = [model([d])[0] for d in docs]
    for k, doc in enumerate(docs):
        with h5py.File(DATA / f"lm_embeddings_{k}.hdf5", "r") as f:
            expected = np.concatenate(f["0"][...], axis=-1)  # (T, 32): forward | backward
        assert batch[k].shape == (3, len(doc), 32)
        np.testing.assert_allclose(batch[k][2].numpy(), expected, atol=1e-5, rtol=0)
        np.testing.assert_allclose(alone[k].numpy(), batch[k].numpy(), atol=1e-5, rtol=0)


# -- parity with a plain numpy implementation written from the format's facts -------------------
def sig(v: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp overflows to inf for saturated gates: sigmoid 0
        return 1 / (1 + np.exp(-v))


class Rounding:
    """Operations on (value, error bound) pairs: the value computed exactly (in float64), the
    bound on how far an evaluation with unit roundoff ``u`` (float32's or float64's) can be from
    it, given the bounds of the operands (a running error analysis). A dot product of n terms
    is off by at most gamma(n) times the sum of the terms' magnitudes in any summation order,
    with or without FMA (Higham, Accuracy and Stability, section 3.1); exp and tanh are within
    4 ulp (8 u), and the sigmoid's add and divide add 2 u. Clipping, relu and max move no error
    beyond their input's. The bounds hold for any CPU, kernel, library or thread count.
    """

    # Past this a bound says nothing (every value here is far smaller); capping keeps it finite.
    UNKNOWN = 1e6

    def __init__(self, u: float):
        self.u, self.nonlinear = u, 10 * u

    def _cap(self, e):
        return np.minimum(e, self.UNKNOWN)

    def dot(self, x, e_x, weight, bias=0.0):
        """``x @ weight + bias``."""
        n = weight.shape[0] + 1
        a = np.abs(weight)
        e = e_x @ a + n * self.u / (1 - n * self.u) * ((np.abs(x) + e_x) @ a + np.abs(bias))
        return x @ weight + bias, self._cap(e)

    def mul(self, a, e_a, b, e_b):
        y, e = a * b, np.abs(a) * e_b + np.abs(b) * e_a + e_a * e_b
        return y, self._cap(e + self.u * (np.abs(y) + e))

    def add(self, a, e_a, b, e_b):
        y, e = a + b, e_a + e_b
        return y, self._cap(e + self.u * (np.abs(y) + e))

    def sigmoid(self, z, e_z):
        # The slope is largest at the point of [z - e_z, z + e_z] nearest 0.
        y, s = sig(z), sig(np.maximum(np.abs(z) - e_z, 0))
        e = s * (1 - s) * e_z
        return y, e + self.nonlinear * (y + e)

    def tanh(self, z, e_z):
        y, t = np.tanh(z), np.tanh(np.maximum(np.abs(z) - e_z, 0))
        e = (1 - t**2) * e_z
        return y, e + self.nonlinear * (np.abs(y) + e)

    @staticmethod
    def relu(z, e_z):
        return np.maximum(z, 0), np.where(z + e_z < 0, 0.0, e_z)

    @staticmethod
    def clip(v, e_v, limit):
        """Exactly the limit, hence no error, where all of ``[v - e_v, v + e_v]`` is clipped."""
        return np.clip(v, -limit, limit), np.where(np.abs(v) - e_v > limit, 0.0, e_v)


def numpy_elmo(
    weights_path, opts: ElmoOptions, doc: list[str], u: float = U32
) -> tuple[np.ndarray, np.ndarray]:
    """Step-by-step float64 ELMo read straight from the TF-layout HDF5 file.

    Returns the layers and, for each value, a bound on the error of an evaluation of the network
    with unit roundoff ``u`` (see :class:`Rounding`).
    """
    r = Rounding(u)
    w = {}
    with h5py.File(weights_path, "r") as f:
        f.visititems(
            lambda n, d: (
                w.__setitem__(n, d[...].astype(np.float64)) if hasattr(d, "shape") else None
            )
        )
    table = np.vstack([np.zeros((1, opts.char_dim)), w["char_embed"]])
    act = r.tanh if opts.activation == "tanh" else r.relu
    tokens = []
    for token in ["<S>", *doc, "</S>"]:
        x = table[list(token_char_ids(token))]  # (50, E), exact in float32
        feats = []
        for i, (width, _) in enumerate(opts.filters):
            kernel, bias = w[f"CNN/W_cnn_{i}"][0], w[f"CNN/b_cnn_{i}"]  # (width, E, n)
            windows = np.stack([x[s : s + width].reshape(-1) for s in range(50 - width + 1)])
            conv, e_conv = r.dot(windows, 0 * windows, kernel.reshape(-1, kernel.shape[-1]), bias)
            # Only positions that can hold the float32 maximum bring their error to it.
            may_win = conv + e_conv >= (conv - e_conv).max(axis=0)
            feats.append(act(conv.max(axis=0), np.where(may_win, e_conv, 0).max(axis=0)))
        h = tuple(np.concatenate(parts) for parts in zip(*feats))
        for k in range(opts.n_highway):
            g = r.sigmoid(*r.dot(*h, w[f"CNN_high_{k}/W_carry"], w[f"CNN_high_{k}/b_carry"]))
            t = r.relu(*r.dot(*h, w[f"CNN_high_{k}/W_transform"], w[f"CNN_high_{k}/b_transform"]))
            h = r.add(*r.mul(*g, *t), *r.mul(*r.add(1.0, 0.0, -g[0], g[1]), *h))
        tokens.append(r.dot(*h, w["CNN_proj/W_proj"], w["CNN_proj/b_proj"]))
    tokens = tuple(np.array(parts) for parts in zip(*tokens))  # values, bounds: (T, P) each
    C, clip_c, clip_p = opts.cell_dim, opts.cell_clip or np.inf, opts.proj_clip or np.inf
    layers = [tuple(np.concatenate([t, t], axis=1) for t in tokens)]
    inputs = [tokens, tuple(t[::-1] for t in tokens)]
    for layer in range(opts.n_layers):
        outs = []
        for d in range(2):
            cell = f"RNN_{d}/RNN/MultiRNNCell/Cell{layer}/LSTMCell/"
            # TF adds forget_bias=1.0 to the float32 bias; round the same way here.
            bias = w[cell + "B"].copy()
            bias[2 * C : 3 * C] = (bias[2 * C : 3 * C].astype(np.float32) + np.float32(1.0)).astype(
                np.float64
            )
            zeros = np.zeros(C), np.zeros(opts.projection_dim)
            c, h, seq = (zeros[0], zeros[0]), (zeros[1], zeros[1]), []
            for x, e_x in zip(*inputs[d]):
                z = r.dot(
                    np.concatenate([x, h[0]]), np.concatenate([e_x, h[1]]), w[cell + "W_0"], bias
                )
                i, j, f, o = zip(*(np.split(part, 4) for part in z))
                c = r.clip(
                    *r.add(*r.mul(*r.sigmoid(*i), *r.tanh(*j)), *r.mul(*r.sigmoid(*f), *c)), clip_c
                )
                h = r.clip(*r.dot(*r.mul(*r.sigmoid(*o), *r.tanh(*c)), w[cell + "W_P_0"]), clip_p)
                seq.append(h)
            seq = tuple(np.array(parts) for parts in zip(*seq))
            if opts.skip_connections and layer > 0:
                seq = r.add(*seq, *inputs[d])
            outs.append(seq)
        inputs = outs
        layers.append(tuple(np.concatenate([f, b[::-1]], axis=1) for f, b in zip(*outs)))
    values, bounds = (np.stack(parts)[:, 1:-1] for parts in zip(*layers))
    return values, bounds


def assert_within(got: np.ndarray, expected: np.ndarray, bound: np.ndarray) -> None:
    excess = np.abs(got - expected) - bound
    where = np.unravel_index(excess.argmax(), excess.shape)
    assert excess.max() <= 0, f"{(excess > 0).sum()} values beyond the bound, the worst at {where}"


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"activation": "tanh", "n_highway": 3, "n_layers": 3, "use_skip_connections": False},
        {"n_highway": 0, "n_layers": 1, "cell_clip": None, "proj_clip": None},
    ],
)
@pytest.mark.parametrize("lstm_scale", [1, 5])
def test_matches_numpy_reference(tmp_path, changes, lstm_scale):
    opts = tiny_options(**changes)
    options_path, weights_path = write_random_elmo(tmp_path, opts, seed=3)
    with h5py.File(weights_path, "a") as f:
        # Large LSTM weights (5) reach the clipping of cells and outputs; they also amplify
        # rounding through the recurrence so much that the bounds below say little about deep
        # layers of long sentences there, which the plain weights (1) check closely.
        for d in range(2):
            for layer in range(opts.n_layers):
                for name in ("W_0", "W_P_0"):
                    data = f[f"RNN_{d}/RNN/MultiRNNCell/Cell{layer}/LSTMCell/{name}"]
                    data[...] = data[...] * lstm_scale
    model = load_elmo(options_path, weights_path)
    docs = [["Héllo", "wörld", "😀", "!"], ["a"], ["", "x" * 70, "tokens", "again", "a", "b"]]
    with torch.inference_mode():
        got = model(docs)
        got64 = model.double()(docs)
    for doc, layers, layers64 in zip(docs, got, got64):
        expected, bound32 = numpy_elmo(weights_path, opts, doc)
        _, bound64 = numpy_elmo(weights_path, opts, doc, u=2.0**-53)
        assert layers.shape == (opts.n_layers + 1, len(doc), 2 * opts.projection_dim)
        # Each side within its own rounding bound of the exact values (the reference is float64).
        assert_within(layers64.numpy(), expected, 2 * bound64)
        assert_within(layers.numpy(), expected, bound32 + bound64)
    if opts.proj_clip is not None and lstm_scale == 5:
        top = torch.cat([g[1:].flatten() for g in got]).abs()
        if not opts.skip_connections:
            assert top.max() <= opts.proj_clip + 1e-6
        assert (top >= opts.proj_clip - 1e-6).any(), "the test should reach the clipping"


def test_batch_invariance_mixed_lengths(tmp_path):
    model = load_elmo(*write_random_elmo(tmp_path, tiny_options(), seed=1))
    docs = [[f"w{i % 7}" for i in range(n)] for n in (1, 17, 4, 40, 2, 9)]
    with torch.inference_mode():
        batch = model(docs)
        reversed_batch = model(docs[::-1])[::-1]
        for doc, b, r in zip(docs, batch, reversed_batch):
            alone = model([doc])[0]
            np.testing.assert_allclose(b.numpy(), alone.numpy(), atol=1e-5, rtol=0)
            np.testing.assert_allclose(r.numpy(), alone.numpy(), atol=1e-5, rtol=0)
            # Layer 0 is the token vector twice.
            half = b.shape[-1] // 2
            torch.testing.assert_close(b[0, :, :half], b[0, :, half:])


def test_long_documents_cross_input_chunks(tmp_path, monkeypatch):
    import skembed.elmo.model as model_module

    model = load_elmo(*write_random_elmo(tmp_path, tiny_options(), seed=2))
    docs = [[f"t{i}" for i in range(30)], ["short", "one"]]
    with torch.inference_mode():
        whole = model(docs)
        # Input projections computed 4 steps at a time must give the same result.
        monkeypatch.setattr(model_module, "_CHUNK_BYTES", 4 * 8 * 2 * 4 * 12)
        chunked = model(docs)
    for a, b in zip(whole, chunked):
        # Other matmul shapes, other kernels: within batch invariance, not bit for bit.
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=CONTRACT_ATOL, rtol=0)
