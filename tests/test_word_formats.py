"""Word-vector file formats and the binary cache, on small files written here."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import tracemalloc

import numpy as np
import pytest

import skembed
from skembed import WordEmbeddings
from skembed.word import detect_format, ensure_cached, formats, open_vectors, store


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """A fresh skembed cache per test, so cache entries can be counted."""
    monkeypatch.setenv("SKEMBED_HOME", str(tmp_path / "home"))
    yield
    skembed.clear_cache()


WORDS = ["the", "cat", "Berlin", "berlin", "year####", "00:00", "naïve", "über"]
VECS = np.random.default_rng(0).standard_normal((len(WORDS), 5)).astype(np.float32)


def write_text(path, words=WORDS, vecs=VECS, header=True, trailing_space=False, fmt="%.6f"):
    lines = [f"{len(words)} {vecs.shape[1]}"] if header else []
    for w, v in zip(words, vecs):
        lines.append(w + " " + " ".join(fmt % x for x in v) + (" " if trailing_space else ""))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_binary(path, words=WORDS, vecs=VECS, newline=True):
    with open(path, "wb") as f:
        f.write(f"{len(words)} {vecs.shape[1]}\n".encode())
        for w, v in zip(words, vecs):
            f.write(w.encode() + b" " + v.astype("<f4").tobytes() + (b"\n" if newline else b""))
    return path


def read_all(path, chunk_rows=3):
    source = open_vectors(path, chunk_rows=chunk_rows)
    words, blocks = [], []
    for w, b in source.chunks:
        assert len(b) <= chunk_rows
        words += w
        blocks.append(b)
    return source, words, np.concatenate(blocks)


@pytest.mark.parametrize(
    "kind, fmt",
    [
        ("glove", "glove"),
        ("word2vec-text", "word2vec-text"),
        ("fasttext-vec", "word2vec-text"),
        ("word2vec-binary", "word2vec-binary"),
        ("word2vec-binary-no-newline", "word2vec-binary"),
        ("gzip-text", "word2vec-text"),
    ],
)
def test_formats_read_exact_vectors(tmp_path, kind, fmt):
    if kind == "glove":
        path = write_text(tmp_path / "v.txt", header=False, fmt="%.9g")
    elif kind == "word2vec-text":
        path = write_text(tmp_path / "v.txt", fmt="%.9g")
    elif kind == "fasttext-vec":  # fastText ends each line with a space
        path = write_text(tmp_path / "v.vec", trailing_space=True, fmt="%.9g")
    elif kind == "word2vec-binary":
        path = write_binary(tmp_path / "v.bin")
    elif kind == "word2vec-binary-no-newline":
        path = write_binary(tmp_path / "v.bin", newline=False)
    else:
        plain = write_text(tmp_path / "v.txt", fmt="%.9g")
        path = tmp_path / "v.txt.gz"
        path.write_bytes(gzip.compress(plain.read_bytes()))
    assert detect_format(path) == fmt
    source, words, vecs = read_all(path)
    assert source.format == fmt and source.dim == 5
    assert words == WORDS
    # %.9g round-trips float32 exactly; binary files hold the bits themselves.
    np.testing.assert_array_equal(vecs, VECS)


def test_binary_reader_across_read_boundaries(tmp_path, monkeypatch):
    path = write_binary(tmp_path / "v.bin")
    monkeypatch.setattr(formats, "_READ", 7)  # every word and vector straddles reads
    _, words, vecs = read_all(path, chunk_rows=2)
    assert words == WORDS
    np.testing.assert_array_equal(vecs, VECS)


def test_glove_words_with_spaces_and_unicode_spaces(tmp_path):
    # GloVe 840B holds words such as ". . ." and words with a no-break space.
    words = [". . .", "a\u00a0b", "x"]
    vecs = np.arange(9, dtype=np.float32).reshape(3, 3)
    path = write_text(tmp_path / "g.txt", words, vecs, header=False, fmt="%g")
    _, got_words, got = read_all(path)
    assert got_words == words
    np.testing.assert_array_equal(got, vecs)


def test_matches_gensim_readers(tmp_path):
    gensim = pytest.importorskip("gensim")
    text = write_text(tmp_path / "v.txt")  # 6 decimals: both parse the same decimal strings
    binary = write_binary(tmp_path / "v.bin")
    for path, binary_flag in [(text, False), (binary, True)]:
        kv = gensim.models.KeyedVectors.load_word2vec_format(str(path), binary=binary_flag)
        _, words, vecs = read_all(path)
        assert words == list(kv.index_to_key)
        np.testing.assert_array_equal(vecs, kv.vectors)


def test_gensim4_keyedvectors_with_separate_vectors(tmp_path):
    gensim = pytest.importorskip("gensim")
    kv = gensim.models.KeyedVectors(5)
    kv.add_vectors(WORDS, VECS)
    path = tmp_path / "kv.gensim"
    kv.save(str(path), separately=["vectors"])
    assert (tmp_path / "kv.gensim.vectors.npy").is_file()
    assert detect_format(path) == "gensim"
    source, words, vecs = read_all(path)
    assert words == WORDS and source.companions == (tmp_path / "kv.gensim.vectors.npy",)
    np.testing.assert_array_equal(vecs, VECS)
    # Inline arrays (small files) too.
    kv.save(str(tmp_path / "inline.gensim"))
    _, words, vecs = read_all(tmp_path / "inline.gensim")
    np.testing.assert_array_equal(vecs, VECS)


def test_gensim3_layout_vocab_objects(tmp_path, monkeypatch):
    """gensim < 4 files: Word2VecKeyedVectors with a ``vocab`` of Vocab(index) objects."""
    pytest.importorskip("gensim")
    import gensim.models.keyedvectors as gkv

    class Word2VecKeyedVectors:  # stands in for gensim 3's class while pickling
        pass

    class Vocab:
        pass

    for cls in (Word2VecKeyedVectors, Vocab):
        cls.__module__, cls.__qualname__ = gkv.__name__, cls.__name__
        monkeypatch.setattr(gkv, cls.__name__, cls)
    obj = Word2VecKeyedVectors()
    vocab = {}
    for i, w in enumerate(WORDS):
        vocab[w] = Vocab()
        vocab[w].__dict__.update(index=i, count=100 - i)
    obj.__dict__.update(vocab=vocab, vector_size=5, vectors=None, vectors_norm=None)
    obj.__dict__["__numpys"] = ["vectors"]
    path = tmp_path / "old.gensim"
    path.write_bytes(pickle.dumps(obj, protocol=2))
    np.save(tmp_path / "old.gensim.vectors.npy", VECS)
    monkeypatch.undo()
    _, words, vecs = read_all(path)
    assert words == WORDS
    np.testing.assert_array_equal(vecs, VECS)


def test_gensim_file_cannot_run_code(tmp_path):
    pytest.importorskip("gensim")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.gensim"
    path.write_bytes(pickle.dumps(Evil(), protocol=4))
    with pytest.raises(ValueError, match="refusing to load"):
        open_vectors(path)


def test_gensim_missing_gives_install_hint(tmp_path, monkeypatch):
    import builtins

    path = tmp_path / "x.gensim"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    real_import = builtins.__import__

    def no_gensim(name, *args, **kwargs):
        if name == "gensim" or name.startswith("gensim."):
            raise ImportError("No module named 'gensim'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gensim)
    with pytest.raises(ImportError, match=r"skembed\[gensim\]"):
        open_vectors(path)


def test_bad_files_name_the_problem(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("a 1 2\nb 1\nc 1 2\n")
    with pytest.raises(ValueError, match=r"bad.txt, line 2: expected a word and 2 numbers"):
        read_all(bad)
    nan = tmp_path / "nan.txt"
    nan.write_text("a 1 2\nb 1 x\n")
    with pytest.raises(ValueError, match="line 2"):
        read_all(nan)
    short = write_binary(tmp_path / "short.bin")
    short.write_bytes(short.read_bytes()[:-30])
    with pytest.raises(ValueError, match="truncated"):
        read_all(short)
    header = write_text(tmp_path / "header.txt")
    header.write_text(header.read_text().replace("8 5", "9 5", 1))
    with pytest.raises(ValueError, match="announces 9 vectors but the file holds 8"):
        read_all(header)
    ft = tmp_path / "model.bin"
    ft.write_bytes((793712314).to_bytes(4, "little") + b"\x00" * 16)
    with pytest.raises(ValueError, match="fastText model"):
        detect_format(ft)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="expected a word"):
        read_all(empty)


# -- the binary cache --------------------------------------------------------------------
def test_cache_second_load_uses_it(tmp_path, monkeypatch):
    path = write_text(tmp_path / "v.txt", fmt="%.9g")
    first = WordEmbeddings(str(path), device="cpu").fit()
    out1 = first.transform([WORDS]).to_numpy()
    cache = store.cache_dir(path.resolve())
    assert json.loads((cache / "meta.json").read_text())["shape"] == [8, 5]
    assert np.load(cache / "vectors.npy").shape == (8, 5)

    skembed.clear_cache()

    def no_conversion(*args):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(store, "convert", no_conversion)
    second = WordEmbeddings(str(path), device="cpu").fit()
    assert isinstance(second._model.vectors, np.memmap)
    assert os.path.samefile(second._model.vectors.filename, cache / "vectors.npy")
    np.testing.assert_array_equal(second.transform([WORDS]).to_numpy(), out1)
    np.testing.assert_array_equal(out1, VECS)


def test_changed_source_invalidates_cache(tmp_path):
    path = write_text(tmp_path / "v.txt", fmt="%.9g")
    emb = WordEmbeddings(str(path), device="cpu").fit()
    before = emb.transform([["cat"]]).to_numpy()
    new = VECS + 1
    write_text(path, vecs=new, fmt="%.9g")
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 10**9))  # also when the size is unchanged
    # No clear_cache: the model key follows the file, so this process reloads it too.
    emb2 = WordEmbeddings(str(path), device="cpu").fit()
    after = emb2.transform([["cat"]]).to_numpy()
    np.testing.assert_array_equal(before, VECS[[1]])
    np.testing.assert_array_equal(after, new[[1]])
    entries = [p for p in store.cache_root().iterdir() if p.name.startswith("v.txt-")]
    assert len(entries) == 1  # the stale conversion is replaced, not kept
    meta = json.loads((entries[0] / "meta.json").read_text())
    assert meta["source"][0][2] == path.stat().st_mtime_ns


def test_gensim_companion_change_invalidates(tmp_path):
    gensim = pytest.importorskip("gensim")
    kv = gensim.models.KeyedVectors(5)
    kv.add_vectors(WORDS, VECS)
    path = tmp_path / "kv.gensim"
    kv.save(str(path), separately=["vectors"])
    first = ensure_cached(path)
    np.save(tmp_path / "kv.gensim.vectors.npy", VECS * 2)
    os.utime(tmp_path / "kv.gensim.vectors.npy", ns=(0, 10**18))
    second = ensure_cached(path)
    assert first == second
    np.testing.assert_array_equal(np.load(second / "vectors.npy"), VECS * 2)


@pytest.mark.parametrize("text", [False, True])
def test_conversion_streams(tmp_path, text, monkeypatch):
    """Converting holds one chunk of rows, never the file (peak traced memory << its size)."""
    monkeypatch.setattr(formats, "CHUNK_ROWS", 1000)
    monkeypatch.setattr(formats, "_READ", 1 << 18)
    rng = np.random.default_rng(1)
    n, dim = (20_000, 50) if text else (30_000, 100)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    words = [f"w{i}" for i in range(n)]
    if text:
        path = write_text(tmp_path / "big.txt", words, vecs, header=False, fmt="%.4f")
    else:
        path = write_binary(tmp_path / "big.bin", words, vecs)
    size = path.stat().st_size
    tracemalloc.start()
    try:
        dest = ensure_cached(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.5 * size, (peak, size)  # the vocabulary plus one chunk
    got = np.load(dest / "vectors.npy", mmap_mode="r")
    np.testing.assert_allclose(got, vecs, atol=5e-5 if text else 0)
