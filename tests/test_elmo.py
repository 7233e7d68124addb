"""ELMoEmbeddings: the estimator contract, model resolution, modes, precision and pipelines."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from tolerances import float32_mean_atol

import skembed
from skembed import DocumentPoolEmbeddings, ELMoEmbeddings
from skembed.elmo import (
    ELMO_MODELS,
    ElmoModel,
    ElmoOptions,
    load_elmo,
    resolve_elmo,
    write_random_elmo,
)
from skembed.resolve import ModelNotFoundError

DATA = Path(__file__).parent / "data" / "elmo"
FIXTURE = (str(DATA / "options.json"), str(DATA / "lm_weights.hdf5"))


@pytest.fixture(scope="module")
def tiny_elmo(tmp_path_factory) -> tuple[str, str]:
    options = ElmoOptions.from_dict(
        {
            "char_cnn": {
                "embedding": {"dim": 4},
                "filters": [[1, 4], [2, 4], [3, 8]],
                "n_highway": 1,
                "activation": "tanh",
            },
            "lstm": {"dim": 16, "projection_dim": 6, "n_layers": 2, "cell_clip": 3, "proj_clip": 3},
        }
    )
    paths = write_random_elmo(tmp_path_factory.mktemp("elmo"), options, seed=0)
    return tuple(str(p) for p in paths)


@pytest.fixture
def count_forward(monkeypatch):
    """Count the documents the network runs on."""
    calls = []
    original = ElmoModel.forward

    def counting(self, docs):
        calls.append(len(docs))
        return original(self, docs)

    monkeypatch.setattr(ElmoModel, "forward", counting)
    skembed.clear_cache(models=False)
    return calls


def test_fixture_through_the_estimator_matches_tensorflow():
    sentences = json.loads((DATA / "sentences.json").read_text())
    docs = [sentences[k][0] for k in range(3)]
    elmo = ELMoEmbeddings(model=FIXTURE, embedding_mode="top", device="cpu").fit()
    out = elmo.transform(docs)
    for k in range(3):
        with h5py.File(DATA / f"lm_embeddings_{k}.hdf5", "r") as f:
            expected = np.concatenate(f["0"][...], axis=-1)
        np.testing.assert_allclose(out[k], expected, atol=1e-5, rtol=0)
    everything = elmo.set_params(embedding_mode="all").fit().transform(docs)
    average = elmo.set_params(embedding_mode="average").fit().transform(docs)
    for k in range(3):
        layers = everything[k].reshape(len(out[k]), 3, 32)
        np.testing.assert_allclose(layers[:, 2], out[k], atol=1e-6)
        atol = float32_mean_atol(3, np.abs(layers).max())
        np.testing.assert_allclose(layers.mean(axis=1), average[k], atol=atol)
        np.testing.assert_array_equal(layers[:, 0, :16], layers[:, 0, 16:])


def test_modes_shapes_and_feature_names(tiny_elmo):
    docs = ["one two three", "four", ""]
    widths = {"all": 36, "top": 12, "average": 12}
    for mode, width in widths.items():
        elmo = ELMoEmbeddings(model=tiny_elmo, embedding_mode=mode, device="cpu").fit()
        out = elmo.transform(docs)
        assert elmo.n_features_out_ == width
        assert [out[i].shape for i in range(3)] == [(3, width), (1, width), (0, width)]
        assert list(elmo.get_feature_names_out()[:2]) == ["elmo_0", "elmo_1"]


def test_switching_mode_reuses_the_forward_pass(tiny_elmo, count_forward):
    docs = ["a b c", "d e", "f"]
    elmo = ELMoEmbeddings(model=tiny_elmo, device="cpu").fit()
    for mode in ("all", "top", "average", "all"):
        elmo.set_params(embedding_mode=mode).fit().transform(docs)
    assert sum(count_forward) == 3


def test_batch_invariance_and_no_state_between_calls(tiny_elmo):
    skembed.set_cache(enabled=False)
    try:
        docs = [" ".join(f"w{i}" for i in range(n)) for n in (12, 1, 5, 30, 2)]
        elmo = ELMoEmbeddings(model=tiny_elmo, device="cpu", batch_size=3).fit()
        together = elmo.transform(docs)
        for i, doc in enumerate(docs):
            alone = elmo.transform([doc])
            np.testing.assert_allclose(together[i], alone[0], atol=1e-5, rtol=0)
        again = elmo.set_params(batch_size=1).transform(docs[::-1])
        for i in range(len(docs)):
            np.testing.assert_allclose(together[i], again[len(docs) - 1 - i], atol=1e-5, rtol=0)
    finally:
        skembed.set_cache(enabled=True)


def test_invalid_embedding_mode_lists_the_choices(tiny_elmo):
    with pytest.raises(ValueError, match=r"embedding_mode='last'.*\['all', 'top', 'average'\]"):
        ELMoEmbeddings(model=tiny_elmo, embedding_mode="last", device="cpu").fit()


def test_init_only_stores_and_clone_shares_the_model(tiny_elmo):
    elmo = ELMoEmbeddings(model="no-such-model", embedding_mode="bogus")
    assert elmo.get_params()["model"] == "no-such-model"
    first = ELMoEmbeddings(model=tiny_elmo, device="cpu").fit()
    second = clone(first).fit()
    assert first._model is second._model


def test_pickle_round_trip(tiny_elmo):
    elmo = ELMoEmbeddings(model=tiny_elmo, embedding_mode="average", device="cpu").fit()
    before = elmo.transform(["pickled model", "works"])
    restored = pickle.loads(pickle.dumps(elmo))
    assert "_model" not in restored.__dict__
    after = restored.transform(["pickled model", "works"])
    np.testing.assert_allclose(before.to_numpy(), after.to_numpy(), atol=1e-6)


def test_grid_search_over_mode_and_pooling_runs_the_network_once(tiny_elmo, count_forward):
    docs = [f"good {w} movie" for w in "abcdefgh"] + [f"bad {w} film here" for w in "abcdefgh"]
    y = [1] * 8 + [0] * 8
    pipe = Pipeline(
        [
            ("elmo", ELMoEmbeddings(model=tiny_elmo, device="cpu")),
            ("pool", DocumentPoolEmbeddings()),
            ("clf", LogisticRegression(max_iter=200)),
        ]
    )
    grid = {"elmo__embedding_mode": ["all", "top", "average"], "pool__pooling": ["mean", "max"]}
    search = GridSearchCV(pipe, grid, cv=2).fit(docs, y)
    assert len(search.cv_results_["params"]) == 6
    assert search.best_score_ == 1.0  # the classes differ in their first token
    assert sum(count_forward) == len(docs)


DOCS = ["The U.S. Centers for Disease Control", "Brent North Sea crude for November"]


# oneDNN is switched off in these two tests: on some virtual machines the CPU reports AMX that
# the kernel does not enable, and oneDNN's half-precision kernels then fail or kill the process.
@pytest.mark.filterwarnings("ignore:TF32 acceleration")
@pytest.mark.parametrize("dtype, max_abs", [(torch.float16, 0.01), (torch.bfloat16, 0.1)])
def test_lstm_math_under_autocast(dtype, max_abs):
    model = load_elmo(*FIXTURE)
    docs = [d.split() for d in DOCS]
    with torch.inference_mode(), torch.backends.mkldnn.flags(enabled=False):
        ref = torch.cat([s.flatten() for s in model(docs)]).numpy()
        with torch.autocast("cpu", dtype=dtype):
            states = model(docs)
    # Matmuls round to 11 (float16) or 8 (bfloat16) mantissa bits; cells stay float32.
    assert all(s.dtype == torch.float32 for s in states)
    got = torch.cat([s.flatten() for s in states]).numpy()
    assert 0 < np.abs(got - ref).max() < max_abs
    assert np.corrcoef(got, ref)[0, 1] > 0.9999


@pytest.mark.filterwarnings("ignore:TF32 acceleration")
def test_float16_precision_through_the_estimator():
    ref = ELMoEmbeddings(model=FIXTURE, device="cpu").fit().transform(DOCS).to_numpy()
    elmo = ELMoEmbeddings(model=FIXTURE, device="cpu", precision="float16")
    try:
        elmo.fit()
    except ValueError as exc:  # skembed refuses a precision this CPU cannot run
        pytest.skip(str(exc))
    with torch.backends.mkldnn.flags(enabled=False):
        out = elmo.transform(DOCS)
    assert out.data.dtype == torch.float32
    assert 0 < np.abs(out.to_numpy() - ref).max() < 0.01


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["float32", "float16", "bfloat16"])
def test_cuda_matches_cpu(precision):
    ref = ELMoEmbeddings(model=FIXTURE, device="cpu").fit().transform(DOCS).to_numpy()
    out = ELMoEmbeddings(model=FIXTURE, device="cuda", precision=precision).fit().transform(DOCS)
    assert out.data.device.type == "cuda"
    tolerance = {"float32": 1e-4, "float16": 0.01, "bfloat16": 0.1}[precision]
    assert np.abs(out.to_numpy() - ref).max() < tolerance


# -- model resolution ----------------------------------------------------------------------------
def test_unknown_id_offline_names_the_places_and_urls(tmp_path, monkeypatch):
    monkeypatch.setenv("SKEMBED_HOME", str(tmp_path))
    with pytest.raises(ModelNotFoundError) as info:
        ELMoEmbeddings(model="original", device="cpu").fit()
    message = str(info.value)
    assert "Could not find ELMo model 'original'" in message
    for url in ELMO_MODELS["original"]:
        assert url in message
        assert str(tmp_path / url.rsplit("/", 1)[1]) in message
    assert "Downloads are disabled" in message


def test_ids_resolve_from_the_skembed_cache(tmp_path, monkeypatch, tiny_elmo):
    monkeypatch.setenv("SKEMBED_HOME", str(tmp_path))
    for url, source in zip(ELMO_MODELS["pubmed"], tiny_elmo):
        (tmp_path / url.rsplit("/", 1)[1]).write_bytes(Path(source).read_bytes())
    options, weights = resolve_elmo("PubMed")
    assert weights.name == "elmo_2x4096_512_2048cnn_2xhighway_weights_PubMed_only.hdf5"
    assert ELMoEmbeddings(model="pubmed", device="cpu").fit().n_features_out_ == 36


def test_ids_download_when_allowed(tmp_path, monkeypatch, tiny_elmo):
    import skembed.elmo.files as files

    monkeypatch.setenv("SKEMBED_HOME", str(tmp_path))
    monkeypatch.delenv("SKEMBED_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    fetched = []

    def fake_download(url, dest):
        fetched.append(url)
        source = tiny_elmo[0] if url.endswith(".json") else tiny_elmo[1]
        dest.write_bytes(Path(source).read_bytes())
        return dest

    monkeypatch.setattr(files, "download", fake_download)
    options, weights = resolve_elmo("small")
    assert fetched == list(ELMO_MODELS["small"])
    assert options.parent == weights.parent == tmp_path

    def failing(url, dest):
        raise OSError("network unreachable")

    monkeypatch.setattr(files, "download", failing)
    with pytest.raises(ModelNotFoundError, match=r"(?s)'medium'.*download failed: network"):
        resolve_elmo("medium")


def test_directory_and_pair_resolution(tmp_path, tiny_elmo):
    folder = Path(tiny_elmo[0]).parent
    assert resolve_elmo(folder) == tuple(Path(p) for p in tiny_elmo)
    assert resolve_elmo(list(tiny_elmo)) == tuple(Path(p) for p in tiny_elmo)
    # The fixture folder holds four HDF5 files: ambiguous.
    with pytest.raises(ValueError, match="exactly one options file.*lm_weights.hdf5"):
        resolve_elmo(DATA)
    with pytest.raises(ValueError, match="is a single file"):
        resolve_elmo(tiny_elmo[0])
    with pytest.raises(FileNotFoundError, match="weights file .*missing.hdf5 does not exist"):
        resolve_elmo((tiny_elmo[0], tmp_path / "missing.hdf5"))
    with pytest.raises(ModelNotFoundError, match=r"not one of the ids \['small'"):
        resolve_elmo("elmo-large")
    with pytest.raises(TypeError, match="model must be an id"):
        ELMoEmbeddings(model=3, device="cpu").fit()
