"""Property-based: random unicode documents through every embedder and pooler.

For any documents (strings of any code points, lone surrogates and control characters
included, or lists of arbitrary token strings): one row per token in (or one per document),
no NaN or inf, and each document's vectors are the same alone as in the batch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_embedders import ALL, build_files, is_pooler, make, rows

import skembed

# Every code point, surrogates included (hypothesis leaves them out unless asked).
CHARS = st.characters(exclude_categories=())
WORDS = st.text(CHARS, min_size=1, max_size=8)
TEXTS = st.lists(WORDS, max_size=8).map(" ".join)  # words may hold whitespace themselves
TOKEN_LISTS = st.lists(st.text(CHARS, max_size=6), max_size=6)  # "" and "\n" are tokens too
DOCS = st.lists(st.one_of(TEXTS, TOKEN_LISTS), min_size=1, max_size=4)

SETTINGS = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure is reproducible
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(autouse=True, scope="module")
def _setup():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    skembed.set_cache(enabled=False)  # "alone" must really run the network again
    yield
    skembed.set_cache(enabled=True)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, tiny_model):
    files = build_files(tmp_path_factory.mktemp("property"))
    built = {}

    def get(name):
        if name not in built:
            built[name] = make(name, files, tiny_model, batch_size=3).fit(["the cat"])
        return built[name]

    return get


@pytest.mark.parametrize("name", list(ALL))
def test_random_unicode_documents(name, fitted):
    est = fitted(name)

    @SETTINGS
    @given(docs=DOCS)
    def check(docs):
        out = est.transform(docs)
        got = rows(out)
        assert len(got) == len(docs)
        n_tokens = [len(d.split()) if isinstance(d, str) else len(d) for d in docs]
        if not is_pooler(name):
            assert out.lengths.tolist() == n_tokens
        for i, (doc, block) in enumerate(zip(docs, got)):
            assert np.isfinite(block).all(), f"document {i}: NaN or inf"
            alone = rows(est.transform([doc]))[0]
            np.testing.assert_allclose(block, alone, atol=1e-5, rtol=0)

    check()
