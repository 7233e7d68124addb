"""GPU throughput: a BERT-base-size model with random weights, float32, bfloat16 and float16.

A random ``BertModel(BertConfig())`` (12 layers, hidden 768, 110M parameters) with the MiniLM
tokenizer (the same 30,522-word vocabulary) is saved to a temporary folder and embedded with
``TransformerEmbeddings`` (last layer, first sub-token) on documents of mixed length (2 to 160
words). For each precision it measures:

* skembed's tokens/s (the documents' sub-tokens: neither padding nor special tokens such
  as [CLS] count), the result copied to the host once (``RaggedEmbeddings.to_numpy``), every
  cache emptied before each run (states and the word ids tokenizers saw);
* the raw model forward over the same padded batches, already on the device, under the same
  autocast: the model's own limit;
* the ratio skembed / raw throughput (goal >= 0.9);
* on a GPU, skembed's peak GPU memory during a call, above what the model holds, per million
  sub-tokens;

and the cosine between each token's reduced-precision and float32 vectors (goal >= 0.999 for
bfloat16). The clocks wait for the device in use (``cuda:1`` too), not only the current one.

It runs anywhere (``--device cpu`` with a few documents to try it), but the goals are about a
GPU. One command on a GPU machine:

    python benchmarks/bench_gpu.py [--docs 4096] [--batch-size 64] [--device cuda:1]

``--markdown FILE`` also writes the table (and the machine line) to FILE, and ``--check``
exits with status 1 when a goal is missed (``scripts/gpu-check.sh`` uses both).
"""

from __future__ import annotations

import os

# bfloat16 on CPUs that advertise AMX without enabling it needs this before torch loads.
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import (  # noqa: E402
    HEADER,
    machine,
    make_texts,
    minilm_path,
    mixed_length,
    row,
    timed,
    vocabulary,
)
from bench_throughput import raw_batches  # noqa: E402

import skembed  # noqa: E402
from skembed import TransformerEmbeddings  # noqa: E402
from skembed._precision import autocast  # noqa: E402


def random_bert_base(folder: str) -> str:
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(minilm_path())
    path = os.path.join(folder, "random-bert-base")
    BertModel(BertConfig(vocab_size=len(tok))).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=None, help="4096 on a GPU, 16 on a CPU")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=None, help="best of: 3 on a GPU, 1 on a CPU")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precisions", default="float32,bfloat16,float16")
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args()
    device = skembed._device.resolve_device(args.device)
    gpu = device.type == "cuda"
    n_docs = args.docs or (4096 if gpu else 16)
    repeats = args.repeats or (3 if gpu else 1)
    texts = make_texts(n_docs, mixed_length, seed=0, words=vocabulary(minilm_path()))
    results, vectors, peaks, skipped = {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as folder:
        path = random_bert_base(folder)
        for precision in args.precisions.split(","):
            try:
                emb = TransformerEmbeddings(
                    path, device=str(device), batch_size=args.batch_size, precision=precision
                ).fit()
            except ValueError as exc:  # e.g. bfloat16 on a GPU without it
                skipped[precision] = str(exc)
                continue
            hf = emb._get_model()
            batches = [{k: v.to(device) for k, v in b.items()} for b in raw_batches(emb, texts)]
            # The documents' own sub-tokens: special tokens ([CLS], [SEP]) are not counted.
            n_special = len(hf.prefix) + len(hf.suffix)
            n_sub = sum(
                int(b["attention_mask"].sum()) - n_special * len(b["input_ids"]) for b in batches
            )

            def raw(hf=hf, batches=batches, precision=precision):
                with torch.inference_mode(), autocast(device, precision):
                    for batch in batches:
                        hf.model(**batch)

            def ours(emb=emb):
                # Every run starts cold: no states, no word ids remembered from the last one.
                skembed.clear_cache(models=False)
                return emb.transform(texts).to_numpy()

            raw(), ours()  # warm-up: kernels, allocator
            t_raw = t_ours = float("inf")
            for _ in range(repeats):
                t_raw = min(t_raw, timed(raw, device)[0])
                seconds, out = timed(ours, device)
                t_ours = min(t_ours, seconds)
            if gpu:
                skembed.clear_cache(models=False)
                torch.cuda.synchronize(device)
                resident = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
                emb.transform(texts).to_numpy()
                torch.cuda.synchronize(device)
                peak = torch.cuda.max_memory_allocated(device) - resident
                peaks[precision] = (peak / 2**30, peak / n_sub * 1e6 / 2**30)
            results[precision] = (n_sub / t_ours, n_sub / t_raw)
            vectors[precision] = out
            del batches, hf, emb, raw, ours
            skembed.clear_cache()
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        missed = report(args, device, n_docs, n_sub, repeats, results, vectors, peaks, skipped)
    sys.stdout.write(table.getvalue())
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table.getvalue())
    if args.check and missed:
        print("goals missed: " + "; ".join(missed), file=sys.stderr)
        sys.exit(1)


def report(args, device, n_docs, n_sub, repeats, results, vectors, peaks, skipped) -> list:
    """Print the table; return the goals missed."""
    missed = []
    print(
        f"random BERT-base (110M parameters), {n_docs} documents, {n_sub} sub-tokens (special "
        f"tokens not counted), batch {args.batch_size}, device {device}, best of {repeats}"
    )
    print()
    print(f"machine: {machine()}")
    print()
    print(HEADER)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    for precision, reason in skipped.items():
        row(f"GPU throughput: random BERT-base, {precision} ({where})", "not run", reason)
    for precision, (ours_rate, raw_rate) in results.items():
        if ours_rate / raw_rate < 0.9:
            missed.append(f"{precision}: skembed / raw {ours_rate / raw_rate:.3f} < 0.9")
        row(
            f"GPU throughput: random BERT-base, {precision} ({where})",
            "sub-tokens/s, skembed vs raw forward on the same batches (goal >= 0.9)",
            f"{ours_rate:,.0f}",
            f"{raw_rate:,.0f}",
            f"{ours_rate / raw_rate:.3f}",
        )
    for precision, (per_call, per_million) in peaks.items():
        row(
            f"GPU memory: random BERT-base, {precision} ({where})",
            "peak GPU memory of a call above the model's, GiB per 1M sub-tokens (whole call)",
            f"{per_million:.3f} ({per_call:.2f} GiB)",
        )
    if "float32" in vectors:
        for precision, out in vectors.items():
            if precision == "float32":
                continue
            cos = cosines(out, vectors["float32"])
            goal = " (goal >= 0.999)" if precision == "bfloat16" else ""
            if precision == "bfloat16" and cos.min() < 0.999:
                missed.append(f"bfloat16 cosine {cos.min():.5f} < 0.999")
            row(
                f"GPU precision: random BERT-base, {precision} vs float32 ({where})",
                f"cosine of token vectors, min (mean){goal}",
                f"{cos.min():.5f} ({cos.mean():.5f})",
                "1",
                f"{cos.min():.5f}",
            )
    return missed


if __name__ == "__main__":
    main()
