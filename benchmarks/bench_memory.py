"""Peak memory of ``DocumentPoolEmbeddings`` wrapping an embedder, for 10k and 100k documents.

Each run is a fresh process (``--child``) that makes its documents (5 to 15 words), loads the
model and embeds a first batch, reads its peak resident memory (``ru_maxrss``) as the
baseline, then embeds all documents and reads the peak again. The growth is what embedding the
corpus added on top of the documents themselves, the loaded model and one batch. The model is
a tiny random BERT (2 layers, hidden 32, the MiniLM tokenizer) so that 100,000 documents take
a minute or two; ``--model minilm`` uses the packaged MiniLM instead.

Three settings of the state cache: off (``skembed.set_cache(enabled=False)``), which shows the
streaming itself; on with its default 1 GiB budget (a call keeps its documents' states when
they all fit in the budget: 100,000 documents of the tiny model do, about 520 MiB); and on
with a 256 MiB budget, which they do not fit, so that the pass keeps none (as 100,000
documents of any real model would not fit the default budget: MiniLM's take over 10 GB).
The details give, per run, the size of the output (it grows with the corpus) and of the token lists of the whole
input, which ``transform`` never holds: it validates and pools 64 batches of documents at a
time.

    python benchmarks/bench_memory.py [--sizes 10000,100000] [--batch-size 32] [--model tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

from _common import HEADER, machine, minilm_path, row, vocabulary


def tiny_model(folder: str) -> str:
    """A random 2-layer BERT with the MiniLM tokenizer, saved with ``save_pretrained``."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(minilm_path())
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    path = os.path.join(folder, "tiny-bert")
    BertModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def benchmark_model(choice: str, folder: str) -> tuple[str, str]:
    """The model a ``--model`` option names, and its label: ``"tiny"`` (:func:`tiny_model`,
    saved in ``folder``), ``"minilm"`` (the packaged MiniLM) or a model folder."""
    if choice == "tiny":
        return tiny_model(folder), "tiny BERT (2 x 32)"
    if choice == "minilm":
        return minilm_path(), "MiniLM"
    return choice, os.path.basename(choice)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(n_docs: int, model: str, cache: bool, batch_size: int, budget_mib: int) -> None:
    import torch

    import skembed
    from skembed import DocumentPoolEmbeddings, TransformerEmbeddings

    rng = random.Random(0)
    words = vocabulary(minilm_path())
    texts = [" ".join(rng.choices(words, k=rng.randint(5, 15))) for _ in range(n_docs)]
    skembed.set_cache(enabled=cache, max_bytes=budget_mib * 2**20)
    emb = TransformerEmbeddings(model, device="cpu", batch_size=batch_size)
    pooled = DocumentPoolEmbeddings(emb).fit(texts[:batch_size])
    pooled.transform(texts[:batch_size])
    skembed.clear_cache(models=False)
    base = peak_mib()
    start = time.perf_counter()
    out = pooled.transform(texts)
    seconds = time.perf_counter() - start
    peak = peak_mib()  # before the token lists below are made (they are for the report only)
    info = skembed.cache_info()
    docs = emb._documents(texts)  # the token lists of the whole input, which transform never holds
    tokens = sum(sys.getsizeof(d) + sum(map(sys.getsizeof, d)) for d in docs)
    print(
        json.dumps(
            {
                "docs": n_docs,
                "token_lists_mib": tokens / 2**20,
                "baseline_mib": base,
                "peak_mib": peak,
                "output_mib": out.nbytes / 2**20,
                "seconds": seconds,
                "state_mib": info["state_bytes"] / 2**20,
                "threads": torch.get_num_threads(),
            }
        )
    )


def run_child(n: int, model: str, cache: bool, batch_size: int, budget_mib: int) -> dict:
    cmd = [sys.executable, __file__, "--child", str(n), "--model", model]
    cmd += ["--batch-size", str(batch_size), "--cache", "on" if cache else "off"]
    cmd += ["--budget", str(budget_mib)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="tiny", help="tiny, minilm, or a model folder")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache", default="on", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=int, default=1024, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.model, args.cache == "on", args.batch_size, args.budget)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        model, label = benchmark_model(args.model, folder)
        settings = {  # name -> (cache on, budget in MiB)
            "state cache off": (False, 1024),
            "state cache on (1 GiB budget, the default)": (True, 1024),
            "state cache on (256 MiB budget)": (True, 256),
        }
        runs = {
            (n, name): run_child(n, model, cache, args.batch_size, budget)
            for name, (cache, budget) in settings.items()
            for n in sizes
        }
    print(
        f"{label}, batch {args.batch_size}; per run: "
        + "; ".join(
            f"{n} docs, {name}: peak {r['peak_mib']:.0f} MiB, baseline "
            f"{r['baseline_mib']:.0f} MiB, output {r['output_mib']:.1f} MiB, token lists "
            f"{r['token_lists_mib']:.1f} MiB, states kept {r['state_mib']:.0f} MiB, "
            f"{r['seconds']:.1f} s"
            for (n, name), r in runs.items()
        )
    )
    print(f"machine: {machine()}")
    print(HEADER)
    small, large = sizes[0], sizes[-1]
    for name in settings:
        a, b = runs[(small, name)], runs[(large, name)]
        grow_a = a["peak_mib"] - a["baseline_mib"]
        grow_b = b["peak_mib"] - b["baseline_mib"]
        row(
            f"memory: DocumentPoolEmbeddings({label}), {name}",
            f"peak RSS {large:,} docs / {small:,} docs (growth over baseline in brackets)",
            f"{b['peak_mib']:.0f} MiB (+{grow_b:.0f})",
            f"{a['peak_mib']:.0f} MiB (+{grow_a:.0f})",
            f"{b['peak_mib'] / a['peak_mib']:.2f}",
        )


if __name__ == "__main__":
    main()
