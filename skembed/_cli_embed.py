"""``skembed embed INPUT OUTPUT``: embed a file of documents, chunk by chunk, resumably."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from ._cli_io import (
    INPUT_FORMATS,
    OUTPUT_FORMATS,
    CLIError,
    assemble,
    check_input,
    chunk_table,
    count_rows,
    format_of,
    read_chunks,
    write_atomic_parquet,
)
from .cli import MODULES, command

POOLINGS = ("mean", "max", "min", "cls", "subtoken-mean")
# Test hook: stop (as if interrupted) after this many chunks were written in this run.
STOP_AFTER_ENV = "SKEMBED_CLI_STOP_AFTER"
_MANIFEST = "manifest.json"


@command("embed", MODULES["embed"][1])
def embed(args: argparse.Namespace) -> int:
    """Embed the documents of a file, one chunk of rows at a time, into a file of vectors.

    INPUT is CSV, TSV, Parquet or JSON Lines (the documents in --column, default "text"), or
    plain text (one document per line). OUTPUT is Parquet or CSV (an id column, then one column
    per feature; with --level token one row per token: id, position, token, features) or .npy
    (document level; rows in input order, no ids).

    Rows are numbered from 0 in input order (a CSV's header is not a row); ids are the row
    numbers unless --id-column names a column. Text and JSON Lines files are reported by line
    number (from 1). Rows with a missing text (an empty CSV field, a JSON null, a Parquet null)
    stop the run with the row's number, unless --missing says otherwise; an empty text is a
    document without words, as in the Python API.

    Chunks done are kept in OUTPUT.partial/ until OUTPUT is written: run the same command again
    after an interruption and the finished chunks are not computed again.

    examples:
      skembed embed reviews.csv vectors.parquet --column text
      skembed embed notes.txt vectors.npy --pooling cls --normalize
      skembed embed reviews.parquet tokens.parquet --level token --layers -1,-2
    """
    try:
        return _run(args)
    except CLIError as exc:
        work = _work_folder(args.output)
        if work.is_dir() and [p.name for p in work.iterdir()] == [_MANIFEST]:
            shutil.rmtree(work)  # nothing done to resume from
        print(f"skembed embed: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        work = _work_folder(args.output)
        print(
            f"\nskembed embed: interrupted; the chunks done are kept in {work}: run the same "
            "command again to resume.",
            file=sys.stderr,
        )
        return 130


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "input", metavar="INPUT", help="CSV, TSV, Parquet, JSON Lines (.jsonl) or text (.txt) file"
    )
    p.add_argument("output", metavar="OUTPUT", help="Parquet, .npy or CSV file to write")
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="model name or folder")
    p.add_argument("--column", default="text", help="the column of documents (text)")
    p.add_argument("--id-column", default=None, help="column of ids (default: row numbers)")
    p.add_argument(
        "--level", choices=("document", "token"), default="document", help="document or token"
    )
    p.add_argument(
        "--pooling",
        choices=POOLINGS,
        default="mean",
        help="document level: mean, max or min of the word vectors (DocumentPoolEmbeddings); "
        "cls or subtoken-mean of the sub-token states, special tokens included "
        "(TransformerDocumentEmbeddings); default mean",
    )
    p.add_argument(
        "--subtoken-pooling",
        choices=("first", "last", "mean", "first_last"),
        default="first",
        help="a word's vector from its sub-tokens (TransformerEmbeddings' pooling_operation)",
    )
    p.add_argument("--layers", default="-1", help='layers, e.g. "-1" or "-1,-2" or "all"')
    p.add_argument("--normalize", action="store_true", help="scale document vectors to norm 1")
    p.add_argument(
        "--missing",
        choices=("error", "empty", "skip"),
        default="error",
        help="rows with a missing text: stop (error), embed as an empty text, or skip them",
    )
    p.add_argument("--batch-size", type=int, default=32, help="documents per forward pass")
    p.add_argument("--chunk-size", type=int, default=1000, help="rows read and written at a time")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", choices=("float32", "float16", "bfloat16"), default="float32")
    p.add_argument("--input-format", choices=sorted(set(INPUT_FORMATS.values())))
    p.add_argument("--output-format", choices=sorted(set(OUTPUT_FORMATS.values())))
    p.add_argument("--quiet", action="store_true", help="no progress bar")


embed.add_arguments = _add_arguments


def _work_folder(output: str) -> Path:
    return Path(output).with_name(Path(output).name + ".partial")


def build_embedder(args):
    """The estimator the options describe (the Python equivalent of the command)."""
    import skembed

    common = dict(device=args.device, batch_size=args.batch_size, precision=args.precision)
    if args.level == "document" and args.pooling in ("cls", "subtoken-mean"):
        pooling = "cls" if args.pooling == "cls" else "mean"
        return skembed.TransformerDocumentEmbeddings(
            args.model, pooling=pooling, normalize=args.normalize, layers=args.layers, **common
        )
    words = skembed.TransformerEmbeddings(
        args.model, layers=args.layers, pooling_operation=args.subtoken_pooling, **common
    )
    if args.level == "token":
        return words
    return skembed.DocumentPoolEmbeddings(words, pooling=args.pooling)


def _manifest(args, in_fmt: str, out_fmt: str) -> dict:
    from . import __version__
    from ._hf.resolve import resolve_model
    from .resolve import file_signature

    try:
        model_files = [list(e) for e in file_signature(resolve_model(args.model))]
    except Exception:  # a model that does not resolve fails in fit, with the full message
        model_files = None
    st = os.stat(args.input)
    options = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    for k in ("output", "quiet", "batch_size", "device", "input_format", "output_format"):
        options.pop(k, None)  # they do not change the numbers' meaning, or are below
    return {
        "skembed": __version__,
        "input": [os.path.abspath(args.input), st.st_size, st.st_mtime_ns, in_fmt],
        "output_format": out_fmt,
        "model_files": model_files,
        "options": options,
    }


def _prepare(work: Path, manifest: dict) -> set[int]:
    """Open the work folder: the chunks done by an earlier run with the same input and
    options, or none (a folder of another run is cleared)."""
    path = work / _MANIFEST
    if work.exists():
        if not path.is_file():
            raise CLIError(f"{work} exists and is not skembed's work folder; move it away.")
        if json.loads(path.read_text()) == manifest:
            return {int(p.stem.split("-")[1]) for p in work.glob("chunk-*.parquet")}
        print(f"{work} is from another input or other options: starting over.", file=sys.stderr)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, path)
    return set()


_DOCUMENT = re.compile(r"^Document (\d+)(?: \(index label [^)]*\))?")


def _translate(exc: Exception, chunk, positions: list[int], path: str) -> CLIError:
    """The library's error about "Document i" of a chunk, naming the input's row instead."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    m = _DOCUMENT.match(text)
    if m is None:
        return CLIError(text)
    where = chunk.where(positions[int(m.group(1))])
    text = f"{path}, {where}" + text[m.end() :]
    if "missing" in text:
        text = re.sub(r"; fill or drop.*$", "", text)
        text += "; fill it in, or pass --missing empty or --missing skip."
    return CLIError(text)


def _embed_chunk(emb, chunk, args, id_name: str):
    """The output table of one chunk, and how many documents it embedded."""
    import numpy as np

    from ._input import _is_missing

    positions = list(range(len(chunk.texts)))
    texts = chunk.texts
    if args.missing != "error":
        missing = [_is_missing(t) for t in texts]
        if args.missing == "skip":
            positions = [i for i in positions if not missing[i]]
            texts = [texts[i] for i in positions]
        else:
            texts = ["" if m else t for t, m in zip(texts, missing)]
    ids = [chunk.ids[i] for i in positions]
    try:
        out = emb.transform(texts)
    except (ValueError, TypeError) as exc:
        raise _translate(exc, chunk, positions, args.input) from None
    names = emb.get_feature_names_out()
    if args.level == "document":
        if args.normalize and args.pooling in ("mean", "max", "min"):
            from sklearn.preprocessing import normalize

            out = normalize(out)
        return chunk_table(ids, id_name, names, out), len(texts)
    lengths = out.lengths
    tokens = [t for doc in out.tokens for t in doc]
    position = np.concatenate([np.arange(n) for n in lengths]) if len(lengths) else []
    token_ids = [i for i, n in zip(ids, lengths) for _ in range(n)]
    return chunk_table(token_ids, id_name, names, out.to_numpy(), tokens, position), len(texts)


def _run(args) -> int:
    in_fmt = format_of(args.input, INPUT_FORMATS, args.input_format, "input")
    out_fmt = format_of(args.output, OUTPUT_FORMATS, args.output_format, "output")
    if not os.path.isfile(args.input):
        raise CLIError(f"no such file: {args.input}")
    if out_fmt == "npy" and args.level == "token":
        raise CLIError("a .npy output holds one row per document; use Parquet or CSV for tokens.")
    if out_fmt == "npy" and args.missing == "skip":
        raise CLIError("a .npy output has no ids, so skipped rows could not be told; use Parquet.")
    if args.chunk_size < 1 or args.batch_size < 1:
        raise CLIError("--chunk-size and --batch-size must be at least 1.")
    check_input(args.input, in_fmt, args.column, args.id_column)
    from tqdm.auto import tqdm

    import skembed

    emb = build_embedder(args)
    try:
        emb.fit([])
    except (OSError, ValueError) as exc:  # e.g. a model that is nowhere: the message says where
        raise CLIError(str(exc)) from None
    work = _work_folder(args.output)
    done = _prepare(work, _manifest(args, in_fmt, out_fmt))
    if done:
        print(f"resumed: {len(done)} chunks done", file=sys.stderr)
    id_name = args.id_column or "id"
    old_budget = skembed.cache_info()["state_max_bytes"]
    skembed.set_cache(max_bytes=0)  # states of a single pass are never read again
    stop_after = int(os.environ.get(STOP_AFTER_ENV, "0") or 0)
    embedded = written = 0
    started = time.perf_counter()
    bar = tqdm(
        total=count_rows(args.input, in_fmt),
        unit="doc",
        desc="embedding",
        disable=args.quiet,
        file=sys.stderr,
    )
    try:
        chunks = read_chunks(args.input, in_fmt, args.column, args.id_column, args.chunk_size)
        for k, chunk in enumerate(chunks):
            if k not in done:
                table, n = _embed_chunk(emb, chunk, args, id_name)
                write_atomic_parquet(table, work / f"chunk-{k:06d}.parquet")
                embedded += n
                written += 1
                if stop_after and written >= stop_after:
                    raise KeyboardInterrupt
            bar.update(len(chunk.texts))
    finally:
        bar.close()
        skembed.set_cache(max_bytes=old_budget)
    seconds = time.perf_counter() - started
    parts = sorted(work.glob("chunk-*.parquet"))
    names = emb.get_feature_names_out()
    token = {"tokens": [], "positions": []} if args.level == "token" else {}
    empty = chunk_table([], id_name, names, _zeros(len(names)), **token)
    rows, columns = assemble(parts, args.output, out_fmt, empty)
    shutil.rmtree(work)
    rate = embedded / seconds if seconds > 0 else float("nan")
    print(
        f"wrote {args.output}: {rows} rows x {columns} columns; embedded {embedded} documents "
        f"in {seconds:.1f} s ({rate:.1f} documents/s)"
        + (f", {len(done)} chunks resumed" if done else ""),
        file=sys.stderr,
    )
    return 0


def _zeros(dim: int):
    import numpy as np

    return np.zeros((0, dim), dtype=np.float32)
