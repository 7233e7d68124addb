"""TransformerXLEmbeddings and the native Transformer-XL against transformers 4.x outputs.

tests/data/transfo_xl/ holds four tiny random Transformer-XL models written by transformers
4.35.2 and every hidden state it computed for the documents of docs.json (see make_fixture.py,
which is not run here).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

import skembed
from skembed import DocumentPoolEmbeddings, TransformerXLEmbeddings
from skembed.resolve import ModelNotFoundError
from skembed.transfo_xl import UnsafeVocabularyError, load_transfo_xl
from skembed.transfo_xl.vocab import load_vocabulary

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SKEMBED_OFFLINE", "1")

DATA = Path(__file__).parent / "data" / "transfo_xl"
DOCS = json.loads((DATA / "docs.json").read_text())
MODELS = ["model_a", "model_b", "model_c", "model_d"]
TOL = 1e-5


def expected(name):
    return np.load(DATA / name / "expected.npz")


def embedder(name="model_a", **kwargs):
    kwargs.setdefault("device", "cpu")
    return TransformerXLEmbeddings(DATA / name, **kwargs)


@pytest.mark.parametrize("name", MODELS)
def test_every_layer_matches_transformers_4(name):
    ref = expected(name)
    emb = embedder(name, layers="all", batch_size=3).fit()
    n_layers = ref["hidden_0"].shape[0]
    d = ref["hidden_0"].shape[2]
    assert emb.n_features_out_ == n_layers * d
    out = emb.transform(DOCS)
    for i, doc in enumerate(DOCS):
        got = out[i].reshape(len(doc), n_layers, d).transpose(1, 0, 2)
        np.testing.assert_allclose(got, ref[f"hidden_{i}"], atol=TOL, rtol=0)


@pytest.mark.parametrize("name", MODELS)
def test_word_ids_match_the_hugging_face_tokenizer(name):
    ref = expected(name)
    vocab = load_vocabulary(DATA / name)
    for i, doc in enumerate(DOCS):
        assert vocab.ids(doc) == ref[f"ids_{i}"].tolist()


def test_unknown_words_are_unk_and_added_tokens_known():
    vocab = load_vocabulary(DATA / "model_a")
    assert vocab.ids(["Zebra", "songs", "<unk>"]) == [vocab.unk_id] * 3
    assert vocab.ids(["<formula>", "<eos>", "the"]) == [74, 1, 2]
    # At the embedding layer a vector depends on the word only: unknown words share <unk>'s.
    out = embedder(layers="0").fit().transform([["Zebra", "okapi", "<unk>"]])[0]
    np.testing.assert_allclose(out[0], out[2], atol=TOL)
    np.testing.assert_allclose(out[1], out[2], atol=TOL)


def test_layer_indices_follow_hidden_states():
    ref = expected("model_c")  # 4 layers: hidden states 0..4
    doc = DOCS[0]
    h = ref["hidden_0"]
    for spec, idx in [("0", [0]), ("-1", [4]), ("1,2,3", [1, 2, 3]), ((4, 0), [4, 0]), (2, [2])]:
        out = embedder("model_c", layers=spec).fit().transform([doc])[0]
        want = np.concatenate([h[j] for j in idx], axis=1)
        np.testing.assert_allclose(out, want, atol=TOL)
    mixed = embedder("model_c", layers="1,2,3", use_scalar_mix=True).fit()
    assert mixed.n_features_out_ == h.shape[2]
    np.testing.assert_allclose(mixed.transform([doc])[0], h[1:4].mean(0), atol=TOL)


def test_combining_parameters_never_rerun_the_network(monkeypatch):
    emb = embedder("model_b", layers="0").fit()
    emb.transform(DOCS)
    calls = []
    original = type(emb)._forward
    monkeypatch.setattr(
        type(emb), "_forward", lambda self, m, d: calls.append(d) or original(self, m, d)
    )
    for params in [dict(layers="all"), dict(layers="-1", use_scalar_mix=True), dict(layers=(1, 0))]:
        emb.set_params(**params).fit().transform(DOCS)
    assert calls == []


def test_batch_invariance_and_long_documents():
    emb = embedder("model_a", layers="all", batch_size=7).fit()
    rng = np.random.default_rng(0)
    words = load_vocabulary(DATA / "model_a").symbols + ["unknown"]
    docs = [list(rng.choice(words, size=n)) for n in (1, 3, 8, 9, 17, 40, 5, 2, 61)]
    together = emb.transform(docs)
    for i, doc in enumerate(docs):
        alone = emb.set_params(batch_size=1).transform([doc])[0]
        assert together[i].shape == (len(doc), emb.n_features_out_)  # every token gets a row
        np.testing.assert_allclose(together[i], alone, atol=TOL)


def test_documents_start_fresh_and_empty_documents():
    emb = embedder("model_c", layers="-1").fit()
    first = emb.transform([DOCS[4], DOCS[0]])[1]
    skembed.clear_cache(models=False)
    again = emb.transform([DOCS[0]])[0]
    np.testing.assert_allclose(first, again, atol=TOL)
    out = emb.transform(["", "the city", []])
    assert out.lengths.tolist() == [0, 2, 0]


def test_vocab_bin_gives_the_same_vocabulary(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(DATA / "model_a", folder)
    (folder / "vocab.pkl").unlink()
    from_bin = load_vocabulary(folder)
    from_pkl = load_vocabulary(DATA / "model_a")
    assert from_bin.index == from_pkl.index and from_bin.unk_id == from_pkl.unk_id == 0


class _Payload:
    """Pickles as a call to a callable that no vocabulary needs (here: creating a file)."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("filename", ["vocab.pkl", "vocab.bin"])
def test_vocabulary_with_a_foreign_callable_is_refused(tmp_path, filename):
    folder = tmp_path / "m"
    shutil.copytree(DATA / "model_b", folder, ignore=shutil.ignore_patterns("vocab.*"))
    marker = tmp_path / "ran"
    data = {"idx2sym": ["<unk>", "the"], "unk_idx": 0, "hook": _Payload(marker)}
    if filename == "vocab.pkl":
        (folder / filename).write_bytes(pickle.dumps(data))
    else:
        torch.save(data, folder / filename)
    with pytest.raises(UnsafeVocabularyError, match="system"):
        load_vocabulary(folder)
    with pytest.raises(UnsafeVocabularyError):
        embedder(folder).fit()
    assert not marker.exists()


def test_inert_tokenizer_objects_are_not_imported():
    # The fixture's vocab.pkl holds sacremoses and tokenizers objects: read without them.
    vocab = load_vocabulary(DATA / "model_b")
    assert len(vocab) == 75 and vocab.symbols[:3] == ["<unk>", "<eos>", "the"]


def test_bad_folders_and_parameters(tmp_path, monkeypatch):
    monkeypatch.setenv("SKEMBED_HOME", str(tmp_path / "home"))
    with pytest.raises(ModelNotFoundError, match="transfo-xl-wt103") as info:
        embedder("transfo-xl-wt103-does-not-exist").fit()
    assert "huggingface.co" in str(info.value)
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="not a Transformer-XL"):
        embedder(bert).fit()
    with pytest.raises(ValueError, match="no config.json"):
        embedder(tmp_path).fit()
    with pytest.raises(ValueError, match="layer 9 does not exist"):
        embedder(layers="9").fit()
    with pytest.raises(ValueError, match="use_scalar_mix"):
        embedder(use_scalar_mix="yes").fit()


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(same_length=True, mem_len=0), "same_length"),
        (dict(attn_type=2), "attn_type"),
        (dict(model_type="gpt2"), "not a Transformer-XL"),
    ],
)
def test_unsupported_configs_are_refused(tmp_path, change, message):
    folder = tmp_path / "m"
    shutil.copytree(DATA / "model_b", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ValueError, match=message):
        embedder(folder).fit()


def test_words_past_the_embedding_table_are_unknown(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(DATA / "model_c", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": 74}))
    weights = load_file(folder / "model.safetensors")
    weights["word_emb.emb_layers.1.weight"] = weights["word_emb.emb_layers.1.weight"][:-1]
    save_file(weights, folder / "model.safetensors")
    loaded = load_transfo_xl(folder)
    assert loaded.vocab.ids(["<formula>", "the"]) == [0, 2]  # id 74 has no embedding


def test_mismatched_config_and_weights(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(DATA / "model_c", folder)
    config = json.loads((folder / "config.json").read_text())
    config["d_inner"] = 21
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="do not match"):
        load_transfo_xl(folder)


def test_pickle_clone_and_tags():
    emb = embedder("model_b", layers="-1,0").fit()
    before = emb.transform(DOCS[:3]).to_numpy()
    restored = pickle.loads(pickle.dumps(emb))
    assert "_model" not in restored.__dict__
    np.testing.assert_allclose(restored.transform(DOCS[:3]).to_numpy(), before, atol=TOL)
    assert clone(emb).get_params() == emb.get_params()
    assert emb.__sklearn_tags__().input_tags.string
    assert emb.get_feature_names_out()[0] == "transfoxl_0"


@pytest.mark.parametrize("precision, tol", [("float16", 0.01), ("bfloat16", 0.1)])
def test_reduced_precision_runs_close(precision, tol):
    # bfloat16 on CPU relies on conftest's ONEDNN_MAX_CPU_ISA (some VMs advertise AMX wrongly).
    ref = embedder("model_a", layers="-1").fit().transform(DOCS).to_numpy()
    low = embedder("model_a", layers="-1", precision=precision).fit().transform(DOCS).to_numpy()
    assert low.dtype == np.float32 and 0 < np.abs(low - ref).max() < tol


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["float32", "bfloat16", "float16"])
def test_cuda_matches_transformers_4(precision):
    ref = expected("model_c")
    out = embedder("model_c", layers="all", device="cuda", precision=precision).fit()
    assert out.device_.startswith("cuda")
    got = out.transform(DOCS)
    n, d = ref["hidden_0"].shape[0], ref["hidden_0"].shape[2]
    tol = TOL if precision == "float32" else 0.1
    for i, doc in enumerate(DOCS):
        h = got[i].reshape(len(doc), n, d).transpose(1, 0, 2)
        np.testing.assert_allclose(h, ref[f"hidden_{i}"], atol=tol, rtol=0)


def test_pipeline_grid_search_over_layers(monkeypatch):
    skembed.clear_cache()
    forwarded = []
    original = TransformerXLEmbeddings._forward
    monkeypatch.setattr(
        TransformerXLEmbeddings,
        "_forward",
        lambda self, m, docs: forwarded.extend(docs) or original(self, m, docs),
    )
    texts = ["the film was first shown", "the school game season", "a new city film"] * 4
    texts += ["she had two songs", "her song was early", "they have one song"] * 4
    y = [0] * 12 + [1] * 12
    pipe = Pipeline(
        [
            ("emb", embedder("model_a")),
            ("pool", DocumentPoolEmbeddings()),
            ("clf", LogisticRegression(max_iter=200)),
        ]
    )
    search = GridSearchCV(pipe, {"emb__layers": ["0", "-1", "1,2,3"]}, cv=2)
    loads_before = sum(skembed.cache_info()["model_loads"].values())
    search.fit(texts, y)
    assert search.best_params_["emb__layers"] in ("0", "-1", "1,2,3")
    assert search.predict(texts).shape == (24,)
    assert sum(skembed.cache_info()["model_loads"].values()) == loads_before + 1
    # 3 candidates x 2 folds (fit + score), refit and predict embed 192 documents; the network
    # only ran when a text was first seen: at most one pass over the data.
    assert set(map(" ".join, forwarded)) == set(texts) and len(forwarded) <= len(texts)
