"""skembed.dask at scale: Parquet in, Parquet out per partition, on a LocalCluster of 1 and 2 workers.

Writes a corpus of short random documents (2 to 10 words, Zipf-distributed over MiniLM's
vocabulary, an ``id`` column that is a permutation of the row numbers) as one Parquet file per
partition, then for each size and number of workers starts a fresh ``LocalCluster`` (worker
processes with 1 thread each, state cache off: a corpus streamed once gains nothing from it)
and runs ``skembed.dask.write_parquet`` on ``dd.read_parquet(input, index="id")``. It reports:

* documents/s in all and per worker, after a warm-up that loads the model in every worker
  (start-up reported apart), with the workers' CPU seconds beside the wall time;
* peak RSS per worker (``ru_maxrss``) after the warm-up and after the corpus: the growth over
  the warm-up must not depend on the corpus size;
* rows out == rows in, ids in input order, no duplicate, and the vectors of a sample equal to
  one process's ``transform`` within the contract's 1e-5;
* a worker killed (SIGKILL) mid-run: the output still holds every id once, in order;
* the whole job (client, scheduler, workers) killed mid-run and started again with the same
  output folder and a state folder (``WorkerSetup(state_directory=...)``): the partitions
  already written are skipped, ``documents_computed`` (summed over the workers) counts only
  the documents of the others that were not in the state folder, and the output files equal
  those of the uninterrupted run.

The default sizes are reduced so that ``make bench`` stays short (under 3 minutes on 2 cores at
load 8, most of it starting clusters);
``--full`` runs 100,000 and 1,000,000 documents in partitions of 10,000. ``--model
minilm`` uses the packaged MiniLM instead of the tiny random BERT (2 layers, hidden 32, MiniLM's
tokenizer) of ``bench_memory.py``. Prints ``| benchmark | metric | value | baseline | ratio |``
rows and lines of detail (load average before and after).

    python benchmarks/bench_scale.py [--full] [--sizes 10000 50000] [--workers 1 2]
        [--partition-size 1000] [--kill-size 10000] [--model tiny] [--skip-kill]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pandas as pd
from _common import HEADER, local_cluster, machine, make_texts, minilm_path, row, vocabulary

# Some VMs advertise AMX without enabling it; oneDNN's bfloat16 kernels then die (SIGILL).
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")

SAMPLE = 1000  # documents compared with a single process
ATOL = 1e-5  # the contract's tolerance between processes (float32)
BATCH_SIZE = 64
STATE_FOLDER_BUDGET = 64 * 2**20  # memory tier of the resumed job's workers


def write_corpus(folder: str, n_docs: int, partition_size: int) -> None:
    """One Parquet file per partition: ``id`` (a permutation of 0..n-1) and ``text``."""
    words = vocabulary(minilm_path())
    os.makedirs(folder, exist_ok=True)
    for number, start in enumerate(range(0, n_docs, partition_size)):
        rows = np.arange(start, min(start + partition_size, n_docs), dtype=np.int64)
        texts = make_texts(len(rows), range(2, 11), seed=number, words=words)
        ids = (rows * 7919) % n_docs  # 7919 is prime: a permutation for these sizes
        frame = pd.DataFrame({"id": ids, "text": texts})
        frame.to_parquet(os.path.join(folder, f"in.{number:05d}.parquet"), index=False)


def read_input(folder: str):
    import dask.dataframe as dd

    return dd.read_parquet(folder, index="id")["text"]


def estimator(model: str):
    from skembed import TransformerDocumentEmbeddings

    return TransformerDocumentEmbeddings(
        model, pooling="mean", device="cpu", batch_size=BATCH_SIZE
    ).fit()


def worker_usage() -> dict:
    """In a worker: peak RSS (MiB), CPU seconds, documents run through the network."""
    import skembed

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "peak_mib": usage.ru_maxrss / 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "computed": skembed.cache_info()["documents_computed"],
        "shared_hits": skembed.cache_info()["shared_hits"],
    }


def check_output(out_folder: str, in_folder: str) -> dict:
    """Rows, ids in order and duplicates of the output against the input (ids only read)."""
    import pyarrow.parquet as pq

    ids_in = np.concatenate(
        [
            pq.read_table(os.path.join(in_folder, f), columns=["id"])["id"].to_numpy()
            for f in sorted(os.listdir(in_folder))
        ]
    )
    parts = sorted(f for f in os.listdir(out_folder) if f.endswith(".parquet"))
    ids_out = np.concatenate(
        [pq.read_table(os.path.join(out_folder, f), columns=["id"])["id"].to_numpy() for f in parts]
    )
    return {
        "rows_in": len(ids_in),
        "rows_out": len(ids_out),
        "in_order": bool(len(ids_in) == len(ids_out) and np.array_equal(ids_in, ids_out)),
        "duplicates": int(len(ids_out) - len(np.unique(ids_out))),
        "files": len(parts),
    }


def sample_gap(emb, out_folder: str, in_folder: str) -> float:
    """Max |worker - single process| over a sample spread over the corpus (first rows of
    evenly spaced partitions)."""
    files = sorted(os.listdir(in_folder))
    picks = files[:: max(1, len(files) // 10)]
    per_file = max(1, SAMPLE // len(picks))
    gap = 0.0
    for name in picks:
        number = int(name.split(".")[1])
        texts = pd.read_parquet(os.path.join(in_folder, name)).set_index("id")["text"][:per_file]
        out = pd.read_parquet(os.path.join(out_folder, f"part.{number:05d}.parquet"))
        got = out.loc[texts.index].to_numpy()
        gap = max(gap, float(np.abs(got - emb.transform(texts)).max()))
    return gap


def throughput(emb, corpora: dict[int, str], tmp: str, n_workers: int, then=None) -> dict:
    """write_parquet over each corpus in turn (smallest first) in the same workers of one
    fresh cluster; the usage of every worker after each. ``ru_maxrss`` only rises, so a peak
    that stays put over the larger corpus means memory did not grow with the documents.
    ``then(client)``, when given, runs on the same cluster afterwards (its result under
    ``"then"``: a cluster's start costs 10 to 30 s on this machine)."""
    from distributed import Client

    import skembed
    import skembed.dask as sd

    start = time.perf_counter()
    runs = {}
    with local_cluster(n_workers) as cluster, Client(cluster) as client:
        client.wait_for_workers(n_workers)
        client.register_plugin(sd.WorkerSetup(state_cache=False, torch_threads=1))
        client.run(lambda: sd.embed_partition(pd.Series(["warm up"]), emb))
        ready = time.perf_counter() - start
        warm = client.run(worker_usage)
        for n, in_folder in corpora.items():
            client.run(skembed.clear_cache, models=False)  # documents_computed from 0
            before = client.run(worker_usage)
            out_folder = os.path.join(tmp, f"out-{n}-{n_workers}")
            start = time.perf_counter()
            report = sd.write_parquet(emb, read_input(in_folder), out_folder, resume=False)
            seconds = time.perf_counter() - start
            after = client.run(worker_usage)
            runs[n] = {
                "ready_s": ready,
                "seconds": seconds,
                "rows": report["rows"],
                "out": out_folder,
                "cpu_s": sum(after[w]["cpu_s"] - before[w]["cpu_s"] for w in after),
                "warm_peak_mib": [warm[w]["peak_mib"] for w in sorted(after)],
                "peak_mib": [after[w]["peak_mib"] for w in sorted(after)],
                "computed": [after[w]["computed"] for w in sorted(after)],
            }
        if then is not None:
            runs["then"] = then(client)
    return runs


def kill_one_worker(client, emb, in_folder: str, out_folder: str) -> dict:
    """On a cluster of two workers: SIGKILL one once a quarter of the files are written."""
    import skembed.dask as sd

    n_parts = len(os.listdir(in_folder))
    pids = sorted(client.run(os.getpid).values())
    done: dict = {}
    job = threading.Thread(
        target=lambda: done.update(
            sd.write_parquet(emb, read_input(in_folder), out_folder, resume=False)
        )
    )
    job.start()
    while job.is_alive() and written(out_folder) < max(1, n_parts // 4):
        time.sleep(0.05)
    at = written(out_folder)
    os.kill(pids[0], signal.SIGKILL)
    job.join()
    client.wait_for_workers(2, timeout=120)
    restarted = pids[0] not in client.run(os.getpid).values()
    return {"killed_after_files": at, "files": n_parts, "restarted": restarted, **done}


def written(folder: str) -> int:
    if not os.path.isdir(folder):
        return 0
    return sum(name.endswith(".parquet") for name in os.listdir(folder))


def child_job(model: str, in_folder: str, out_folder: str, states: str) -> None:
    """``--child-job``: a whole job in its own process (killed from outside, then run again)."""
    from distributed import Client

    import skembed.dask as sd

    emb = estimator(model)
    with local_cluster(2) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        setup = sd.WorkerSetup(
            state_max_bytes=STATE_FOLDER_BUDGET, torch_threads=1, state_directory=states
        )
        client.register_plugin(setup)
        report = sd.write_parquet(emb, read_input(in_folder), out_folder)
        usage = client.run(worker_usage)
    print(json.dumps({**report, "usage": list(usage.values())}), flush=True)


def kill_whole_job(model: str, in_folder: str, out_folder: str, states: str) -> dict:
    """Start the job in a new process group, SIGKILL the group at half the files, run again."""
    n_parts = len(os.listdir(in_folder))
    cmd = [sys.executable, __file__, "--child-job", model, in_folder, out_folder, states]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    while first.poll() is None and written(out_folder) < n_parts // 2:
        time.sleep(0.05)
    killed_at = written(out_folder)
    os.killpg(first.pid, signal.SIGKILL)  # client, scheduler, nannies and workers at once
    first.wait()
    time.sleep(1)  # let the kernel reap the group
    states_mib = folder_mib(states)
    start = time.perf_counter()
    again = subprocess.run(cmd, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    report = json.loads(again.stdout.strip().splitlines()[-1])
    return {
        "files": n_parts,
        "killed_at": killed_at,
        "states_mib": states_mib,
        "rerun_s": seconds,
        **report,
    }


def folder_mib(folder: str) -> float:
    """Bytes of the files under ``folder`` (its entries are symbolic links: not followed)."""
    total = 0
    for root, _, files in os.walk(folder):
        total += sum(os.lstat(os.path.join(root, f)).st_size for f in files)
    return total / 2**20


def same_files(a: str, b: str) -> tuple[bool, float]:
    """Whether two output folders hold the same frames, and the max abs difference."""
    left, right = pd.read_parquet(a), pd.read_parquet(b)
    if not left.index.equals(right.index):
        return False, float("inf")
    return left.equals(right), float(np.abs(left.to_numpy() - right.to_numpy()).max())


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="100,000 and 1,000,000 documents")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--partition-size", type=int, default=None)
    parser.add_argument("--kill-size", type=int, default=None)
    parser.add_argument("--model", default="tiny", help="tiny, minilm, or a model folder")
    parser.add_argument("--skip-kill", action="store_true")
    parser.add_argument("--child-job", nargs=4, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_job:
        child_job(*args.child_job)
        return
    sizes = args.sizes or ([100_000, 1_000_000] if args.full else [10_000, 50_000])
    part_size = args.partition_size or (10_000 if args.full else 1_000)
    kill_size = args.kill_size or min(sizes)

    import torch
    from bench_memory import benchmark_model

    torch.set_num_threads(1)  # as in each worker: the single-process sample is comparable
    print(f"# load average before: {load()}", flush=True)
    print(f"# {machine()}", flush=True)
    cpu_start = time.process_time()
    rows, details = [], []
    with tempfile.TemporaryDirectory() as tmp:
        model, label = benchmark_model(args.model, tmp)
        emb = estimator(model)
        name = f"scale: {label}, LocalCluster"
        corpora = {}
        for n in sizes:
            corpora[n] = os.path.join(tmp, f"in-{n}")
            write_corpus(corpora[n], n, part_size)
        runs, killed = {}, None
        kill = not args.skip_kill and 2 in args.workers  # the kill runs need two workers
        for w in args.workers:
            then = None
            if w == 2 and kill:
                out = os.path.join(tmp, "killed-worker")
                then = functools.partial(
                    kill_one_worker, emb=emb, in_folder=corpora[kill_size], out_folder=out
                )
            measured = throughput(emb, corpora, tmp, w, then)
            killed = measured.pop("then", killed)
            for n, run in measured.items():
                runs[n, w] = run
                check = check_output(run["out"], corpora[n])
                gap = sample_gap(emb, run["out"], corpora[n])
                details.append(
                    f"{n:,} docs, {w} worker(s), {check['files']} partitions: "
                    f"{run['seconds']:.1f} s wall, {run['cpu_s']:.1f} worker CPU s (start + "
                    f"model load before: {run['ready_s']:.1f} s); rows in/out "
                    f"{check['rows_in']:,}/{check['rows_out']:,}, ids in order "
                    f"{check['in_order']}, duplicates {check['duplicates']}; documents computed "
                    f"per worker {run['computed']}; peak RSS per worker after the warm-up "
                    f"{fmt(run['warm_peak_mib'])} MiB, after this corpus {fmt(run['peak_mib'])} "
                    f"MiB; max |worker - single process| on {SAMPLE} docs {gap:.1e} (goal <= "
                    f"{ATOL:g}); load {load()}"
                )
                print(f"# {details[-1]}", flush=True)
                if not (check["in_order"] and check["rows_in"] == check["rows_out"]):
                    raise SystemExit(f"output of {n} docs, {w} workers lost or reordered rows")
                if gap > ATOL:
                    raise SystemExit(f"sample differs from one process by {gap:.1e}")
                if (n, w) != (kill_size, 2):
                    remove(run["out"])
        one = args.workers[0]
        for n in sizes:
            for w in args.workers:
                run = runs[n, w]
                rate = run["rows"] / run["seconds"]
                base = runs[n, one]["rows"] / runs[n, one]["seconds"]
                rows.append(
                    (
                        f"{name}, {w} worker(s), {n:,} docs",
                        "docs/s, all workers (per worker; worker CPU s)",
                        f"{rate:,.0f} ({rate / w:,.0f}; {run['cpu_s']:,.0f} s)",
                        f"{base:,.0f} ({one} worker(s))" if w != one else "-",
                        f"{rate / base:.2f}" if w != one else "-",
                    )
                )
        for w in args.workers:
            small, large = runs[sizes[0], w], runs[sizes[-1], w]
            warm = small["warm_peak_mib"]
            grow_small = max(a - b for a, b in zip(small["peak_mib"], warm))
            grow_large = max(a - b for a, b in zip(large["peak_mib"], warm))
            rows.append(
                (
                    f"{name}, {w} worker(s)",
                    f"peak RSS per worker, max: after {sizes[0]:,} then {sizes[-1]:,} docs / "
                    f"after {sizes[0]:,} docs (growth over the warm-up)",
                    f"{max(large['peak_mib']):.0f} MiB (+{grow_large:.0f})",
                    f"{max(small['peak_mib']):.0f} MiB (+{grow_small:.0f})",
                    f"{max(large['peak_mib']) / max(small['peak_mib']):.2f}",
                )
            )
        if kill:
            in_folder = corpora[kill_size]
            reference = os.path.join(tmp, f"out-{kill_size}-2")
            check = check_output(os.path.join(tmp, "killed-worker"), in_folder)
            same, gap = same_files(os.path.join(tmp, "killed-worker"), reference)
            details.append(
                f"one of 2 workers SIGKILLed after {killed['killed_after_files']} of "
                f"{killed['files']} files; restarted by its nanny: {killed['restarted']}; rows "
                f"in/out {check['rows_in']:,}/{check['rows_out']:,}, ids in order "
                f"{check['in_order']}, duplicates {check['duplicates']}; equal to the "
                f"uninterrupted run: {same} (max diff {gap:.1e})"
            )
            print(f"# {details[-1]}", flush=True)
            rows.append(
                (
                    f"{name}, 2 workers, {kill_size:,} docs, one worker killed mid-run",
                    "rows out (ids in order, duplicates); equal to the uninterrupted run",
                    f"{check['rows_out']:,} ({check['in_order']}, {check['duplicates']}); {same}",
                    f"{check['rows_in']:,} rows in",
                    f"{check['rows_out'] / check['rows_in']:.2f}",
                )
            )
            out_folder = os.path.join(tmp, "killed-job")
            job = kill_whole_job(model, in_folder, out_folder, os.path.join(tmp, "states"))
            check = check_output(out_folder, in_folder)
            same, gap = same_files(out_folder, reference)
            computed = sum(u["computed"] for u in job["usage"])
            from_folder = sum(u["shared_hits"] for u in job["usage"])
            left = job["rows"]
            details.append(
                f"whole job SIGKILLed after {job['killed_at']} of {job['files']} files (state "
                f"folder then {job['states_mib']:.0f} MiB); run again: {len(job['skipped'])} "
                f"partitions skipped, {len(job['written'])} written ({left:,} rows) in "
                f"{job['rerun_s']:.1f} s with start-up; documents computed {computed:,}, read "
                f"from the state folder {from_folder:,}; rows in/out {check['rows_in']:,}/"
                f"{check['rows_out']:,}, ids in order {check['in_order']}, duplicates "
                f"{check['duplicates']}; equal to the uninterrupted run: {same} (max diff "
                f"{gap:.1e})"
            )
            print(f"# {details[-1]}", flush=True)
            rows.append(
                (
                    f"{name}, 2 workers, {kill_size:,} docs, whole job killed and run again",
                    "documents computed on the rerun (partitions skipped); equal output",
                    f"{computed:,} ({len(job['skipped'])} of {job['files']}); {same}",
                    f"{left:,} rows in unwritten partitions",
                    f"{computed / max(1, left):.2f}",
                )
            )
    print(
        f"# load average after: {load()}; this process's CPU {time.process_time() - cpu_start:.0f} s"
    )
    print(HEADER)
    for r in rows:
        row(*r)


def fmt(values) -> str:
    return ", ".join(f"{v:.0f}" for v in values)


def remove(folder: str) -> None:
    for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))
    os.rmdir(folder)


if __name__ == "__main__":
    main()
