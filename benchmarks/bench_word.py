"""Load time of a 400k x 300 word-vector file: first load (conversion) and second load (cache).

Writes a random word2vec binary file (or a GloVe text file with ``--text``) of ``--words`` x
``--dim`` into a temporary folder, then times:

* ``first load``: ``WordEmbeddings(path).fit()`` with an empty cache (streams the file into the
  memory-mapped cache);
* ``second load``: the same in a fresh model cache, reading the converted files;
* ``lookup``: embedding 10,000 tokens after the second load.

The baseline of the first load is gensim's ``load_word2vec_format`` of the same file. The
baseline of the second load is what Flair does on every start: ``KeyedVectors.load`` of the
same vectors saved by gensim (skipped when gensim is not installed).

Prints ``| benchmark | metric | value | baseline | ratio |`` rows (ratio = baseline / value).

    python benchmarks/bench_word.py [--words 400000] [--dim 300] [--text]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def write_file(path: Path, words: int, dim: int, text: bool) -> None:
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        if not text:
            f.write(f"{words} {dim}\n".encode())
        for start in range(0, words, 10_000):
            block = rng.standard_normal((min(10_000, words - start), dim)).astype("<f4")
            for i, row in enumerate(block):
                word = f"w{start + i}".encode()
                if text:
                    f.write(word + b" " + " ".join(f"{v:.5f}" for v in row).encode() + b"\n")
                else:
                    f.write(word + b" " + row.tobytes() + b"\n")


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=400_000)
    parser.add_argument("--dim", type=int, default=300)
    parser.add_argument("--text", action="store_true", help="write a GloVe text file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SKEMBED_HOME"] = str(Path(tmp) / "home")
        import skembed
        from skembed import WordEmbeddings

        path = Path(tmp) / ("vectors.txt" if args.text else "vectors.bin")
        write_file(path, args.words, args.dim, args.text)
        size_mb = path.stat().st_size / 2**20

        def load():
            skembed.clear_cache()
            return WordEmbeddings(str(path), device="cpu").fit()

        first, _ = timed(load)
        second, emb = timed(load, repeat=3)
        rng = np.random.default_rng(1)
        tokens = [f"W{i}" for i in rng.integers(0, args.words, 10_000)]
        lookup, _ = timed(lambda: emb.transform([tokens]), repeat=3)

        baseline = parse = None
        try:
            from gensim.models import KeyedVectors

            parse, kv = timed(lambda: KeyedVectors.load_word2vec_format(
                str(path), binary=not args.text, no_header=args.text))  # fmt: skip
            kv.save(str(Path(tmp) / "flair.gensim"))
            del kv
            baseline, _ = timed(lambda: KeyedVectors.load(str(Path(tmp) / "flair.gensim")), 3)
        except ImportError:
            pass

    name = f"word {args.words}x{args.dim} ({'text' if args.text else 'binary'}, {size_mb:.0f} MB)"
    print("| benchmark | metric | value | baseline | ratio |")
    print("|---|---|---|---|---|")
    base = f"{parse:.2f} (gensim load_word2vec_format)" if parse else "n/a"
    ratio = f"{parse / first:.1f}" if parse else "n/a"
    print(f"| {name} | first load (conversion), s | {first:.2f} | {base} | {ratio} |")
    base = f"{baseline:.3f}" if baseline else "n/a"
    ratio = f"{baseline / second:.1f}" if baseline else "n/a"
    print(
        f"| {name} | second load, s | {second:.3f} | {base} (gensim KeyedVectors.load) | {ratio} |"
    )
    print(f"| {name} | lookup 10k tokens (OOV fallback: lower-case), s | {lookup:.4f} | | |")


if __name__ == "__main__":
    main()
