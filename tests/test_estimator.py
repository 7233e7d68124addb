"""The scikit-learn contract: checks, pipelines, grid search, pickling, outputs, caches."""

import os
import pickle
import subprocess
import sys
import textwrap

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.utils import estimator_checks as ec
from tolerances import proba_atol

import skembed
from skembed import (
    BertEmbeddings,
    DocumentPoolEmbeddings,
    OpenAIGPT2Embeddings,
    OpenAIGPTEmbeddings,
    RoBERTaEmbeddings,
    TransformerDocumentEmbeddings,
    TransformerEmbeddings,
    TransformerXLEmbeddings,
    XLMEmbeddings,
    XLNetEmbeddings,
)

TEXTS = [
    "what a wonderful film , I loved it",
    "great acting and a great story",
    "a delightful and moving picture",
    "I enjoyed every minute",
    "brilliant , funny and warm",
    "the best movie of the year",
    "a terrible film , I hated it",
    "boring and far too long",
    "awful acting and a dull story",
    "I want my money back",
    "the worst movie of the year",
    "dreadful , tedious and cold",
]
LABELS = [1] * 6 + [0] * 6

DATA_FREE_CHECKS = [
    ec.check_estimator_cloneable,
    ec.check_no_attributes_set_in_init,
    ec.check_get_params_invariance,
    ec.check_set_params,
    ec.check_parameters_default_constructible,
    ec.check_estimator_repr,
    ec.check_do_not_raise_errors_in_init_or_set_params,
    ec.check_mixin_order,
]
CORE_CLASSES = [
    TransformerEmbeddings,
    BertEmbeddings,
    OpenAIGPTEmbeddings,
    OpenAIGPT2Embeddings,
    XLNetEmbeddings,
    XLMEmbeddings,
    RoBERTaEmbeddings,
    TransformerXLEmbeddings,
    TransformerDocumentEmbeddings,
    DocumentPoolEmbeddings,
]


def public_estimator_classes():
    """Every public estimator class of skembed (families added later are picked up too)."""
    from sklearn.base import BaseEstimator

    found = []
    for name in skembed.__all__:
        obj = getattr(skembed, name)
        if isinstance(obj, type) and issubclass(obj, BaseEstimator) and not name.startswith("Base"):
            found.append(obj)
    return found


# Values for required constructor parameters, by class name then by parameter name.
REQUIRED = {
    "StackedEmbeddings": {
        "embeddings": [("a", TransformerEmbeddings()), ("b", TransformerEmbeddings(layers="0"))]
    },
    "WordEmbeddings": {"embeddings": "glove"},
    "FlairEmbeddings": {"model": "news-forward"},
    "PooledFlairEmbeddings": {"model": "news-forward"},
}


def instance(cls):
    """An instance built only from defaults and the required parameters above."""
    import inspect

    params = inspect.signature(cls.__init__).parameters.values()
    required = [p.name for p in params if p.default is p.empty and p.name != "self"]
    given = REQUIRED.get(cls.__name__, {})
    return cls(**{name: given[name] for name in required})


@pytest.mark.parametrize("cls", public_estimator_classes(), ids=lambda c: c.__name__)
@pytest.mark.parametrize("check", DATA_FREE_CHECKS, ids=lambda c: c.__name__)
def test_data_free_sklearn_checks(cls, check):
    check(cls.__name__, instance(cls))


def test_core_classes_are_public():
    assert set(CORE_CLASSES) <= set(public_estimator_classes())


@pytest.mark.parametrize("cls", public_estimator_classes(), ids=lambda c: c.__name__)
def test_tags_are_honest(cls):
    tags = instance(cls).__sklearn_tags__()
    assert tags.input_tags.string is True
    assert tags.input_tags.two_d_array is False


@pytest.fixture(scope="module")
def pipeline_and_grid(minilm_path):
    pipe = Pipeline(
        [
            ("emb", TransformerEmbeddings(minilm_path)),
            ("pool", DocumentPoolEmbeddings()),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    )
    grid = {
        "emb__layers": ["-1", "-2,-3"],
        "emb__pooling_operation": ["first", "mean"],
        "pool__pooling": ["mean", "max"],
    }
    return pipe, grid


def test_pipeline_fits_and_predicts(pipeline_and_grid):
    pipe, _ = pipeline_and_grid
    pipe = clone(pipe).fit(TEXTS, LABELS)
    assert pipe.score(TEXTS, LABELS) == 1.0
    assert pipe.predict(["a wonderful , moving film"]).tolist() == [1]


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_grid_search(pipeline_and_grid, n_jobs):
    pipe, grid = pipeline_and_grid
    search = GridSearchCV(pipe, grid, cv=2, n_jobs=n_jobs).fit(TEXTS, LABELS)
    assert len(search.cv_results_["params"]) == 8
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.predict(["I loved it"]).shape == (1,)


def test_grid_search_runs_the_network_once_per_document(pipeline_and_grid):
    pipe, grid = pipeline_and_grid
    skembed.clear_cache(models=False)
    clone(pipe[0]).fit()  # loaded (again, when other tests' models pushed it out of the cache)
    before = skembed.cache_info()
    GridSearchCV(pipe, grid, cv=3).fit(TEXTS, LABELS)
    info = skembed.cache_info()
    # every document missed the cache exactly once: one forward pass over the data
    assert info["state_misses"] == len(TEXTS)
    assert info["documents_computed"] == len(TEXTS)
    # no candidate or fold loaded the model again: they share the loaded one
    assert before["model_loads"] == info["model_loads"]


def test_cached_and_uncached_results_are_identical(minilm_path):
    emb = TransformerEmbeddings(minilm_path, layers="-1,0", pooling_operation="mean").fit()
    skembed.clear_cache(models=False)
    first = emb.transform(TEXTS).to_numpy()
    cached = emb.transform(TEXTS).to_numpy()
    skembed.set_cache(enabled=False)
    try:
        uncached = emb.transform(TEXTS).to_numpy()
        assert skembed.cache_info()["state_entries"] == 0
    finally:
        skembed.set_cache(enabled=True)
    np.testing.assert_array_equal(first, cached)
    np.testing.assert_array_equal(first, uncached)


def test_state_cache_budget_evicts():
    import torch

    from skembed._caches import StateCache

    cache = StateCache(max_bytes=1000)
    for i in range(10):
        cache.put(i, torch.zeros(50))  # 200 bytes each
    assert len(cache) == 5 and cache.nbytes == 1000
    assert cache.get(0) is None and cache.get(9) is not None
    cache.resize(400)
    assert len(cache) == 2


def test_pickle_drops_weights_and_reloads(pipeline_and_grid, tmp_path):
    pipe, _ = pipeline_and_grid
    pipe = clone(pipe).fit(TEXTS, LABELS)
    expected = pipe.predict_proba(TEXTS)
    blob = pickle.dumps(pipe)
    assert len(blob) < 200_000  # no weights inside
    path = tmp_path / "pipe.joblib"
    joblib.dump(pipe, path)
    code = textwrap.dedent(
        f"""
        import joblib, numpy as np
        pipe = joblib.load({str(path)!r})
        np.save({str(tmp_path / "proba.npy")!r}, pipe.predict_proba({TEXTS!r}))
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    # Another process: features within the contract's tolerance.
    got = np.load(tmp_path / "proba.npy")
    np.testing.assert_allclose(got, expected, atol=proba_atol(pipe[-1]), rtol=0)


def test_pickled_cuda_device_loads_on_cpu(minilm_path):
    emb = TransformerEmbeddings(minilm_path).fit()
    expected = emb.transform(["hello world"]).to_numpy()
    emb.set_params(device="cuda")  # as if fitted on a GPU machine
    restored = pickle.loads(pickle.dumps(emb))
    import torch

    if not torch.cuda.is_available():
        with pytest.warns(RuntimeWarning, match="CUDA is not available"):
            got = restored.transform(["hello world"]).to_numpy()
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_set_output_pandas_and_column_transformer(minilm_path):
    frame = pd.DataFrame({"text": TEXTS, "n": range(len(TEXTS))})
    pooled = DocumentPoolEmbeddings(TransformerEmbeddings(minilm_path))
    out = clone(pooled).set_output(transform="pandas").fit_transform(frame["text"])
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns[:2]) == ["mean_transformer_0", "mean_transformer_1"]
    for column in ("text", ["text"]):
        ct = ColumnTransformer([("emb", clone(pooled), column)], remainder="passthrough")
        assert ct.fit_transform(frame).shape == (len(TEXTS), 385)
    doc = TransformerDocumentEmbeddings(minilm_path).set_output(transform="pandas")
    assert doc.fit_transform(frame["text"]).columns[0] == "doc_0"
    pipe = make_pipeline(TransformerEmbeddings(minilm_path), DocumentPoolEmbeddings())
    assert isinstance(pipe.set_output(transform="pandas").fit_transform(TEXTS), pd.DataFrame)


def test_set_output_containers_of_every_kind(minilm_path):
    """One set_output per kind of output: token-level estimators accept every container and
    keep returning RaggedEmbeddings; document-level ones switch; an unknown container is a
    ValueError for both, also on None-accepting calls."""
    token = TransformerEmbeddings(minilm_path)
    stack = skembed.StackedEmbeddings([("a", TransformerEmbeddings(minilm_path))])
    document = DocumentPoolEmbeddings(TransformerEmbeddings(minilm_path))
    for estimator in (token, stack, document):
        for container in (None, "default", "pandas", "polars"):
            assert estimator.set_output(transform=container) is estimator
        with pytest.raises(ValueError, match="transform='xml' is not a valid output container"):
            estimator.set_output(transform="xml")
    rows = token.fit_transform(TEXTS[:2])
    assert isinstance(rows, skembed.RaggedEmbeddings)
    assert isinstance(stack.fit_transform(TEXTS[:2]), skembed.RaggedEmbeddings)
    assert isinstance(
        document.set_output(transform="pandas").fit_transform(TEXTS[:2]), pd.DataFrame
    )


def test_torch_output(minilm_path):
    import torch

    pooled = DocumentPoolEmbeddings(TransformerEmbeddings(minilm_path), output="torch")
    assert isinstance(pooled.fit_transform(TEXTS[:2]), torch.Tensor)
    doc = TransformerDocumentEmbeddings(minilm_path).fit()
    assert isinstance(doc.transform(TEXTS[:2]), np.ndarray)


def test_array_api_dispatch_returns_torch(minilm_path):
    pytest.importorskip("array_api_compat")
    # scipy must see SCIPY_ARRAY_API before it is imported: run in a fresh process.
    code = textwrap.dedent(
        f"""
        import torch
        from sklearn import config_context
        from skembed import TransformerDocumentEmbeddings
        doc = TransformerDocumentEmbeddings({minilm_path!r}).fit()
        with config_context(array_api_dispatch=True):
            out = doc.transform(["a text", "another"])
        assert isinstance(out, torch.Tensor) and out.shape == (2, 384), type(out)
        """
    )
    env = {**os.environ, "SCIPY_ARRAY_API": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_document_pooling_values():
    import torch

    from skembed.document import pool

    data = torch.tensor([[1.0, -2.0], [3.0, 4.0], [5.0, 0.0]])
    assert pool(data, [2, 0, 1], "mean").tolist() == [[2.0, 1.0], [0.0, 0.0], [5.0, 0.0]]
    assert pool(data, [2, 0, 1], "max").tolist() == [[3.0, 4.0], [0.0, 0.0], [5.0, 0.0]]
    assert pool(data, [2, 0, 1], "min").tolist() == [[1.0, -2.0], [0.0, 0.0], [5.0, 0.0]]


def test_pooler_after_embedder_equals_wrapping(minilm_path):
    emb = TransformerEmbeddings(minilm_path, layers="-2")
    for pooling in ("mean", "max", "min"):
        wrapped = DocumentPoolEmbeddings(emb, pooling=pooling).fit(TEXTS).transform(TEXTS + [""])
        after = make_pipeline(clone(emb), DocumentPoolEmbeddings(pooling=pooling))
        np.testing.assert_allclose(after.fit_transform(TEXTS + [""]), wrapped, atol=1e-6)
        assert (wrapped[-1] == 0).all()


@pytest.mark.parametrize(
    "params, message",
    [
        ({"layers": "7"}, r"layer 7 does not exist .* -7 to 6"),
        ({"layers": "x"}, "layers='x' is not valid"),
        (
            {"pooling_operation": "median"},
            r"choose one of \['first', 'last', 'first_last', 'mean'\]",
        ),
        ({"device": "gpu"}, "device='gpu' is not valid; choose one of 'auto', 'cpu', 'cuda'"),
        ({"precision": "int8"}, "precision='int8' is not valid"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"use_scalar_mix": True, "scalar_mix_weights": (1, 2)}, "2 values for 1 selected"),
        *[
            ({"layers": "-1,-2", "use_scalar_mix": True, "scalar_mix_weights": w}, message)
            for w, message in [
                ((float("nan"), 1), r"must be finite numbers; got \(nan, 1\)"),
                ((float("inf"), 1), r"must be finite numbers; got \(inf, 1\)"),
                ((-1, 2), "must be non-negative with a positive sum"),
                ((0, 0), "must be non-negative with a positive sum"),
                (("a", 1), "must be a tuple of numbers"),
                ("12", "must be a tuple of numbers"),
            ]
        ],
    ],
)
def test_bad_parameters_fail_in_fit(minilm_path, params, message):
    emb = TransformerEmbeddings(minilm_path, **params)  # nothing is validated in __init__
    with pytest.raises(ValueError, match=message):
        emb.fit()


@pytest.mark.parametrize(
    "weights, normalised",
    [((1e300, 1e300), (0.5, 0.5)), ((0.5e308, 1.5e308), (0.25, 0.75)), ((5e-324, 0), (1.0, 0.0))],
)
def test_scalar_mix_weights_never_overflow(minilm_path, weights, normalised):
    """Huge or tiny weights are normalised without overflow: the same vectors as the weights
    they are proportional to (the normalised weights are exact in float32 here)."""

    def embed(w):
        emb = TransformerEmbeddings(
            minilm_path, layers="-1,-2", use_scalar_mix=True, scalar_mix_weights=w
        )
        return emb.fit().transform(["the cat sat"]).to_numpy()

    got = embed(weights)
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got, embed(normalised))


def test_unknown_model_error_names_places(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        TransformerEmbeddings("no-such-org/no-such-model").fit()
    text = str(info.value)
    assert "no-such-org/no-such-model" in text and "Looked in" in text
    assert "https://huggingface.co/no-such-org/no-such-model" in text
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        TransformerEmbeddings(str(tmp_path / "empty")).fit()


def test_numpy_bools_are_flags(minilm_path):
    """A flag from a numpy array (a grid given as np.array([True, False])) is a bool."""
    emb = TransformerEmbeddings(minilm_path, layers="-1,-2", use_scalar_mix=np.True_).fit()
    assert emb.n_features_out_ == 384


def test_pickling_leaves_the_estimator_as_it_was(minilm_path):
    emb = TransformerEmbeddings(minilm_path).fit()
    before = dict(emb.__dict__)
    pickle.dumps(emb)
    assert emb.__dict__.keys() == before.keys() and emb._model is before["_model"]


def test_transform_defers_the_vectors_to_a_snapshot(minilm_path):
    """The vectors are computed when first read, with the settings of the transform call:
    parameters set afterwards do not change them, and a pooler after the step pools them
    from the state store without token rows (the same numbers as wrapping the embedder)."""
    emb = TransformerEmbeddings(minilm_path, layers="-1").fit()
    texts = ["the cat sat on the mat", "", "a dog"]
    out = emb.transform(texts)
    assert "not computed yet" in repr(out) and out.shape == (8, 384)
    emb.set_params(layers="0").fit()
    np.testing.assert_array_equal(
        out.to_numpy(), emb.set_params(layers="-1").fit().transform(texts).to_numpy()
    )
    pooled = DocumentPoolEmbeddings().fit(out).transform(emb.transform(texts))
    wrapped = DocumentPoolEmbeddings(emb).fit().transform(texts)
    np.testing.assert_array_equal(pooled, wrapped)
    copy = pickle.loads(pickle.dumps(emb.transform(texts)))
    assert copy.source is None
    np.testing.assert_array_equal(copy.to_numpy(), out.to_numpy())


def test_transform_before_fit_raises(minilm_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        TransformerEmbeddings(minilm_path).transform(["a"])


def test_input_errors_through_the_estimator(minilm_path):
    emb = TransformerEmbeddings(minilm_path).fit()
    with pytest.raises(TypeError, match="single str"):
        emb.transform("a bare string")
    with pytest.raises(ValueError, match="Document 1 is missing"):
        emb.transform(["ok", None])
    assert emb.transform([]).shape == (0, 384)


def test_precision_bfloat16_close_to_float32(minilm_path):
    f32 = TransformerDocumentEmbeddings(minilm_path, pooling="mean").fit().transform(TEXTS)
    bf16 = (
        TransformerDocumentEmbeddings(minilm_path, pooling="mean", precision="bfloat16")
        .fit()
        .transform(TEXTS)
    )
    assert bf16.dtype == np.float32
    cos = (f32 * bf16).sum(1) / np.linalg.norm(f32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cos.min() > 0.99
