"""GPU throughput: a BERT-base-size model with random weights, float32 and bfloat16.

A random ``BertModel(BertConfig())`` (12 layers, hidden 768, 110M parameters) with the MiniLM
tokenizer (the same 30,522-word vocabulary) is saved to a temporary folder and embedded with
``TransformerEmbeddings`` (last layer, first sub-token) on documents of mixed length (2 to 160
words). For each precision it measures:

* skembed's tokens/s (real sub-tokens, padding not counted), the result copied to the host
  once (``RaggedEmbeddings.to_numpy``);
* the raw model forward over the same padded batches, already on the device, under the same
  autocast: the model's own limit;
* the ratio skembed / raw throughput (goal >= 0.9);

and the cosine between each token's bfloat16 and float32 vectors (goal >= 0.999).

It runs anywhere (``--device cpu`` with a few documents to try it), but the goals are about a
GPU. One command on a GPU machine:

    python benchmarks/bench_gpu.py [--docs 4096] [--batch-size 64] [--precisions float32,bfloat16]
"""

from __future__ import annotations

import os

# bfloat16 on CPUs that advertise AMX without enabling it needs this before torch loads.
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")

import argparse  # noqa: E402
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
from skembed._device import autocast  # noqa: E402


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
    parser.add_argument("--precisions", default="float32,bfloat16")
    args = parser.parse_args()
    device = skembed._device.resolve_device(args.device)
    gpu = device.type == "cuda"
    n_docs = args.docs or (4096 if gpu else 16)
    repeats = args.repeats or (3 if gpu else 1)
    texts = make_texts(n_docs, mixed_length, seed=0, words=vocabulary(minilm_path()))
    results, vectors = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        path = random_bert_base(folder)
        for precision in args.precisions.split(","):
            emb = TransformerEmbeddings(
                path, device=str(device), batch_size=args.batch_size, precision=precision
            ).fit()
            hf = emb._get_model()
            batches = [{k: v.to(device) for k, v in b.items()} for b in raw_batches(emb, texts)]
            n_sub = sum(int(b["attention_mask"].sum()) for b in batches)

            def raw(hf=hf, batches=batches, precision=precision):
                with torch.inference_mode(), autocast(device, precision):
                    for batch in batches:
                        hf.model(**batch)

            def ours(emb=emb):
                skembed.clear_cache(models=False)
                return emb.transform(texts).to_numpy()

            raw(), ours()  # warm-up: kernels, allocator
            t_raw = t_ours = float("inf")
            for _ in range(repeats):
                t_raw = min(t_raw, timed(raw)[0])
                seconds, out = timed(ours)
                t_ours = min(t_ours, seconds)
            results[precision] = (n_sub / t_ours, n_sub / t_raw)
            vectors[precision] = out
    print(
        f"random BERT-base (110M parameters), {n_docs} documents, {n_sub} sub-tokens, batch "
        f"{args.batch_size}, device {device}, best of {repeats}"
    )
    print(f"machine: {machine()}")
    print(HEADER)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    for precision, (ours_rate, raw_rate) in results.items():
        row(
            f"GPU throughput: random BERT-base, {precision} ({where})",
            "sub-tokens/s, skembed vs raw forward on the same batches (goal >= 0.9)",
            f"{ours_rate:,.0f}",
            f"{raw_rate:,.0f}",
            f"{ours_rate / raw_rate:.3f}",
        )
    if "float32" in vectors:
        for precision, out in vectors.items():
            if precision == "float32":
                continue
            cos = cosines(out, vectors["float32"])
            row(
                f"GPU precision: random BERT-base, {precision} vs float32 ({where})",
                "cosine of token vectors, min (mean) (goal >= 0.999)",
                f"{cos.min():.5f} ({cos.mean():.5f})",
                "1",
                f"{cos.min():.5f}",
            )


if __name__ == "__main__":
    main()
