"""FlairEmbeddings as an estimator: ids and caches, batching, state cache, pickling, pipelines."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from tolerances import CONTRACT_ATOL

import skembed
from skembed import cache_info, clear_cache
from skembed.flair import PRETRAINED, CharLM, FlairEmbeddings, canonical_id, resolve_model_file
from skembed.flair.ids import cache_filename
from skembed.resolve import ModelNotFoundError

CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,!?\n"
DOCS = ["The cat sat on the mat .", "x", "Hello World !", "a b c d e f g h", "Good dogs run ."]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_lm(forward=True, seed=0, **kw) -> CharLM:
    torch.manual_seed(seed)
    sizes = {"hidden_size": 10, "embedding_size": 4, **kw}
    return CharLM(CHARS, is_forward_lm=forward, **sizes).eval()


@pytest.fixture()
def lm_path(tmp_path):
    path = tmp_path / "lm.pt"
    make_lm().save(path)
    return path


# -- ids and where files are looked for ------------------------------------------
def test_every_published_id_is_known_and_cached_like_flair():
    assert len(PRETRAINED) == 103
    for model_id in PRETRAINED:
        assert canonical_id(model_id.upper()) == model_id
    assert canonical_id("german-forward") == "de-forward"
    assert canonical_id("German-Backward") == "de-backward"
    assert canonical_id("norwegian-forward") == "no-forward"
    assert canonical_id("news-sideways") is None
    assert cache_filename("news-forward") == "news-forward-0.4.1.pt"
    assert cache_filename("en-forward") == "news-forward-0.4.1.pt"  # same URL, same file
    assert cache_filename("uk-backward") == "uk-backward/best-lm.pt"  # best-lm.pt is shared


def test_every_id_resolves_from_flairs_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAIR_CACHE_ROOT", str(tmp_path / "flair"))
    folder = tmp_path / "flair" / "embeddings"
    for model_id in PRETRAINED:
        target = folder / cache_filename(model_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    for model_id in PRETRAINED:
        path, found_id = resolve_model_file(model_id)
        assert path == folder / cache_filename(model_id) and found_id == model_id
    path, _ = resolve_model_file("German-Forward")
    assert path.name == "lm-mix-german-forward-v0.2rc.pt"


def test_ids_load_from_both_caches(tmp_path, monkeypatch, lm_path):
    monkeypatch.setenv("FLAIR_CACHE_ROOT", str(tmp_path / "flair"))
    flair_file = tmp_path / "flair" / "embeddings" / "lm-news-english-forward-1024-v0.2rc.pt"
    flair_file.parent.mkdir(parents=True)
    flair_file.write_bytes(lm_path.read_bytes())
    skembed_file = tmp_path / "home" / "pubmed-backward.pt"
    skembed_file.parent.mkdir()
    make_lm(forward=False).save(skembed_file)
    monkeypatch.setenv("SKEMBED_HOME", str(tmp_path / "home"))
    by_path = FlairEmbeddings(str(lm_path), device="cpu").fit().transform(DOCS)
    by_id = FlairEmbeddings("news-forward-fast", device="cpu").fit().transform(DOCS)
    np.testing.assert_array_equal(by_id.to_numpy(), by_path.to_numpy())
    backward = FlairEmbeddings("pubmed-backward", device="cpu").fit()
    assert backward._get_model().is_forward_lm is False


def test_missing_id_names_the_places_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAIR_CACHE_ROOT", str(tmp_path / "flair"))
    with pytest.raises(ModelNotFoundError) as err:
        FlairEmbeddings("news-backward-fast", device="cpu").fit()
    text = str(err.value)
    assert "news-backward-fast" in text
    assert (
        str(tmp_path / "flair" / "embeddings" / "lm-news-english-backward-1024-v0.2rc.pt") in text
    )
    assert PRETRAINED["news-backward-fast"] in text
    with pytest.raises(ModelNotFoundError, match="did you mean 'news-forward'"):
        FlairEmbeddings("news-froward", device="cpu").fit()


def test_impresso_ids_lower_case_the_text_as_flair_does(tmp_path, monkeypatch, lm_path):
    monkeypatch.setenv("FLAIR_CACHE_ROOT", str(tmp_path / "flair"))
    target = tmp_path / "flair" / "embeddings" / "en-impresso-hipe-v1-forward" / "best-lm.pt"
    target.parent.mkdir(parents=True)
    target.write_bytes(lm_path.read_bytes())
    hipe = FlairEmbeddings("en-impresso-hipe-v1-forward", device="cpu").fit()
    plain = FlairEmbeddings(str(lm_path), device="cpu").fit()
    np.testing.assert_allclose(
        hipe.transform(["Hello World"])[0], plain.transform(["hello world"])[0], atol=1e-6
    )


def test_training_folder_with_best_lm(tmp_path, lm_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best-lm.pt").write_bytes(lm_path.read_bytes())
    out = FlairEmbeddings(str(tmp_path / "run"), device="cpu").fit().transform(DOCS)
    assert out.dim == 10


# -- estimator behaviour ------------------------------------------------------------
def test_batch_invariance_and_chunking(lm_path):
    alone = [FlairEmbeddings(str(lm_path), device="cpu").fit().transform([d])[0] for d in DOCS]
    clear_cache(models=False)
    batched = FlairEmbeddings(str(lm_path), device="cpu", batch_size=4, chars_per_chunk=5).fit()
    out = batched.transform(DOCS + [""])
    for i, want in enumerate(alone):
        np.testing.assert_allclose(out[i], want, atol=CONTRACT_ATOL)
    assert out[len(DOCS)].shape == (0, 10)
    assert list(batched.get_feature_names_out()[:2]) == ["flair_0", "flair_1"]


def test_with_whitespace_switch_reuses_the_forward_pass(lm_path):
    clear_cache(models=False)
    emb = FlairEmbeddings(str(lm_path), device="cpu").fit()
    first = emb.transform(DOCS)
    misses = cache_info()["state_misses"]
    other = emb.set_params(with_whitespace=False).fit().transform(DOCS)
    assert cache_info()["state_misses"] == misses  # no document ran through the LM again
    assert not np.allclose(first.to_numpy(), other.to_numpy())
    direct = FlairEmbeddings(str(lm_path), with_whitespace=False, device="cpu").fit()
    clear_cache(models=False)
    np.testing.assert_allclose(direct.transform(DOCS).to_numpy(), other.to_numpy(), atol=1e-6)


def test_in_memory_lm_matches_its_file_and_tracks_changes(lm_path):
    lm = CharLM.load(lm_path)
    from_file = FlairEmbeddings(str(lm_path), device="cpu").fit().transform(DOCS)
    emb = FlairEmbeddings(lm, device="cpu").fit()
    np.testing.assert_allclose(emb.transform(DOCS).to_numpy(), from_file.to_numpy(), atol=1e-6)
    assert clone(emb).fit()._model_key() == emb._model_key()  # clones share model and states
    assert lm.training is False and lm.encoder.weight.device.type == "cpu"
    with torch.no_grad():
        lm.encoder.weight.mul_(2.0)  # in-place change: a new fingerprint, new vectors
    changed = emb.fit().transform(DOCS)
    assert not np.allclose(changed.to_numpy(), from_file.to_numpy())


def test_parameter_errors(lm_path):
    with pytest.raises(ValueError, match="with_whitespace"):
        FlairEmbeddings(str(lm_path), with_whitespace="yes", device="cpu").fit()
    with pytest.raises(ValueError, match="chars_per_chunk"):
        FlairEmbeddings(str(lm_path), chars_per_chunk=0, device="cpu").fit()
    with pytest.raises(TypeError, match="model must be"):
        FlairEmbeddings(model=3, device="cpu").fit()


def test_pickled_estimator_reloads_lazily(lm_path):
    emb = FlairEmbeddings(str(lm_path), device="cpu").fit()
    want = emb.transform(DOCS).to_numpy()
    blob = pickle.dumps(emb)
    assert len(blob) < 5000  # the weights are not in the pickle
    clear_cache()
    np.testing.assert_allclose(pickle.loads(blob).transform(DOCS).to_numpy(), want, atol=1e-6)
    in_memory = FlairEmbeddings(CharLM.load(lm_path), device="cpu").fit()
    back = pickle.loads(pickle.dumps(in_memory))
    np.testing.assert_allclose(back.transform(DOCS).to_numpy(), want, atol=1e-6)


def test_exported_from_the_package():
    assert skembed.FlairEmbeddings is FlairEmbeddings
    assert "FlairEmbeddings" in skembed.__all__


def test_pipeline_with_forward_and_backward_side_by_side(tmp_path):
    stacked = getattr(skembed, "StackedEmbeddings", None)
    if stacked is None:
        pytest.skip("skembed.StackedEmbeddings is not available in this checkout")
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    make_lm(forward=True, seed=1).save(tmp_path / "fw.pt")
    make_lm(forward=False, seed=2, nout=6).save(tmp_path / "bw.pt")
    texts = ["good fun day", "great nice film", "bad awful day", "terrible poor film"] * 3
    labels = [1, 1, 0, 0] * 3
    pipe = make_pipeline(
        stacked(
            [
                ("fw", FlairEmbeddings(str(tmp_path / "fw.pt"), device="cpu")),
                ("bw", FlairEmbeddings(str(tmp_path / "bw.pt"), device="cpu")),
            ]
        ),
        skembed.DocumentPoolEmbeddings(pooling="mean"),
        LogisticRegression(C=100.0, max_iter=1000),
    )
    pipe.fit(texts, labels)
    assert pipe[0].n_features_out_ == 10 + 6
    predicted = pipe.predict(texts)
    assert (predicted == np.array(labels)).mean() >= 0.75
    clear_cache()
    back = pickle.loads(pickle.dumps(pipe))
    np.testing.assert_array_equal(back.predict(texts), predicted)
    np.testing.assert_allclose(back.predict_proba(texts), pipe.predict_proba(texts), atol=1e-6)
