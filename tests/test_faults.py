"""Faults: out of memory, broken model files, offline without a model, GPU pickles, threads."""

from __future__ import annotations

import pickle
import shutil
import socket
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from tiny_embedders import build_files, is_pooler, make, rows

import skembed
from skembed import _batching
from skembed._hf import forward as hf_forward
from skembed.elmo import ElmoModel
from skembed.resolve import ModelNotFoundError

DOCS = [
    "the cat sat on the mat",
    "Berlin is a city",
    "",
    " ".join(["unbelievable tokenization happens here"] * 30),  # three windows of 62
    "x",
    ["New", "York", "!"],
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return build_files(tmp_path_factory.mktemp("faults"))


@pytest.fixture
def no_state_cache():
    """Every transform runs the network (so injected faults are met every time), from each
    estimator's own batch_size (no size remembered after another test's out-of-memory)."""
    skembed.set_cache(enabled=False)
    _batching.forget_batch_sizes()
    yield
    skembed.set_cache(enabled=True)
    _batching.forget_batch_sizes()


def close(a, b, atol=1e-5):
    assert len(a) == len(b)
    for x, y in zip(rows(a), rows(b)):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0)


def oom_warnings(record) -> list:
    return [w for w in record if "ran out of memory" in str(w.message)]


# -- out of memory: split the batch, retry, warn once --------------------------------------
def test_out_of_memory_in_a_transformer_batch_is_split_and_retried(
    tiny_model, files, monkeypatch, no_state_cache
):
    emb = make("TransformerEmbeddings", files, tiny_model, batch_size=8).fit()
    expected = emb.transform(DOCS)
    expected.to_numpy()  # computed now (transform defers the vectors)
    real_run, sizes = hf_forward._run_batch, []

    def run(hf, batch_rows, device):
        sizes.append(len(batch_rows))
        if len(batch_rows) > 2:  # a GPU that only holds two windows at a time
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_run(hf, batch_rows, device)

    monkeypatch.setattr(hf_forward, "_run_batch", run)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        first, second = emb.transform(DOCS), emb.transform(DOCS)
        first.to_numpy(), second.to_numpy()
    close(first, expected)
    close(second, expected)
    assert max(sizes) > 2 and sizes[-1] <= 2  # it tried the full batch, then halved
    assert len(oom_warnings(record)) == 1  # once per estimator, however many retries
    assert "batch_size=" in str(oom_warnings(record)[0].message)
    # A clone (a grid search's) starts from the batch size that worked: no error paid again.
    pooled = skembed.DocumentPoolEmbeddings(clone(emb)).fit(DOCS)
    sizes.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = pooled.transform(DOCS)
    assert sizes and max(sizes) <= 2
    want = np.stack(
        [r.mean(0) if len(r) else np.zeros(emb.n_features_out_) for r in rows(expected)]
    )
    np.testing.assert_allclose(out, want, atol=1e-5)


@pytest.mark.parametrize(
    "error",
    [torch.OutOfMemoryError("CUDA out of memory"), RuntimeError("MPS backend out of memory")],
    ids=["cuda", "mps"],
)
def test_out_of_memory_in_a_recurrent_model_is_split_and_retried(
    error, files, tiny_model, monkeypatch, no_state_cache
):
    emb = make("ELMoEmbeddings", files, tiny_model, batch_size=4).fit()
    expected = emb.transform(DOCS)
    real, calls = ElmoModel.forward, []

    def forward(self, docs):
        calls.append(len(docs))
        if len(docs) > 1:
            raise error
        return real(self, docs)

    monkeypatch.setattr(ElmoModel, "forward", forward)
    with pytest.warns(RuntimeWarning, match=r"batch of 4; retrying with smaller batches \(2\)"):
        close(emb.transform(DOCS), expected)
    # Halved 4 -> 2 -> 1, and the smaller size is kept for the rest of the call.
    assert calls[:3] == [4, 2, 1] and set(calls[3:]) == {1}


def test_a_document_that_never_fits_names_itself(files, tiny_model, monkeypatch, no_state_cache):
    emb = make("FlairEmbeddings", files, tiny_model, batch_size=4).fit()
    real = type(emb)._forward

    def forward(self, model, docs):
        if any(len(d) > 100 for d in docs):
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(self, model, docs)

    monkeypatch.setattr(type(emb), "_forward", forward)
    with pytest.warns(RuntimeWarning), pytest.raises(torch.OutOfMemoryError) as info:
        emb.transform(DOCS)
    assert "Document 3 (120 tokens) does not fit in the memory of cpu even alone" in str(info.value)
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)


def test_other_errors_are_not_retried(files, tiny_model, monkeypatch, no_state_cache):
    emb = make("FlairEmbeddings", files, tiny_model).fit()
    calls = []

    def forward(self, model, docs):
        calls.append(len(docs))
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(type(emb), "_forward", forward)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no out-of-memory warning
        with pytest.raises(RuntimeError, match="device-side assert"):
            emb.transform(DOCS)
    assert calls == [5]


# -- broken model files: the error names the file and what was expected --------------------
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _hf_folder(tmp_path, tiny_model, change):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model("bert"), folder)
    change(folder)
    return folder


def _safetensors_to_bin(folder: Path) -> None:
    from safetensors.torch import load_file

    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    _truncate(folder / "pytorch_model.bin")


HF_CASES = {
    "missing folder": (lambda f: shutil.rmtree(f), ModelNotFoundError, r"transformer model folder .*model.*Expected a folder written by save_pretrained"),
    "no config.json": (lambda f: (f / "config.json").unlink(), ValueError, r"model is not a Hugging Face model folder: it has no config.json"),
    "config.json not JSON": (lambda f: (f / "config.json").write_text("{oops"), ValueError, r"config.json' is not a valid JSON file.*Expected a folder with a config.json"),
    "config of an unknown kind": (lambda f: (f / "config.json").write_text('{"model_type": "nonsense"}'), ValueError, r"Could not read the model configuration in .*model.*nonsense"),
    "truncated safetensors": (lambda f: _truncate(f / "model.safetensors"), ValueError, r"weights in .*model \(found \['model.safetensors'\]\).*Expected complete model.safetensors"),
    "truncated pytorch_model.bin": (_safetensors_to_bin, ValueError, r"weights in .*model \(found \['pytorch_model.bin'\]\).*may be truncated|truncated download"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), ValueError, r"found no weight files.*Expected complete model.safetensors or pytorch_model.bin"),
    "no tokenizer files": (lambda f: (f / "tokenizer.json").unlink(), ValueError, r"model has no tokenizer files: expected one of \['tokenizer.json', 'vocab.txt'\]"),
    "truncated tokenizer.json": (lambda f: _truncate(f / "tokenizer.json"), ValueError, r"Could not load the tokenizer in .*model.*Expected the tokenizer files"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(HF_CASES))
def test_broken_transformer_folders(case, tmp_path, tiny_model):
    change, error, message = HF_CASES[case]
    folder = _hf_folder(tmp_path, tiny_model, change)
    with pytest.raises(error, match="(?s)" + message):
        skembed.TransformerEmbeddings(str(folder), device="cpu").fit()


def _flair_cases(files):
    def write(name, data: bytes | None = None, copy_truncated=False):
        def make_file(tmp):
            path = tmp / name
            if copy_truncated:
                shutil.copy(files["flair"], path)
                _truncate(path)
            else:
                path.write_bytes(data)
            return path

        return make_file

    tensors = {"weights": torch.zeros(2)}
    other = Path(files["flair"]).with_name("other.pt")
    torch.save(tensors, other)
    return {
        "truncated .pt": (write("lm.pt", copy_truncated=True), r"Could not read .*lm.pt .*Expected a Flair language-model file.*truncated"),
        "empty .pt": (write("lm.pt", b""), r"Could not read .*lm.pt \(EOFError.*Expected a Flair language-model file"),
        "text file": (write("lm.pt", b"hello world\n"), r"Could not read .*lm.pt .*Expected a Flair language-model file"),
        "torch file of another kind": (lambda tmp: other, r"other.pt is not a Flair character language model: expected the keys"),
        "missing file": (lambda tmp: tmp / "absent.pt", r"Could not find Flair language model .*absent.pt"),
    }  # fmt: skip


def test_broken_flair_files(tmp_path, files):
    for make_file, message in _flair_cases(files).values():
        path = make_file(tmp_path)
        with pytest.raises((ValueError, FileNotFoundError), match="(?s)" + message):
            skembed.FlairEmbeddings(str(path), device="cpu").fit()


def test_broken_elmo_files(tmp_path, files):
    options, weights = map(Path, files["elmo"])
    cut = tmp_path / "weights.hdf5"
    shutil.copy(weights, cut)
    _truncate(cut)
    bad_json = tmp_path / "options.json"
    bad_json.write_text('{"char_cnn": {')
    cases = [
        ((options, cut), r"weights.hdf5 is not a readable HDF5 file \(.*truncated"),
        ((bad_json, weights), r"options.json is not valid JSON .*is it an ELMo options file"),
        ((weights, options), r"weights.hdf5 is not valid JSON .*is it an ELMo options file"),
        ((options, files["flair"]), r"flair-lm.pt is not a readable HDF5 file"),
        ((options, tmp_path / "absent.hdf5"), r"ELMo weights file .*absent.hdf5 does not exist"),
        (tmp_path / "nowhere", r"Could not find ELMo model .*nowhere.*Looked in"),
    ]
    for model, message in cases:
        model = tuple(map(str, model)) if isinstance(model, tuple) else str(model)
        with pytest.raises((ValueError, FileNotFoundError), match="(?s)" + message):
            skembed.ELMoEmbeddings(model, device="cpu").fit()


def test_broken_word_vector_files(tmp_path, files):
    text = tmp_path / "cut.txt"
    text.write_text("the 1 2 3\ncat 0 1")
    binary = tmp_path / "cut.bin"
    vec = np.ones(2, np.float32).tobytes()
    binary.write_bytes(b"3 2\nthe " + vec + b"\ncat " + vec + b"\ndog ")
    cases = [
        (text, r"cut.txt, line 2: expected a word and 3 numbers, got 'cat 0 1'"),
        (binary, r"cut.bin: the file ends after 2 of the 3 vectors its header announces"),
        (
            Path(files["flair"]),
            r"flair-lm.pt, line 1: expected a word and .* Is this a word-vector file",
        ),
        (tmp_path / "absent.txt", r"Could not find word embeddings .*absent.txt"),
    ]
    for path, message in cases:
        with pytest.raises((ValueError, FileNotFoundError), match="(?s)" + message):
            skembed.WordEmbeddings(str(path), device="cpu").fit()


def test_broken_transformer_xl_folders(tmp_path, files):
    source = Path(files["transfo-xl"])

    def folder(name, change):
        target = tmp_path / name
        shutil.copytree(source, target)
        change(target)
        return target

    cases = [
        (folder("cut", lambda f: _truncate(f / "model.safetensors")),
         r"Could not read the weights in .*cut/model.safetensors .*may be truncated"),
        (folder("json", lambda f: (f / "config.json").write_text("{oops")),
         r"json/config.json is not valid JSON"),
        (folder("vocab", lambda f: _truncate(f / "vocab.pkl")),
         r"vocab/vocab.pkl is not a readable Transformer-XL vocabulary"),
        (folder("novocab", lambda f: (f / "vocab.pkl").unlink()),
         r"novocab has no Transformer-XL vocabulary: expected vocab.pkl or vocab.bin"),
        (folder("noweights", lambda f: (f / "model.safetensors").unlink()),
         r"noweights has no Transformer-XL weights: expected model.safetensors or pytorch_model.bin"),
    ]  # fmt: skip
    for path, message in cases:
        with pytest.raises((ValueError, FileNotFoundError), match="(?s)" + message):
            skembed.TransformerXLEmbeddings(str(path), device="cpu").fit()


# -- offline without a cached model: what to download and where, and no network call -------
@pytest.fixture
def offline_machine(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 (SKEMBED_OFFLINE unset), empty caches, and sockets that record calls."""
    from huggingface_hub import constants

    monkeypatch.delenv("SKEMBED_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SKEMBED_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLAIR_CACHE_ROOT", str(tmp_path / "flair"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return tmp_path, attempts


def test_offline_errors_say_what_to_download_and_where(offline_machine):
    tmp_path, attempts = offline_machine
    home = tmp_path / "home"
    cases = [
        (skembed.TransformerEmbeddings("acme/tiny-bert"),
         ["hf download acme/tiny-bert --local-dir " + str(home / "transformers" / "acme--tiny-bert"),
          "https://huggingface.co/acme/tiny-bert", str(tmp_path / "hub")]),
        (skembed.TransformerDocumentEmbeddings("acme/tiny-bert"), ["hf download acme/tiny-bert"]),
        (skembed.TransformerXLEmbeddings("transfo-xl-wt103"),
         ["hf download transfo-xl/transfo-xl-wt103", "https://huggingface.co/transfo-xl/transfo-xl-wt103"]),
        (skembed.FlairEmbeddings("news-forward"),
         ["https://flair.informatik.hu-berlin.de/resources/embeddings/flair/news-forward-0.4.1.pt",
          f"put the file(s) in {home}", str(tmp_path / "flair" / "embeddings")]),
        (skembed.ELMoEmbeddings("small"),
         ["elmo_2x1024_128_2048cnn_1xhighway_weights.hdf5", f"put the file(s) in {home}"]),
        (skembed.WordEmbeddings("glove"), ["glove", f"put the file(s) in {home}"]),
    ]  # fmt: skip
    for est, needles in cases:
        with pytest.raises(ModelNotFoundError) as info:
            est.set_params(device="cpu").fit()
        message = str(info.value)
        assert "Downloads are disabled" in message
        for needle in needles:
            assert needle in message, (type(est).__name__, needle, message)
    assert attempts == []


# -- a pipeline pickled on a GPU machine predicts on a CPU-only one --------------------------
def test_pipeline_pickled_with_cuda_loads_and_predicts_on_cpu(
    tmp_path, files, tiny_model, monkeypatch
):
    X = ["good great fine", "bad awful poor", "great good", "awful bad"] * 3
    y = [1, 0, 1, 0] * 3
    pipe = make_pipeline(
        skembed.DocumentPoolEmbeddings(make("TransformerEmbeddings", files, tiny_model)),
        LogisticRegression(),
    ).fit(X, y)
    expected = pipe.predict_proba(X)
    # As fitted on a GPU machine: the device parameters and fitted devices say CUDA.
    pooled = pipe[0]
    pooled.embeddings.device = pooled.embeddings_.device = "cuda"
    pooled.embeddings_.device_ = "cuda:0"
    joblib.dump(pipe, tmp_path / "pipe.joblib")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    loaded = joblib.load(tmp_path / "pipe.joblib")
    with pytest.warns(RuntimeWarning, match="CUDA is not available on this machine; using the CPU"):
        got = loaded.predict_proba(X)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert loaded[0].embeddings_._device.type == "cpu"


@pytest.mark.parametrize("name", ["FlairEmbeddings", "ELMoEmbeddings", "TransformerXLEmbeddings",
                                  "WordEmbeddings", "StackedEmbeddings", "TransformerDocumentEmbeddings",
                                  "PooledFlairEmbeddings", "CharacterEmbeddings"])  # fmt: skip
def test_every_family_pickled_with_cuda_runs_on_cpu(name, files, tiny_model, monkeypatch):
    est = make(name, files, tiny_model).fit(DOCS)
    expected = est.transform(DOCS)
    members = [m for _, m in est._active()] if name == "StackedEmbeddings" else [est]
    for member in members:
        member.device, member.device_ = "cuda", "cuda:0"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = pickle.loads(pickle.dumps(est))
    with pytest.warns(RuntimeWarning, match="CUDA is not available"):
        close(loaded.transform(DOCS), expected)


# -- two threads share one fitted embedder ----------------------------------------------------
THREADED = ["TransformerEmbeddings", "OpenAIGPT2Embeddings", "FlairEmbeddings", "ELMoEmbeddings",
            "TransformerXLEmbeddings", "WordEmbeddings", "StackedEmbeddings",
            "DocumentPoolEmbeddings", "TransformerDocumentEmbeddings", "PooledFlairEmbeddings",
            "CharacterEmbeddings"]  # fmt: skip


@pytest.mark.parametrize("cache", [True, False], ids=["state-cache", "no-cache"])
@pytest.mark.parametrize("name", THREADED)
def test_two_threads_share_one_fitted_embedder(name, cache, files, tiny_model):
    est = make(name, files, tiny_model, batch_size=2).fit(DOCS)
    skembed.clear_cache(models=False)
    expected = est.transform(DOCS)
    skembed.set_cache(enabled=cache)
    skembed.clear_cache(models=False)
    try:
        # Each thread embeds different documents in a different order, several times over.
        orders = [list(range(len(DOCS))), list(reversed(range(len(DOCS)))), [3, 0, 5], [1, 2, 4, 3]]

        def work(order):
            return [(order, est.transform([DOCS[i] for i in order])) for _ in range(3)]

        with ThreadPoolExecutor(2) as pool:
            results = [r for batch in pool.map(work, orders) for r in batch]
    finally:
        skembed.set_cache(enabled=True)
    want = rows(expected)
    for order, out in results:
        for k, i in enumerate(order):
            np.testing.assert_allclose(rows(out)[k], want[i], atol=1e-5, rtol=0)
        if not is_pooler(name):
            assert [list(t) for t in out.tokens] == [
                skembed.check_documents([DOCS[i]])[0] for i in order
            ]


def test_threads_on_an_unpickled_embedder_load_the_model_once(files, tiny_model):
    est = make("TransformerEmbeddings", files, tiny_model).fit()
    expected = est.transform(DOCS)
    key = (est._model_key(), "cpu")
    before = skembed.cache_info()["model_loads"][key]
    skembed.clear_cache()  # the model must be loaded again, by one of the threads
    restored = pickle.loads(pickle.dumps(est))
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _: restored.transform(DOCS), range(4)))
    for out in outs:
        close(out, expected)
    assert skembed.cache_info()["model_loads"][key] == before + 1
