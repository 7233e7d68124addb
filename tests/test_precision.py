"""Every family x precision on the CPU: each runs, close to float32, or ``fit`` refuses.

torch autocasts on the CPU too, but what runs in half precision there depends on the kernels
oneDNN has: matrix products in float16 and bfloat16 everywhere, an LSTM never in float16 and
in bfloat16 only on CPUs with AVX-512. No call may pass ``fit`` and then crash in
``transform``: an estimator either transforms with finite outputs close to float32, or its
``fit`` raises a ValueError that names the precision and says what to use instead.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_embedders import ALL, build_files, make, rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = [
    "the cat sat on the mat",
    "hello world , berlin is big and the mat is small",
    "a",
    ["xylophones", "quizzically", "jabbering"],
]
PRECISIONS = ["float32", "float16", "bfloat16"]

# Families that run a Flair character LM, an LSTM that is oneDNN's under CPU autocast.
RUN_FLAIR_LSTM = {
    "FlairEmbeddings",
    "PooledFlairEmbeddings",
    "StackedEmbeddings",  # word vectors + Flair
    "DocumentPoolEmbeddings-pipeline",  # Flair, then a pooler
}

# How far from float32 a half-precision forward pass may land, relative to the largest float32
# output of the same estimator. Autocast rounds the inputs of each half-precision matrix
# product to 11 (float16) or 8 (bfloat16) significant bits, a relative error of u = eps / 2
# (eps = 2**-10 and 2**-7) per rounding, while sums accumulate in float32; a few layers add a
# few such roundings up. 4 eps = 8 u is that bound with room (4e-3 for float16, 3e-2 for
# bfloat16); the tiny models here measure at most about 1 eps (Transformer-XL, ELMo, Flair).
RTOL = {name: 4 * torch.finfo(getattr(torch, name)).eps for name in PRECISIONS}


def lstm_runs(precision: str) -> bool:
    """Whether torch runs an LSTM under CPU autocast to ``precision`` on this machine."""
    if precision == "float32":
        return True
    try:
        with torch.inference_mode(), torch.autocast("cpu", dtype=getattr(torch, precision)):
            torch.nn.LSTM(4, 4)(torch.zeros(2, 1, 4))
    except RuntimeError:
        return False
    return True


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return build_files(tmp_path_factory.mktemp("precision"))


@pytest.fixture(scope="module")
def reference(files, tiny_model):
    """``reference(name)``: the float32 outputs of estimator ``name``, flat."""
    done: dict[str, np.ndarray] = {}

    def get(name: str) -> np.ndarray:
        if name not in done:
            est = make(name, files, tiny_model, precision="float32").fit(TEXTS)
            done[name] = flat(est.transform(TEXTS))
        return done[name]

    return get


def flat(out) -> np.ndarray:
    """Every number of an output, in one float64 array; outputs are float32 in every mode."""
    parts = [np.asarray(a) for a in rows(out)]
    assert all(a.dtype == np.float32 for a in parts)
    return np.concatenate([a.astype(np.float64).ravel() for a in parts])


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", sorted(ALL))
def test_every_family_runs_each_precision_on_the_cpu_or_refuses_it_in_fit(
    name, precision, files, tiny_model, reference
):
    est = make(name, files, tiny_model, precision=precision)
    if name in RUN_FLAIR_LSTM and not lstm_runs(precision):
        with pytest.raises(ValueError, match=f"precision='{precision}'.*Use precision='float32'"):
            est.fit(TEXTS)
        return
    out = flat(est.fit(TEXTS).transform(TEXTS))
    assert np.isfinite(out).all()
    expected = reference(name)
    assert out.shape == expected.shape
    error = np.abs(out - expected).max() if out.size else 0.0
    assert error <= RTOL[precision] * np.abs(expected).max()


def test_flair_refuses_float16_on_the_cpu_and_names_what_runs(files):
    """oneDNN has no float16 LSTM on any CPU: the error says which precision to use."""
    from skembed import FlairEmbeddings

    if lstm_runs("float16"):
        pytest.skip("this torch runs a float16 LSTM on the CPU")
    instead = "'float32' or 'bfloat16'" if lstm_runs("bfloat16") else "'float32'"
    with pytest.raises(ValueError, match=f"Use precision={instead} on the CPU"):
        FlairEmbeddings(files["flair"], device="cpu", precision="float16").fit()


def test_flair_fitted_elsewhere_runs_its_lstm_in_float32_on_this_cpu(files):
    """An estimator fitted in float16 on a GPU and unpickled on a machine without one runs
    on the CPU (``fit`` does not run again): its LSTM runs in float32 there, with a warning,
    instead of failing in ``transform``."""
    from skembed import FlairEmbeddings

    if lstm_runs("float16"):
        pytest.skip("this torch runs a float16 LSTM on the CPU")
    emb = FlairEmbeddings(files["flair"], device="cpu").fit()
    expected = flat(emb.transform(TEXTS))
    emb.set_params(precision="float16")  # as unpickled: fitted, never fitted on this CPU
    with pytest.warns(RuntimeWarning, match="LSTM runs in float32"):
        out = flat(emb.transform(TEXTS))
    assert np.isfinite(out).all()
    assert np.abs(out - expected).max() <= RTOL["float16"] * np.abs(expected).max()
