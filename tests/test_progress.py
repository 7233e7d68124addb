"""One progress bar per public call that embeds documents, counting documents, reaching the
call's number of documents; none with ``show_progress_bar=False``."""

from __future__ import annotations

import io

import pytest
import torch
import tqdm.auto
import tqdm.std
from sklearn.pipeline import make_pipeline
from tiny_embedders import build_files, make

import skembed
import skembed.document
from skembed import BaseTokenEmbedder, DocumentPoolEmbeddings, StackedEmbeddings, WordEmbeddings
from skembed._batching import Progress

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_caches")

TEXTS = ["the cat sat on the mat", "hello world", "", "berlin", "the mat", "cat", "world cat"]
N = len(TEXTS)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return build_files(tmp_path_factory.mktemp("progress"))


@pytest.fixture
def bars(monkeypatch, tiny_model):
    """The tqdm bars made while the test runs (written to a string, not the terminal)."""
    tiny_model("bert")  # built before: saving a model shows bars of its own
    made = []

    class Recording(tqdm.std.tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("file", io.StringIO())
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)
    return made


def one_bar(bars, n=N):
    """The one bar of a call, which counted ``n`` documents to its end."""
    assert len(bars) == 1, [(b.desc, b.total, b.n) for b in bars]
    bar = bars.pop()
    assert (bar.unit, bar.total, bar.n) == ("doc", n, n)
    return bar


def on(name, files, tiny_model, **kwargs):
    return make(name, files, tiny_model, show_progress_bar=True, **kwargs)


def test_a_token_embedder_shows_one_bar_per_call(files, tiny_model, bars):
    for name in ("TransformerEmbeddings", "FlairEmbeddings", "WordEmbeddings", "ELMoEmbeddings"):
        emb = on(name, files, tiny_model, batch_size=2).fit()
        assert bars == [], [(b.desc, b.unit, b.total) for b in bars]
        assert len(emb.transform(TEXTS).data)  # the transformers' vectors are computed when read
        assert one_bar(bars).desc == type(emb).__name__
        assert len(emb.transform(TEXTS).data)  # states from the cache count too
        one_bar(bars)
        docs = emb._documents(TEXTS)
        list(emb.iter_batches(docs))
        one_bar(bars)
        emb.pool_documents(docs, "mean")
        one_bar(bars)


def test_a_wrapping_pooler_shows_one_bar_over_all_its_chunks(files, tiny_model, bars, monkeypatch):
    monkeypatch.setattr(skembed.document, "_CHUNK_BATCHES", 1)  # chunks of 2 documents: 4
    for name in ("TransformerEmbeddings", "WordEmbeddings", "FlairEmbeddings"):
        pooler = DocumentPoolEmbeddings(on(name, files, tiny_model, batch_size=2)).fit()
        for _ in range(2):  # computed, then from the state store (rows or states)
            assert pooler.transform(TEXTS).shape[0] == N
            one_bar(bars)
        skembed.set_cache(enabled=False)
        pooler.transform(TEXTS)
        one_bar(bars)
        skembed.set_cache(enabled=True)


def test_a_pipeline_shows_one_bar(files, tiny_model, bars):
    for name in ("TransformerEmbeddings", "FlairEmbeddings"):
        pipe = make_pipeline(on(name, files, tiny_model, batch_size=2), DocumentPoolEmbeddings())
        pipe.fit_transform(TEXTS)
        one_bar(bars)
        pipe.transform(TEXTS)
        one_bar(bars)


def test_transformer_document_embeddings_shows_one_bar(files, tiny_model, bars):
    emb = on("TransformerDocumentEmbeddings", files, tiny_model, batch_size=2).fit()
    emb.transform(TEXTS)
    one_bar(bars)


def test_a_stack_shows_one_bar_advanced_by_every_member(files, tiny_model, bars, monkeypatch):
    stack = on("StackedEmbeddings", files, tiny_model).fit()
    stack.transform(TEXTS)
    assert one_bar(bars).desc == "StackedEmbeddings"
    monkeypatch.setattr(skembed.document, "_CHUNK_BATCHES", 1)
    DocumentPoolEmbeddings(stack).fit().transform(TEXTS)
    one_bar(bars)
    # One member showing bars is enough; a member written by a user, whose embed_documents
    # takes no bar, is counted when it returns.

    class Plain(WordEmbeddings):
        def embed_documents(self, docs):
            return super().embed_documents(docs)

    stack = StackedEmbeddings(
        [
            ("plain", Plain(files["glove"], device="cpu")),
            ("flair", on("FlairEmbeddings", files, tiny_model, batch_size=2)),
        ]
    ).fit()
    stack.transform(TEXTS)
    one_bar(bars)


def test_pooled_flair_shows_one_bar_in_fit_and_in_transform(files, tiny_model, bars):
    emb = on("PooledFlairEmbeddings", files, tiny_model, batch_size=2)
    emb.fit(TEXTS)
    assert one_bar(bars).desc == "PooledFlairEmbeddings memory"
    assert emb.show_progress_bar is True
    emb.transform(TEXTS)
    one_bar(bars)
    emb.fit()  # no corpus: no bar
    assert bars == []


def test_character_embeddings_transform_shows_one_document_bar(files, tiny_model, bars):
    emb = on("CharacterEmbeddings", files, tiny_model, max_epochs=1).fit(TEXTS, [0, 1] * 3 + [0])
    bars.clear()  # fit's bar over epochs
    emb.transform(TEXTS)
    one_bar(bars)


class Ones(BaseTokenEmbedder):
    """A family written by a user: a vector of ones per token."""

    _feature_prefix = "ones"

    def __init__(self, tokenizer=None, device="cpu", batch_size=2, precision="float32",
                 show_progress_bar=True):  # fmt: skip
        self.tokenizer, self.device, self.batch_size = tokenizer, device, batch_size
        self.precision, self.show_progress_bar = precision, show_progress_bar

    def _model_key(self):
        return ("ones",)

    def _load_model(self, device):
        return "ones"

    def _forward(self, model, docs):
        return [torch.ones((len(d), 2)) for d in docs]

    def _combine(self, model, states):
        return states

    def _n_features(self, model):
        return 2


def test_a_family_overriding_iter_batches_hands_the_bar_down(bars):
    class Doubled(Ones):
        def iter_batches(self, docs, n_docs=None, progress=None):
            for index, tensors in super().iter_batches(docs, n_docs, progress=progress):
                yield index, [2 * t for t in tensors]

    assert Doubled().fit().transform(TEXTS)[0].max() == 2
    one_bar(bars)
    assert DocumentPoolEmbeddings(Doubled()).fit().transform(TEXTS).max() == 2
    one_bar(bars)


def test_an_override_without_the_bar_argument_still_works(bars):
    class Old(Ones):
        def iter_batches(self, docs, n_docs=None):  # written before bars were handed down
            yield from super().iter_batches(docs, n_docs=n_docs)

    assert Old(show_progress_bar=False).fit().transform(TEXTS)[0].shape == (6, 2)
    assert DocumentPoolEmbeddings(Old(show_progress_bar=False)).fit().transform(TEXTS).max() == 1
    assert bars == []
    Old().fit().transform(TEXTS)
    assert bars and all(b.n == b.total == N for b in bars)


def test_no_bar_when_off(files, tiny_model, bars, monkeypatch):
    monkeypatch.setattr(skembed.document, "_CHUNK_BATCHES", 1)
    for name in ("TransformerEmbeddings", "WordEmbeddings", "PooledFlairEmbeddings"):
        emb = make(name, files, tiny_model, batch_size=2)
        assert len(emb.fit(TEXTS).transform(TEXTS).data)
        DocumentPoolEmbeddings(emb).fit().transform(TEXTS)
        make_pipeline(emb, DocumentPoolEmbeddings()).fit_transform(TEXTS)
    make("StackedEmbeddings", files, tiny_model).fit().transform(TEXTS)
    make("TransformerDocumentEmbeddings", files, tiny_model).fit().transform(TEXTS)
    assert bars == []


def test_shares_of_a_bar_add_up_to_its_documents():
    bar = Progress(7)
    parts = bar.shares(7, 3)
    for step in (2, 5):
        for part in parts:
            part.update(step if part.n + step <= 7 else 7 - part.n)
            assert bar.n <= 7
    assert bar.n == 7
    parts[0].finish()  # nothing left to count
    assert bar.n == 7
