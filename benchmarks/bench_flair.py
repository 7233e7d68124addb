"""FlairEmbeddings speed: tokens/s against the raw LSTM forward over the same characters (the floor).

A random character LM at a published size (``fast``: 1 x 1024 LSTM like ``news-forward-fast``;
``large``: 1 x 2048 like ``news-forward``) embeds random documents. The floor runs only the
embedding and LSTM layers over exactly the characters FlairEmbeddings feeds them (the same
length-sorted, padded batches, each in one call), so the ratio ``embedding / floor`` measures
everything skembed adds: tokenization, character lookup, chunking with carried state, reading
the two positions per token, the state cache and building ``RaggedEmbeddings``. The state cache
is switched off so every timed run computes.

Run ``python benchmarks/bench_flair.py`` (about 20 s on 2 CPU cores, one torch thread;
``--help`` for options). It prints markdown table rows: ``| benchmark | metric | value | baseline | ratio |``.
"""

from __future__ import annotations

import argparse
import string
import time

import numpy as np
import torch

import skembed
from skembed.flair import CharLM, FlairEmbeddings

SIZES = {"tiny": 128, "fast": 1024, "large": 2048}
CHARS = string.printable + "äöüßéèàçñ€"


def make_documents(n_docs: int, min_len: int, max_len: int, seed: int) -> list[list[str]]:
    """Sentences of random lengths over a vocabulary of random words of 1 to 10 letters."""
    rng = np.random.default_rng(seed)
    letters = np.array(list(string.ascii_letters))
    vocab = ["".join(rng.choice(letters, size=rng.integers(1, 11))) for _ in range(2000)]
    return [
        [vocab[i] for i in rng.integers(0, len(vocab), size=rng.integers(min_len, max_len + 1))]
        for _ in range(n_docs)
    ]


def floor_batches(lm: CharLM, docs, batch_size: int, device) -> list[torch.Tensor]:
    """The padded ``(time, batch)`` char ids FlairEmbeddings runs, in its batch order."""
    cost = [sum(len(t) for t in d) + len(d) for d in docs]
    order = sorted(range(len(docs)), key=lambda i: -cost[i])
    batches = []
    for s in range(0, len(order), batch_size):
        ids = [lm.encode_text("\n" + " ".join(docs[i]) + " ") for i in order[s : s + batch_size]]
        width = max(len(x) for x in ids)
        batch = np.zeros((width, len(ids)), dtype=np.int64)
        for j, row in enumerate(ids):
            batch[: len(row), j] = row
        batches.append(torch.from_numpy(batch).to(device))
    return batches


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", choices=list(SIZES), default=None, help="fast on CPU, large on GPU"
    )
    parser.add_argument("--docs", type=int, default=None, help="documents (48 CPU, 2048 GPU)")
    parser.add_argument("--min-len", type=int, default=10)
    parser.add_argument("--max-len", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--chars-per-chunk", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1; 0 keeps torch's default)"
    )
    args = parser.parse_args()
    if args.threads:
        # One thread by default: on a shared machine extra OpenMP threads mostly wait and
        # make timings swing.
        torch.set_num_threads(args.threads)

    device = skembed._device.resolve_device(args.device)
    gpu = device.type == "cuda"
    size = args.size or ("large" if gpu else "fast")
    n_docs = args.docs or (2048 if gpu else 48)
    torch.manual_seed(0)
    lm = CharLM(CHARS, hidden_size=SIZES[size], embedding_size=100).eval().to(device)
    docs = make_documents(n_docs, args.min_len, args.max_len, seed=0)
    n_tokens = sum(len(d) for d in docs)

    skembed.set_cache(enabled=False)
    emb = FlairEmbeddings(
        lm, chars_per_chunk=args.chars_per_chunk, device=str(device), batch_size=args.batch_size
    ).fit()
    batches = floor_batches(emb._get_model(), docs, args.batch_size, device)
    n_chars = sum(b.shape[0] * b.shape[1] for b in batches)

    def floor():
        model = emb._get_model()
        with torch.inference_mode():
            for batch in batches:
                model.rnn(model.encoder(batch))

    def embed():
        emb.transform(docs)

    floor(), embed()  # warm-up (kernels, allocator)
    # Interleaved rounds: a shared machine's load drifts while this runs, so the ratio is the
    # median of each round's paired ratio; the rates are the best of the rounds.
    rounds = [(timed(floor, device), timed(embed, device)) for _ in range(args.repeats)]
    t_floor = min(r[0] for r in rounds)
    t_embed = min(r[1] for r in rounds)
    ratio = float(np.median([f / e for f, e in rounds]))
    name = f"flair {size} (hidden {SIZES[size]}, {device.type}, batch {args.batch_size})"
    print(
        f"{n_docs} docs, {n_tokens} tokens, {n_chars} padded chars, {torch.get_num_threads()} "
        f"threads; torch {torch.__version__}; seconds floor/embed per round: "
        + ", ".join(f"{f:.2f}/{e:.2f}" for f, e in rounds)
    )
    print("| benchmark | metric | value | baseline | ratio |")
    print("|---|---|---|---|---|")
    print(
        f"| {name} | tokens/s | {n_tokens / t_embed:,.0f} | {n_tokens / t_floor:,.0f} (raw LSTM "
        f"forward, same chars) | {ratio:.3f} |"
    )


if __name__ == "__main__":
    main()
