"""WordEmbeddings: lookups with Flair's out-of-vocabulary fallbacks, ids, estimator contract."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone

import skembed
from skembed import DocumentPoolEmbeddings, WordEmbeddings
from skembed.resolve import ModelNotFoundError
from skembed.word import WordVectors, flair_file_name

VOCAB = ["Hello", "hello", "world", "year####", "0000", "####", "12:00", "00:00", "Über", "naïve"]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SKEMBED_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLAIR_CACHE_ROOT", str(tmp_path / "flair"))
    yield
    skembed.clear_cache()


@pytest.fixture
def glove(tmp_path):
    """A GloVe-style file: row i of the vectors is ``[i + 1] * 3`` (so row 0 is not zero)."""
    path = tmp_path / "vectors.txt"
    lines = [f"{w} {i + 1} {i + 1} {i + 1}" for i, w in enumerate(VOCAB)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def row(word):
    return np.full(3, VOCAB.index(word) + 1, dtype=np.float32)


@pytest.mark.parametrize(
    "token, expected",
    [
        ("Hello", "Hello"),  # 1. exact match wins over the lower-cased form
        ("hello", "hello"),
        ("WORLD", "world"),  # 2. lower-cased
        ("Year2024", "year####"),  # 3. lower-cased, digits as '#'
        ("2024", "####"),  # '#' is tried before '0'
        ("23:59", "00:00"),  # 4. lower-cased, digits as '0' ('##:##' is absent)
        ("12:00", "12:00"),  # exact again
        ("über", None),  # lower-casing never maps back to "Über"
        ("NAÏVE", "naïve"),
        ("unknown", None),  # 5. zero vector
        ("", None),
    ],
)
def test_oov_fallback_order(glove, token, expected):
    emb = WordEmbeddings(str(glove), device="cpu").fit()
    got = emb.transform([[token]])[0][0]
    want = np.zeros(3, np.float32) if expected is None else row(expected)
    np.testing.assert_array_equal(got, want)


def test_unicode_digits_follow_flair():
    # Flair substitutes with re's \d, which also matches other scripts' digits.
    wv = WordVectors(["####"], np.ones((1, 2), np.float32))
    assert wv.index_of("٢٠٢٤") == 0  # Arabic-Indic digits


def test_duplicate_words_keep_first_vector():
    wv = WordVectors(["a", "b", "a"], np.arange(6, dtype=np.float32).reshape(3, 2))
    np.testing.assert_array_equal(wv.lookup(["a", "b", "x"]), [[0, 1], [2, 3], [0, 0]])


def test_transform_shapes_names_and_inputs(glove):
    import pandas as pd

    emb = WordEmbeddings(str(glove), device="cpu")
    X = pd.Series(["Hello world", "", "WORLD 2024 foo"])
    r = emb.fit_transform(X)
    assert isinstance(r, skembed.RaggedEmbeddings)
    assert r.lengths.tolist() == [2, 0, 3] and r.dim == 3 == emb.n_features_out_
    assert list(emb.get_feature_names_out()) == ["word_0", "word_1", "word_2"]
    np.testing.assert_array_equal(r[2], [row("world"), row("####"), np.zeros(3)])
    # A pre-tokenized document gives the same vectors as the string.
    np.testing.assert_array_equal(emb.transform([["Hello", "world"]])[0], r[0])
    assert emb.path_ == str(glove.resolve())
    frame = r.to_frame()
    assert frame.loc[(2, 1), "token"] == "2024" and frame.loc[(2, 1), "word_0"] == row("####")[0]


def test_batches_match_whole(glove):
    emb = WordEmbeddings(str(glove), device="cpu", batch_size=2).fit()
    docs = [["Hello"], [], ["world", "x", "0000"], ["naïve"], ["12:00", "Über"]]
    whole = emb.embed_documents(docs).to_list()
    seen = []
    for index, tensors in emb.iter_batches(docs):
        assert len(index) <= 2
        for i, t in zip(index, tensors):
            np.testing.assert_array_equal(t.numpy(), whole[i])
            seen.append(i)
    assert seen == list(range(len(docs)))
    pooled = DocumentPoolEmbeddings(WordEmbeddings(str(glove), device="cpu")).fit_transform(
        [" ".join(d) for d in docs]
    )
    np.testing.assert_allclose(pooled[2], np.mean([row("world"), np.zeros(3), row("0000")], 0))


def test_clone_and_pickle(glove):
    emb = WordEmbeddings(str(glove), device="cpu").fit()
    out = emb.transform(["Hello WORLD 1999"]).to_numpy()
    restored = pickle.loads(pickle.dumps(emb))
    assert "_model" not in restored.__dict__
    skembed.clear_cache()
    np.testing.assert_array_equal(restored.transform(["Hello WORLD 1999"]).to_numpy(), out)
    twin = clone(emb)
    assert twin.get_params() == emb.get_params() and not hasattr(twin, "n_features_out_")
    # Clones share the loaded model through the process-wide cache (emb keeps the one it
    # held before clear_cache; the ones fitted since share the new one).
    twin.fit()
    assert twin._model is clone(emb).fit()._model


def test_bad_params(glove):
    with pytest.raises(ValueError, match="batch_size"):
        WordEmbeddings(str(glove), batch_size=0).fit()
    with pytest.raises(TypeError, match="Flair id"):
        WordEmbeddings(42).fit()
    with pytest.raises(TypeError, match="Document 1"):
        WordEmbeddings(str(glove), device="cpu").fit().transform(["a", 3])


def test_flair_id_table():
    assert flair_file_name("glove") == flair_file_name("en-glove") == "glove.gensim"
    assert flair_file_name("turian") == "turian"
    assert flair_file_name("extvec") == "extvec.gensim"
    assert flair_file_name("crawl") == "en-fasttext-crawl-300d-1M"
    assert flair_file_name("news") == flair_file_name("en") == "en-fasttext-news-300d-1M"
    assert flair_file_name("twitter") == "twitter.gensim"
    assert flair_file_name("de") == flair_file_name("de-wiki") == "de-wiki-fasttext-300d-1M"
    assert flair_file_name("FR-crawl") == "fr-crawl-fasttext-300d-1M"
    assert flair_file_name("my-vectors.txt") is None and flair_file_name("deu") is None


def test_flair_id_from_flair_cache(tmp_path):
    gensim = pytest.importorskip("gensim")
    kv = gensim.models.KeyedVectors(3)
    kv.add_vectors(["the", "cell"], np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32))
    folder = tmp_path / "flair" / "embeddings"
    folder.mkdir(parents=True)
    kv.save(str(folder / "glove.gensim"), separately=["vectors"])
    emb = WordEmbeddings("glove", device="cpu").fit()
    np.testing.assert_array_equal(
        emb.transform(["The cell x"])[0], [[1, 2, 3], [4, 5, 6], [0, 0, 0]]
    )
    assert emb.path_ == str((folder / "glove.gensim").resolve())


def test_missing_id_names_places_and_urls(tmp_path):
    with pytest.raises(ModelNotFoundError) as err:
        WordEmbeddings("de-crawl").fit()
    msg = str(err.value)
    assert "de-crawl" in msg
    assert str(tmp_path / "home" / "de-crawl-fasttext-300d-1M") in msg
    assert str(tmp_path / "flair" / "embeddings" / "de-crawl-fasttext-300d-1M") in msg
    assert "token/de-crawl-fasttext-300d-1M.vectors.npy" in msg
    assert "offline" in msg.lower() or "disabled" in msg.lower()
    with pytest.raises(ModelNotFoundError, match="neither an existing file nor a known id"):
        WordEmbeddings(str(tmp_path / "nope.txt")).fit()


def test_companion_file_missing(tmp_path):
    folder = tmp_path / "flair" / "embeddings"
    folder.mkdir(parents=True)
    (folder / "twitter.gensim").write_bytes(b"\x80\x04.")
    with pytest.raises(ModelNotFoundError, match=r"twitter.gensim.vectors.npy"):
        WordEmbeddings("twitter").fit()


def test_device_and_dtype(glove):
    emb = WordEmbeddings(str(glove), device="cpu", precision="bfloat16").fit()
    r = emb.transform(["hello"])
    assert r.data.dtype == torch.float32 and r.data.device.type == "cpu"
    assert emb.__sklearn_tags__().input_tags.string
