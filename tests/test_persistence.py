"""Fitted estimators and pipelines saved with skops.io: loading trusts skembed's classes only.

skops.io stores objects as data (no pickle opcodes run at load) and lists every type it does
not already trust; these tests pin that list to skembed's own estimator classes, for every
public estimator, and check that a loaded pipeline predicts exactly as the saved one.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from tiny_embedders import ALL, build_files, make, rows

from skembed import DocumentPoolEmbeddings, TransformerEmbeddings
from skembed.datasets import load_reviews

sio = pytest.importorskip("skops.io")

DOCS = ["the cat sat on the mat", "hello world", "", "Berlin !"]


def test_minilm_pipeline_round_trip(minilm_path, tmp_path):
    texts, labels = load_reviews()
    texts, labels = texts[:48], labels[:48]
    pipe = Pipeline(
        [
            ("embed", TransformerEmbeddings(minilm_path)),
            ("pool", DocumentPoolEmbeddings()),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    ).fit(texts, labels)
    path = tmp_path / "pipe.skops"
    sio.dump(pipe, path)
    assert path.stat().st_size < 1_000_000  # parameters and the classifier: no model weights

    untrusted = sio.get_untrusted_types(file=path)
    assert untrusted == [
        "skembed.document.DocumentPoolEmbeddings",
        "skembed.transformer.TransformerEmbeddings",
    ]
    with pytest.raises(sio.exceptions.UntrustedTypesFoundException):
        sio.load(path)  # nothing is trusted implicitly
    loaded = sio.load(path, trusted=untrusted)
    assert "_model" not in loaded["embed"].__dict__  # weights reload from the model files
    np.testing.assert_array_equal(loaded.predict_proba(texts), pipe.predict_proba(texts))
    assert (loaded.predict(texts) == pipe.predict(texts)).all()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return build_files(tmp_path_factory.mktemp("persist"))


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_estimator_trusts_only_skembed_types(name, files, tiny_model):
    labels = [0, 1, 0, 1]
    est = make(name, files, tiny_model)
    est.fit(DOCS, labels if name == "CharacterEmbeddings" else None)
    blob = sio.dumps(est)
    untrusted = sio.get_untrusted_types(data=blob)
    assert untrusted and all(t.startswith("skembed.") for t in untrusted), untrusted
    loaded = sio.loads(blob, trusted=untrusted)
    for got, want in zip(rows(loaded.transform(DOCS)), rows(est.transform(DOCS)), strict=True):
        np.testing.assert_array_equal(got, want)
