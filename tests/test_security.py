"""Untrusted model files never run code (see docs/security.md).

Each test crafts a file of a format skembed reads whose pickle would run a command that
creates a marker file, shows that skembed refuses it with an error naming the file, and that
the marker was never created.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from tiny_embedders import build_files

import skembed
from skembed.flair import CharLM, UnsafeModelFileError
from skembed.flair.unpickle import load_pt, save_pt
from skembed.transfo_xl import UnsafeVocabularyError


class Payload:
    """Pickles as ``os.system("touch <marker>")``: what a malicious model file would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "code-ran"
    yield path
    assert not path.exists(), "a model file ran code"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return build_files(tmp_path_factory.mktemp("security"))


def test_the_payload_is_live(tmp_path):
    """Control: unpickled without restrictions, the payload does run its command."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


# -- Flair .pt files: a restricted unpickler ---------------------------------------------------
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("where", ["dictionary", "state_dict", "top level"])
def test_flair_file_with_a_command_is_refused(tmp_path, files, marker, legacy, where):
    state = load_pt(files["flair"])
    if where == "dictionary":
        state["dictionary"] = Payload(marker)
    elif where == "state_dict":
        state["state_dict"]["encoder.weight"] = Payload(marker)
    else:
        state["hook"] = Payload(marker)
    path = tmp_path / "evil.pt"
    save_pt(state, path, legacy=legacy)  # Flair's layout; only the payload is foreign
    with pytest.raises(UnsafeModelFileError, match=r"evil.pt.*posix.system|evil.pt.*os.system"):
        CharLM.load(path)
    with pytest.raises(UnsafeModelFileError, match="nothing from the file was executed"):
        skembed.FlairEmbeddings(str(path), device="cpu").fit()


def test_a_whole_flair_model_is_refused_with_advice(tmp_path, files, marker, monkeypatch):
    # A stand-in for flair.models.SequenceTagger, importable only while the file is written.
    flair, models = types.ModuleType("flair"), types.ModuleType("flair.models")

    class SequenceTagger:
        def __reduce__(self):
            return (SequenceTagger, ())

    SequenceTagger.__module__, SequenceTagger.__qualname__ = "flair.models", "SequenceTagger"
    models.SequenceTagger, flair.models = SequenceTagger, models
    monkeypatch.setitem(sys.modules, "flair", flair)
    monkeypatch.setitem(sys.modules, "flair.models", models)
    state = load_pt(files["flair"])
    state["model"] = SequenceTagger()
    path = tmp_path / "tagger.pt"
    save_pt(state, path)
    monkeypatch.undo()
    with pytest.raises(
        UnsafeModelFileError, match=r"flair.models.SequenceTagger.*LanguageModel.save"
    ):
        CharLM.load(path)


# -- PyTorch .bin checkpoints: torch.load(weights_only=True) -----------------------------------
def test_transformer_checkpoint_with_a_command_is_refused(tmp_path, tiny_model, marker):
    from safetensors.torch import load_file

    folder = tmp_path / "bert"
    shutil.copytree(tiny_model("bert"), folder)
    weights = load_file(str(folder / "model.safetensors"))
    weights["hook"] = Payload(marker)
    torch.save(weights, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(
        ValueError,
        match=r"(?s)Refusing the model weights in .*bert .*pytorch_model.bin.*GLOBAL posix.system",
    ):
        skembed.TransformerEmbeddings(str(folder), device="cpu").fit()


def test_transformer_xl_checkpoint_with_a_command_is_refused(tmp_path, files, marker):
    from safetensors.torch import load_file

    folder = tmp_path / "txl"
    shutil.copytree(files["transfo-xl"], folder)
    weights = load_file(str(folder / "model.safetensors"))
    weights["hook"] = Payload(marker)
    torch.save(weights, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(
        ValueError, match=r"pytorch_model.bin: refused by torch.load\(weights_only=True\)"
    ):
        skembed.TransformerXLEmbeddings(str(folder), device="cpu").fit()


@pytest.mark.parametrize("filename", ["vocab.pkl", "vocab.bin"])
def test_transformer_xl_vocabulary_with_a_command_is_refused(tmp_path, files, marker, filename):
    folder = tmp_path / "txl"
    shutil.copytree(files["transfo-xl"], folder, ignore=shutil.ignore_patterns("vocab.*"))
    data = {"idx2sym": ["<unk>", "the"], "unk_idx": 0, "sym2idx": {"<unk>": 0, "the": 1},
            "moses": Payload(marker)}  # fmt: skip
    if filename == "vocab.pkl":
        (folder / filename).write_bytes(pickle.dumps(data))
    else:
        torch.save(data, folder / filename)
    with pytest.raises(UnsafeVocabularyError, match=filename):
        skembed.TransformerXLEmbeddings(str(folder), device="cpu").fit()


def test_remote_code_in_a_model_folder_is_never_imported(tmp_path, tiny_model, marker):
    """A config asking for custom code (``auto_map``) does not get it: trust_remote_code stays off."""
    folder = tmp_path / "bert"
    shutil.copytree(tiny_model("bert"), folder)
    (folder / "evil.py").write_text(f"import os\nos.system('touch {marker}')\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.Config", "AutoModel": "evil.Model"}
    (folder / "config.json").write_text(json.dumps(config))
    # transformers ignores auto_map without trust_remote_code: the folder loads as BERT.
    emb = skembed.TransformerEmbeddings(str(folder), device="cpu").fit()
    assert type(emb._get_model().model).__name__ == "BertModel"


# -- word vectors: gensim pickles restricted, numpy arrays without pickles ---------------------
def test_gensim_file_with_a_command_is_refused(tmp_path, marker):
    pytest.importorskip("gensim")
    path = tmp_path / "evil.kv"
    path.write_bytes(pickle.dumps(Payload(marker), protocol=4))
    with pytest.raises(
        ValueError, match=r"evil.kv is not a readable gensim KeyedVectors file: refusing"
    ):
        skembed.WordEmbeddings(str(path), device="cpu").fit()


def test_gensim_vectors_array_holding_a_pickle_is_refused(tmp_path, marker):
    gensim = pytest.importorskip("gensim")
    kv = gensim.models.KeyedVectors(vector_size=3)
    kv.add_vectors(["the", "cat"], np.eye(2, 3, dtype=np.float32))
    path = tmp_path / "vectors.kv"
    kv.save(str(path), sep_limit=0)  # the array goes to vectors.kv.vectors.npy
    side = tmp_path / "vectors.kv.vectors.npy"
    assert side.is_file()
    np.save(side, np.array([Payload(marker), Payload(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(
        ValueError, match=r"vectors.kv.vectors.npy is not a plain numeric array.*refusing"
    ):
        skembed.WordEmbeddings(str(path), device="cpu").fit()


# -- ELMo: HDF5 and JSON are data; a dataset that is not floats is refused ---------------------
def test_elmo_weights_holding_a_pickle_are_refused(tmp_path, files, marker):
    options, weights = map(Path, files["elmo"])
    evil = tmp_path / "weights.hdf5"
    shutil.copy(weights, evil)
    with h5py.File(evil, "r+") as f:
        shape = f["char_embed"].shape
        del f["char_embed"]
        blob = np.frombuffer(pickle.dumps(Payload(marker)), dtype=np.uint8)
        f["char_embed"] = np.broadcast_to(np.void(blob.tobytes()), shape)
        f["CNN"].attrs["hook"] = np.void(blob.tobytes())
    with pytest.raises(ValueError, match=r"weights.hdf5: dataset 'char_embed' holds .*not floats"):
        skembed.ELMoEmbeddings((str(options), str(evil)), device="cpu").fit()
