"""Throughput of the packaged MiniLM against the model's own limit and sentence-transformers.

Two measures on the same documents of mixed length (2 to 160 words), in one run:

* **Token level.** ``TransformerEmbeddings`` (last layer, first sub-token) against the raw model
  forward over exactly the padded batches skembed builds (same length-sorted order, same
  sub-tokens, built before the clock starts). The ratio ``skembed / raw`` counts everything
  skembed adds: tokenization, word alignment, reading the states, pooling, the state cache and
  ``RaggedEmbeddings``. Goal: <= 1.15.
* **Document level.** ``TransformerDocumentEmbeddings(pooling="mean", normalize=True)`` against
  ``SentenceTransformer.encode`` of the same texts (both batch 32), with the largest difference
  between their vectors. Goal: throughput ratio >= 1 with the same vectors.

Before every timed skembed run the state cache and the word-piece cache are emptied, so each run
tokenizes and computes. The contenders take turns slice by slice, best of ``--repeats`` per
slice (see ``_common.interleaved``).

    python benchmarks/bench_throughput.py [--docs 2000] [--repeats 2] [--threads N]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import (
    HEADER,
    interleaved,
    machine,
    make_texts,
    minilm_path,
    mixed_length,
    row,
    slices,
    vocabulary,
)

import skembed
from skembed import TransformerDocumentEmbeddings, TransformerEmbeddings
from skembed._hf.words import word_ids


def raw_batches(emb: TransformerEmbeddings, texts: list[str]) -> list[dict]:
    """The padded inputs skembed feeds the model for ``texts``, in its batch order."""
    hf = emb._get_model()
    docs = skembed.check_documents(texts, None)
    order = sorted(range(len(docs)), key=lambda i: -emb._doc_cost(docs[i]))
    batches = []
    for s in range(0, len(order), emb.batch_size):
        rows = [
            [i for p in word_ids(hf, docs[j]) for i in p] for j in order[s : s + emb.batch_size]
        ]
        full = [hf.prefix + r + hf.suffix for r in rows]
        width = max(len(f) for f in full)
        ids = torch.full((len(full), width), hf.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for k, f in enumerate(full):
            ids[k, : len(f)] = torch.tensor(f)
            mask[k, : len(f)] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        if hf.use_types:
            batch["token_type_ids"] = torch.zeros_like(ids)
        batches.append(batch)
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--slice", type=int, default=500, help="documents per timed slice")
    parser.add_argument("--repeats", type=int, default=2, help="runs per slice, best kept")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer

    path = minilm_path()
    texts = make_texts(args.docs, mixed_length, seed=0, words=vocabulary(path))
    parts = slices(len(texts), args.slice)
    common = dict(device="cpu", batch_size=args.batch_size)
    tokens = TransformerEmbeddings(path, **common).fit()
    docs = TransformerDocumentEmbeddings(path, pooling="mean", normalize=True, **common).fit()
    hf = tokens._get_model()
    st = SentenceTransformer(path, device="cpu")
    raw = [raw_batches(tokens, texts[p]) for p in parts]
    n_words = sum(len(t.split()) for t in texts)
    n_sub = sum(int(b["attention_mask"].sum()) for bs in raw for b in bs)
    n_padded = sum(b["input_ids"].numel() for bs in raw for b in bs)

    def cold(fn):
        def run(s):
            skembed.clear_cache(models=False)
            hf.word_ids.clear()
            return fn(s)

        return run

    def forward(s):
        with torch.inference_mode():
            for batch in raw[s]:
                hf.model(**batch)

    contenders = {
        "skembed tokens": cold(lambda s: tokens.transform(texts[parts[s]]).to_numpy()),
        "raw forward": forward,
        "skembed documents": cold(lambda s: docs.transform(texts[parts[s]])),
        "sentence-transformers": lambda s: st.encode(texts[parts[s]], batch_size=args.batch_size),
    }
    for fn in contenders.values():  # warm-up: allocator, kernels, lazy imports
        fn(0)
    measured = interleaved(contenders, len(parts), args.repeats)
    seconds = {name: wall for name, (wall, _) in measured.items()}
    cpu = {name: c for name, (_, c) in measured.items()}

    skembed.clear_cache(models=False)
    ours = docs.transform(texts)
    theirs = st.encode(texts, batch_size=args.batch_size)
    diff = float(np.abs(ours - theirs).max())
    print(
        f"{len(texts)} documents, {n_words} words, {n_sub} sub-tokens ({n_padded} padded), "
        f"batch {args.batch_size}, {len(parts)} slices x best of {args.repeats}; wall (CPU) "
        "seconds: " + ", ".join(f"{k} {v:.2f} ({cpu[k]:.2f})" for k, v in seconds.items())
    )
    print(f"machine: {machine()}")
    print(HEADER)
    t_ours, t_raw = seconds["skembed tokens"], seconds["raw forward"]
    row(
        "throughput: MiniLM token level (CPU)",
        "time / raw model forward on the same padded batches (goal <= 1.15)",
        f"{t_ours:.2f} s ({n_sub / t_ours:,.0f} sub-tokens/s)",
        f"{t_raw:.2f} s ({n_sub / t_raw:,.0f} sub-tokens/s)",
        f"{t_ours / t_raw:.3f}",
    )
    row(
        "throughput: MiniLM token level (CPU)",
        "the same in process CPU seconds (insensitive to other processes)",
        f"{cpu['skembed tokens']:.2f} s",
        f"{cpu['raw forward']:.2f} s",
        f"{cpu['skembed tokens'] / cpu['raw forward']:.3f}",
    )
    d_ours, d_st = seconds["skembed documents"], seconds["sentence-transformers"]
    row(
        "throughput: MiniLM documents, mean + normalize (CPU)",
        f"docs/s vs SentenceTransformer.encode (goal >= 1; max abs diff {diff:.1e})",
        f"{len(texts) / d_ours:,.1f}",
        f"{len(texts) / d_st:,.1f}",
        f"{d_st / d_ours:.3f}",
    )
    row(
        "throughput: MiniLM documents, mean + normalize (CPU)",
        "the same in process CPU seconds (docs per CPU second)",
        f"{len(texts) / cpu['skembed documents']:,.1f}",
        f"{len(texts) / cpu['sentence-transformers']:,.1f}",
        f"{cpu['sentence-transformers'] / cpu['skembed documents']:.3f}",
    )


if __name__ == "__main__":
    main()
