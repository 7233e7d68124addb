"""The errors a newcomer meets first: models that are not there (with and without downloads
allowed), a RaggedEmbeddings given to a classifier, one-element token lists, fitting a
DocumentPoolEmbeddings without X, and pickles of another skembed version."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
import warnings

import pytest

from skembed.resolve import ModelNotFoundError

# Every family, by a name that is nowhere on this machine: (label, constructor, name in message).
MISSING = [
    ("transformer", "TransformerEmbeddings('bert-base-uncased')", "bert-base-uncased"),
    ("bert", "BertEmbeddings()", "bert-base-uncased"),
    ("typo", "TransformerEmbeddings('all-MiniLM-L6-v3')", "all-MiniLM-L6-v3"),
    ("document", "TransformerDocumentEmbeddings('bert-base-uncased')", "bert-base-uncased"),
    ("flair", "FlairEmbeddings('news-forward')", "news-forward"),
    ("elmo", "ELMoEmbeddings('small')", "small"),
    ("word", "WordEmbeddings('glove')", "glove"),
    ("transfo_xl", "TransformerXLEmbeddings()", "transfo-xl-wt103"),
]

# Runs in a fresh process with downloads allowed (neither SKEMBED_OFFLINE nor HF_HUB_OFFLINE
# set when huggingface_hub is imported) and every server unreachable: the Hub endpoint and
# the proxies point at a closed local port, so nothing is ever downloaded, with or without
# internet, and a connection is refused at once.
_SCRIPT = """
import json, sys, time
import skembed
from skembed import *
out = {}
for label, ctor in json.loads(sys.argv[1]):
    start = time.monotonic()
    try:
        eval(ctor).fit()
        out[label] = {"type": None}
        continue
    except BaseException as exc:
        out[label] = {
            "type": type(exc).__name__,
            "message": str(exc),
            "cause": exc.__cause__ is not None,
            "context_shown": exc.__context__ is not None and not exc.__suppress_context__,
            "download_error": type(getattr(exc, "download_error", None)).__name__,
            "seconds": time.monotonic() - start,
        }
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def no_network_errors(tmp_path_factory):
    """``label -> what fit() raised`` for every entry of :data:`MISSING`."""
    home = tmp_path_factory.mktemp("no_network")
    env = {
        k: v
        for k, v in os.environ.items()
        if k.upper() not in {"SKEMBED_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"}
        and k.upper() != "NO_PROXY"
    }
    closed = "http://127.0.0.1:9"
    env.update(
        SKEMBED_HOME=str(home / "skembed"),
        HF_HOME=str(home / "hf"),
        FLAIR_CACHE_ROOT=str(home / "flair"),
        HF_ENDPOINT=closed,
        http_proxy=closed,
        https_proxy=closed,
        HTTP_PROXY=closed,
        HTTPS_PROXY=closed,
    )
    cases = json.dumps([(label, ctor) for label, ctor, _ in MISSING])
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SCRIPT), cases],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(line[0][len("RESULT") :])


@pytest.mark.parametrize("label, ctor, name", MISSING, ids=[m[0] for m in MISSING])
def test_no_network_gives_skembeds_error(no_network_errors, label, ctor, name):
    got = no_network_errors[label]
    # skembed's own error (a FileNotFoundError), not huggingface_hub's or urllib's
    assert got["type"] == "ModelNotFoundError", got
    message = got["message"]
    assert repr(name) in message
    assert "Looked in:" in message and "\n  - " in message  # every place looked
    assert "https://" in message  # where to get the files
    assert "The download failed: " in message  # the reason, in one line
    # One short error: the download's error is kept on the exception, not chained to it.
    assert not got["cause"] and not got["context_shown"], got
    assert got["download_error"] != "NoneType"
    # One attempt, refused at once: a hang guard against retry loops, not a speed goal.
    assert got["seconds"] < 30, got


def test_no_network_suggests_the_packaged_model(no_network_errors, minilm_path):
    assert "did you mean 'all-minilm-l6-v2'" in no_network_errors["typo"]["message"].lower()


def test_offline_error_suggests_close_local_names(monkeypatch, tmp_path, minilm_path):
    from huggingface_hub import constants

    from skembed import ELMoEmbeddings, TransformerEmbeddings, WordEmbeddings

    home = tmp_path / "home"
    (home / "transformers" / "my-org--sentiment-model").mkdir(parents=True)
    hub = tmp_path / "hub"
    (hub / "models--acme--legal-bert-small").mkdir(parents=True)
    monkeypatch.setenv("SKEMBED_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    cases = [
        (TransformerEmbeddings("all-MiniLM-L6-v3"), "all-MiniLM-L6-v2"),
        (TransformerEmbeddings("my-org/sentiment-modle"), "my-org/sentiment-model"),
        (TransformerEmbeddings("acme/legal-bert-smal"), "acme/legal-bert-small"),
        (ELMoEmbeddings("smal"), "small"),
        (WordEmbeddings("glov"), "glove"),
    ]
    for estimator, close in cases:
        with pytest.raises(ModelNotFoundError) as info:
            estimator.fit()
        assert re.search(f"did you mean {re.escape(repr(close))}", str(info.value), re.I)
        assert info.value.__cause__ is None


def test_download_gives_up_after_one_short_attempt(monkeypatch, tmp_path):
    """A file download is one attempt with a short time limit, and its failure the usual
    error, naming the model, the places looked and the URL."""
    from skembed import resolve

    calls = []

    def refuse(url, timeout=None):
        calls.append(timeout)
        raise OSError("[Errno 101] Network is unreachable\nmore details")

    monkeypatch.delenv("SKEMBED_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("SKEMBED_HOME", str(tmp_path))
    monkeypatch.setattr(resolve.urllib.request, "urlopen", refuse)
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError) as info:
        resolve.find_file("test model", "m", "m.bin", ["https://example.org/m.bin"])
    assert time.monotonic() - start < 30
    assert calls == [resolve.NETWORK_TIMEOUT] and resolve.NETWORK_TIMEOUT <= 30
    message = str(info.value)
    assert "'m'" in message and str(tmp_path / "m.bin") in message
    assert "https://example.org/m.bin" in message
    assert "The download failed: [Errno 101] Network is unreachable (OSError)\n" in message
    assert "more details" not in message
    assert isinstance(info.value.download_error, OSError)
    assert info.value.__cause__ is None and info.value.__suppress_context__


# -- a RaggedEmbeddings given to a classifier ------------------------------------------------


@pytest.fixture
def ragged():
    import torch

    from skembed import RaggedEmbeddings

    blocks = [torch.ones(3, 2), torch.zeros(4, 2), torch.ones(2, 2), torch.ones(2, 2)]
    return RaggedEmbeddings.from_list(blocks, [["a"] * 3, ["b"] * 4, ["c"] * 2, ["d"] * 2])


def _says_what_to_do(info) -> None:
    message = str(info.value)
    assert "DocumentPoolEmbeddings" in message
    assert ".padded()" in message and ".to_frame()" in message
    assert "4 documents, 11 tokens" in message


def test_ragged_is_not_an_array(ragged):
    import numpy as np
    from sklearn.utils import check_array

    for convert in (np.asarray, np.array, check_array):
        with pytest.raises(TypeError) as info:
            convert(ragged)
        _says_what_to_do(info)


def test_ragged_given_to_a_classifier(ragged):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    # Not sklearn's "inconsistent numbers of samples: [11, 4]".
    with pytest.raises(TypeError) as info:
        LogisticRegression().fit(ragged, [0, 1, 0, 1])
    _says_what_to_do(info)
    with pytest.raises(TypeError, match="DocumentPoolEmbeddings"):
        StandardScaler().fit(ragged)


def test_pipeline_without_pooling_says_to_add_it(tiny_model):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from skembed import TransformerEmbeddings

    pipe = make_pipeline(TransformerEmbeddings(tiny_model("bert")), LogisticRegression())
    with pytest.raises(TypeError, match=r"Add DocumentPoolEmbeddings\(\) after"):
        pipe.fit(["a good film", "bad", "an awful one", "fine"], [1, 0, 0, 1])


# -- one-element token lists ---------------------------------------------------------------


def _one_token_warnings(record) -> list:
    return [w for w in record if "list of one token that contains whitespace" in str(w.message)]


def test_one_element_lists_warn_once():
    import pandas as pd

    from skembed import check_documents

    df = pd.DataFrame({"text": ["the cat sat", "a dog", "birds fly south"]})
    with pytest.warns(UserWarning) as record:
        docs = check_documents(df[["text"]].values.tolist())
    assert docs == [["the cat sat"], ["a dog"], ["birds fly south"]]  # as given, but warned
    found = _one_token_warnings(record)
    assert len(found) == 1
    message = str(found[0].message)
    assert "df['text']" in message and "2-D numpy array" in message
    assert found[0].filename == __file__  # points at the caller's line
    # Only then: one word per document, some documents, strings, several tokens.
    for X in ([["the"], ["cat"]], [["the cat"], ["a", "dog"]], ["the cat"], [("a", "b c")], []):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_documents(X)


def test_one_element_lists_warn_once_per_call_in_chunks(tiny_model):
    from skembed import DocumentPoolEmbeddings, TransformerEmbeddings

    X = [[f"text number {i}"] for i in range(150)]  # three chunks of 64 documents
    pooler = DocumentPoolEmbeddings(TransformerEmbeddings(tiny_model("bert"), batch_size=1))
    with pytest.warns(UserWarning) as record:
        pooler.fit(X)
    assert len(_one_token_warnings(record)) == 1
    with pytest.warns(UserWarning) as record:
        assert pooler.transform(X).shape[0] == 150
    assert len(_one_token_warnings(record)) == 1


# -- DocumentPoolEmbeddings.fit() without X ------------------------------------------------


def test_document_pool_fits_without_data_when_wrapping(tiny_model):
    from skembed import DocumentPoolEmbeddings, TransformerEmbeddings

    pooler = DocumentPoolEmbeddings(TransformerEmbeddings(tiny_model("bert")))
    assert pooler.fit() is pooler
    assert pooler.transform(["a short text", ""]).shape == (2, pooler.n_features_in_)
    # Standing after an embedder, it needs that embedder's output, and says so.
    with pytest.raises(TypeError, match=r"DocumentPoolEmbeddings\(embedder\)\.fit\(\)"):
        DocumentPoolEmbeddings().fit()


# -- pickles of another skembed version -----------------------------------------------------


def test_pickle_records_the_version_and_warns_on_another(monkeypatch, tiny_model):
    import pickle

    import skembed
    from skembed import TransformerEmbeddings
    from skembed.exceptions import InconsistentVersionWarning

    est = TransformerEmbeddings(tiny_model("bert"), pooling_operation="mean").fit(["a b"])
    assert est.__getstate__()["_skembed_version"] == skembed.__version__
    with warnings.catch_warnings():  # the same version: silent
        warnings.simplefilter("error")
        same = pickle.loads(pickle.dumps(est))
    assert same.pooling_operation == "mean" and not hasattr(same, "_skembed_version")

    # An "older" version, whose estimators had no pooling_operation and no n_features_out_.
    monkeypatch.setattr(skembed, "__version__", "0.0.9")
    del est.pooling_operation, est.n_features_out_
    blob = pickle.dumps(est)
    monkeypatch.undo()
    with pytest.warns(InconsistentVersionWarning) as record:
        old = pickle.loads(blob)
    warning = record[0].message
    assert (warning.original_version, warning.current_version) == ("0.0.9", skembed.__version__)
    assert warning.missing == ["pooling_operation"]
    assert "skembed 0.0.9" in str(warning) and "refit" in str(warning)
    assert old.pooling_operation == "first"  # the default
    assert old.get_params()["pooling_operation"] == "first"
    with pytest.raises(AttributeError, match=r"'n_features_out_'.*pickled with skembed 0\.0\.9"):
        _ = old.n_features_out_
    assert not hasattr(old, "no_such_attribute_")  # hasattr still works


def test_pickle_without_a_version_warns(tiny_model):
    from skembed import DocumentPoolEmbeddings
    from skembed.exceptions import InconsistentVersionWarning

    state = DocumentPoolEmbeddings(pooling="max").__getstate__()
    del state["_skembed_version"]  # as pickled before versions were recorded
    loaded = DocumentPoolEmbeddings.__new__(DocumentPoolEmbeddings)
    with pytest.warns(InconsistentVersionWarning, match="did not record its version"):
        loaded.__setstate__(state)
    assert loaded.pooling == "max"
    with pytest.raises(AttributeError, match="version not recorded"):
        _ = loaded.embeddings_
