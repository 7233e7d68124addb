"""Flair LM files (old and new format) and token vectors against a direct LSTM computation."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from skembed.flair import CharLM, FlairEmbeddings, UnsafeModelFileError
from skembed.flair.unpickle import load_pt, save_pt

CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,!?\n"
DOCS = [
    ["The", "cat", "sat", "on", "the", "mat", "."],
    ["x"],
    ["Zürich", "is", "nice", "🙂", "!"],  # ü and the emoji are not in the dictionary
    ["a", "much", "longer", "sentence", "with", "quite", "a", "few", "more", "tokens"],
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def direct_outputs(state: dict, text: str) -> np.ndarray:
    """The LM's output at every character of ``text``: an LSTM/GRU written out in float64."""
    sd = {k: v.double().numpy() for k, v in state["state_dict"].items()}
    item2idx = state["dictionary"].item2idx
    x = sd["encoder.weight"][[item2idx.get(c.encode("utf-8"), 0) for c in text]]
    gru = state.get("recurrent_type", "lstm") == "gru"
    for layer in range(state["nlayers"]):
        w_ih, w_hh = sd[f"rnn.weight_ih_l{layer}"], sd[f"rnn.weight_hh_l{layer}"]
        b_ih, b_hh = sd[f"rnn.bias_ih_l{layer}"], sd[f"rnn.bias_hh_l{layer}"]
        h = np.zeros(w_hh.shape[1])
        c = np.zeros_like(h)
        outs = []
        for x_t in x:
            if gru:
                gi, gh = w_ih @ x_t + b_ih, w_hh @ h + b_hh
                r = _sigmoid(gi[: len(h)] + gh[: len(h)])
                z = _sigmoid(gi[len(h) : 2 * len(h)] + gh[len(h) : 2 * len(h)])
                n = np.tanh(gi[2 * len(h) :] + r * gh[2 * len(h) :])
                h = (1 - z) * n + z * h
            else:
                i, f, g, o = np.split(w_ih @ x_t + b_ih + w_hh @ h + b_hh, 4)
                c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
                h = _sigmoid(o) * np.tanh(c)
            outs.append(h)
        x = np.stack(outs)
    if "proj.weight" in sd:
        x = x @ sd["proj.weight"].T + sd["proj.bias"]
    return x


def expected_vectors(state: dict, tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each token read at the documented index of ``"\\n" + text + " "``: with and without
    the whitespace."""
    text = " ".join(tokens)
    forward = state["is_forward_lm"]
    outputs = direct_outputs(state, "\n" + (text if forward else text[::-1]) + " ")
    index, start = [], 0
    for token in tokens:
        end = start + len(token)
        index.append(1 + end if forward else 1 + len(text) - start)
        start = end + 1
    index = np.array(index)
    return outputs[index], outputs[index - 1]


def write_lm(path, *, forward=True, nlayers=1, nout=None, legacy=False, rnn="lstm", seed=0):
    torch.manual_seed(seed)
    lm = CharLM(
        CHARS,
        is_forward_lm=forward,
        hidden_size=12,
        nlayers=nlayers,
        embedding_size=5,
        nout=nout,
        recurrent_type=rnn,
    )
    lm.save(path, legacy=legacy)
    return path


@pytest.mark.parametrize("legacy", [False, True], ids=["new", "0.4.x"])
@pytest.mark.parametrize("nout", [None, 7], ids=["noproj", "proj"])
@pytest.mark.parametrize("nlayers", [1, 2])
@pytest.mark.parametrize("forward", [True, False], ids=["fw", "bw"])
def test_vectors_equal_direct_lstm(tmp_path, legacy, nout, nlayers, forward):
    path = write_lm(tmp_path / "lm.pt", forward=forward, nlayers=nlayers, nout=nout, legacy=legacy)
    state = load_pt(path)
    assert ("document_delimiter" in state) is not legacy
    expected = [expected_vectors(state, doc) for doc in DOCS]
    for with_whitespace in (True, False):
        for chars_per_chunk in (512, 3):
            emb = FlairEmbeddings(
                str(path),
                with_whitespace=with_whitespace,
                chars_per_chunk=chars_per_chunk,
                device="cpu",
                batch_size=3,
            ).fit()
            out = emb.transform(DOCS)
            assert emb.n_features_out_ == (nout or 12)
            for i in range(len(DOCS)):
                want = expected[i][0 if with_whitespace else 1]
                np.testing.assert_allclose(out[i], want, atol=1e-5, rtol=0)


def test_gru_model_equals_direct_computation(tmp_path):
    path = write_lm(tmp_path / "gru.pt", rnn="gru", nlayers=2)
    state = load_pt(path)
    out = FlairEmbeddings(str(path), chars_per_chunk=4, device="cpu").fit().transform(DOCS)
    for i, doc in enumerate(DOCS):
        np.testing.assert_allclose(out[i], expected_vectors(state, doc)[0], atol=1e-5)


def test_documented_positions_by_hand(tmp_path):
    """For "ab c" a forward LM reads "\\nab c ": "ab" at index 3 and "c" at 5 (2 and 4 without
    the whitespace)."""
    path = write_lm(tmp_path / "lm.pt")
    state = load_pt(path)
    outputs = direct_outputs(state, "\nab c ")
    got = FlairEmbeddings(str(path), device="cpu").fit().transform([["ab", "c"]])[0]
    np.testing.assert_allclose(got, outputs[[3, 5]], atol=1e-5)
    got = FlairEmbeddings(str(path), with_whitespace=False, device="cpu").fit()
    np.testing.assert_allclose(got.transform([["ab", "c"]])[0], outputs[[2, 4]], atol=1e-5)


def test_save_load_round_trip_both_formats(tmp_path):
    torch.manual_seed(3)
    lm = CharLM(CHARS, is_forward_lm=False, hidden_size=6, nlayers=2, embedding_size=3, nout=4)
    for legacy in (False, True):
        lm.save(tmp_path / "m.pt", legacy=legacy)
        back = CharLM.load(tmp_path / "m.pt")
        assert back.is_forward_lm is False and back.nout == 4 and back.nlayers == 2
        assert back.dictionary == lm.dictionary
        for key, value in lm.state_dict().items():
            assert torch.equal(back.state_dict()[key], value), key
    # Protocol 2 (bytes stored through _codecs.encode), as torch.save wrote by default.
    save_pt(lm.file_state(legacy=True), tmp_path / "p2.pt", legacy=True, protocol=2)
    assert CharLM.load(tmp_path / "p2.pt").dictionary == lm.dictionary
    state = load_pt(tmp_path / "m.pt")
    assert set(state) == {
        "state_dict",
        "dictionary",
        "is_forward_lm",
        "hidden_size",
        "nlayers",
        "embedding_size",
        "nout",
        "dropout",
    }
    assert state["dictionary"].idx2item[0] == b"<unk>"


def test_model_without_decoder_and_extra_keys(tmp_path):
    lm = CharLM(CHARS, hidden_size=6, embedding_size=3, has_decoder=False)
    lm.save(tmp_path / "nodec.pt", epoch=3, optimizer_state_dict={"state": {}, "param_groups": []})
    back = CharLM.load(tmp_path / "nodec.pt")
    assert back.decoder is None and back.embedding_length == 6


def test_not_a_language_model_file_is_a_clear_error(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a Flair character language model"):
        CharLM.load(tmp_path / "other.pt")


class _Payload:
    """Pickles as a call of ``func(*args)``: what a malicious model file would carry."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize(
    "func, name", [(os.system, "system"), (eval, "eval"), (pickle.loads, "loads")]
)
def test_file_with_pickled_callable_is_refused_and_nothing_runs(tmp_path, legacy, func, name):
    marker = tmp_path / "ran"
    if func is os.system:
        payload = _Payload(os.system, f"touch {marker}")
    elif func is eval:
        payload = _Payload(eval, f"open({str(marker)!r}, 'w').close()")
    else:
        payload = _Payload(pickle.loads, pickle.dumps(_Payload(os.system, f"touch {marker}")))
    path = write_lm(tmp_path / "lm.pt")
    state = load_pt(path)
    state["dictionary"] = payload
    torch.save(state, tmp_path / "evil.pt", _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UnsafeModelFileError, match=name) as err:
        CharLM.load(tmp_path / "evil.pt")
    assert "Nothing from the file was executed" in str(err.value) or "nothing" in str(err.value)
    with pytest.raises(UnsafeModelFileError):
        FlairEmbeddings(str(tmp_path / "evil.pt"), device="cpu").fit()
    assert not marker.exists()


def test_dictionary_state_is_checked(tmp_path):
    path = write_lm(tmp_path / "lm.pt")
    state = load_pt(path)
    bad = state["dictionary"]
    bad.__class__ = type("Odd", (type(bad),), {"__getstate__": lambda self: {"idx2item": [1]}})
    save_pt(state, tmp_path / "bad.pt")
    with pytest.raises(UnsafeModelFileError, match="non-bytes"):
        CharLM.load(tmp_path / "bad.pt")


def test_unknown_characters_map_to_unk():
    lm = CharLM("ab", hidden_size=4, embedding_size=2)
    assert lm.dictionary.encode("ab€z\U0001f642").tolist() == [1, 2, 0, 0, 0]
    assert lm.encode_text("ab").tolist() == [1, 2]
    backward = CharLM("ab", is_forward_lm=False, hidden_size=4, embedding_size=2)
    assert backward.encode_text("ab").tolist() == [2, 1]
