"""Files for ``skembed embed``: inputs read in chunks, chunk files assembled into the output.

Inputs: CSV, TSV, Parquet, JSON Lines, plain text (one document per line); ``.gz`` and other
compressions pandas knows work for CSV and TSV, ``.gz`` for text and JSON Lines. Outputs:
Parquet, CSV, ``.npy``. Only a chunk of rows is held at a time.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

INPUT_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".txt": "text",
    ".text": "text",
}
OUTPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".npy": "npy"}
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zip")


class CLIError(Exception):
    """An error reported as one line, without a traceback."""


@dataclass
class Chunk:
    """Rows ``rows`` of the input: their texts (as read: str, or None / NaN when missing),
    ids, and line numbers (1-based; for text and JSON Lines files, else None)."""

    texts: list
    ids: list
    rows: list[int]
    lines: list[int] | None = None

    def where(self, i: int) -> str:
        """Where document ``i`` of the chunk is in the input, for messages."""
        if self.lines is not None:
            return f"line {self.lines[i]}"
        return f"row {self.rows[i]}"


def format_of(path: str, formats: dict[str, str], given: str | None, what: str) -> str:
    """The format of ``path``: ``given``, or from its suffix (a compression suffix skipped)."""
    if given:
        return given
    name = Path(path).name.lower()
    for suffix in _COMPRESSIONS:
        if name.endswith(suffix) and what == "input":
            name = name[: -len(suffix)]
    for suffix, fmt in formats.items():
        if name.endswith(suffix):
            return fmt
    known = ", ".join(sorted(formats))
    flag = "--input-format" if what == "input" else "--output-format"
    raise CLIError(
        f"cannot tell the format of {what} {path!r} from its name ({known}); pass {flag}."
    )


def _open_text(path: str):
    if path.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def count_rows(path: str, fmt: str) -> int | None:
    """The number of rows when cheap to know (for the progress bar), else None."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if fmt in ("text", "jsonl") and not path.lower().endswith(_COMPRESSIONS):
        n, last = 0, b"\n"
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                n += block.count(b"\n")
                last = block[-1:]
        return n + (last != b"\n")  # a last line without a newline
    return None


def read_chunks(
    path: str, fmt: str, column: str, id_column: str | None, size: int
) -> Iterator[Chunk]:
    """The input's rows, ``size`` at a time, in order."""
    readers = {"csv": _csv, "tsv": _csv, "parquet": _parquet, "jsonl": _jsonl, "text": _text}
    try:
        yield from readers[fmt](path, fmt, column, id_column, size)
    except UnicodeDecodeError as exc:
        raise CLIError(f"{path} is not UTF-8 text: {exc}") from None


def check_input(path: str, fmt: str, column: str, id_column: str | None) -> None:
    """Fail early (before a model is loaded) when a table lacks the columns asked for."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        _check_columns(path, pq.read_schema(path).names, column, id_column)
    elif fmt in ("csv", "tsv"):
        import pandas as pd

        header = pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", nrows=0).columns
        _check_columns(path, list(header), column, id_column)


def _check_columns(path: str, names, column: str, id_column: str | None) -> None:
    for name, flag in ((column, "--column"), (id_column, "--id-column")):
        if name is not None and name not in names:
            listed = ", ".join(map(str, names))
            raise CLIError(f"{path} has no column {name!r} (its columns: {listed}); pass {flag}.")


def _csv(path, fmt, column, id_column, size):
    import pandas as pd

    sep = "\t" if fmt == "tsv" else ","
    header = pd.read_csv(path, sep=sep, nrows=0).columns
    _check_columns(path, list(header), column, id_column)
    usecols = [column] if id_column is None else list(dict.fromkeys([column, id_column]))
    # Only an empty field is missing: "NA", "null", "None" are texts.
    reader = pd.read_csv(
        path,
        sep=sep,
        usecols=usecols,
        chunksize=size,
        keep_default_na=False,
        na_values=[""],
        dtype={column: object},
    )
    start = 0
    with reader:
        for frame in reader:
            rows = list(range(start, start + len(frame)))
            ids = rows if id_column is None else frame[id_column].tolist()
            yield Chunk(frame[column].tolist(), ids, rows)
            start += len(frame)


def _parquet(path, fmt, column, id_column, size):
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    _check_columns(path, file.schema_arrow.names, column, id_column)
    columns = [column] if id_column is None else list(dict.fromkeys([column, id_column]))
    start = 0
    for batch in file.iter_batches(batch_size=size, columns=columns):
        rows = list(range(start, start + batch.num_rows))
        ids = rows if id_column is None else batch.column(id_column).to_pylist()
        yield Chunk(batch.column(column).to_pylist(), ids, rows)
        start += batch.num_rows


def _jsonl(path, fmt, column, id_column, size):
    chunk = Chunk([], [], [], [])
    row = 0
    with _open_text(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CLIError(f"{path}, line {number}: not JSON ({exc.msg}).") from None
            if isinstance(record, dict):
                text = record.get(column)
                ident = row if id_column is None else record.get(id_column)
            else:  # a bare value per line: the document itself
                text, ident = record, row
            chunk.texts.append(text)
            chunk.ids.append(ident)
            chunk.rows.append(row)
            chunk.lines.append(number)
            row += 1
            if len(chunk.texts) == size:
                yield chunk
                chunk = Chunk([], [], [], [])
    if chunk.texts:
        yield chunk


def _text(path, fmt, column, id_column, size):
    chunk = Chunk([], [], [], [])
    with _open_text(path) as f:
        for row, line in enumerate(f):
            chunk.texts.append(line[:-1] if line.endswith("\n") else line)
            chunk.ids.append(row)
            chunk.rows.append(row)
            chunk.lines.append(row + 1)
            if len(chunk.texts) == size:
                yield chunk
                chunk = Chunk([], [], [], [])
    if chunk.texts:
        yield chunk


# -- output ------------------------------------------------------------------------------


def chunk_table(ids: list, id_name: str, names, values, tokens=None, positions=None):
    """A chunk's rows as an Arrow table: ids, (position and token,) one column per feature."""
    import numpy as np
    import pyarrow as pa

    columns = {id_name: pa.array(ids) if len(ids) else pa.array([], pa.int64())}
    if tokens is not None:
        columns["position"] = pa.array(positions, type=pa.int64())
        columns["token"] = pa.array(tokens, type=pa.string())
    by_feature = np.ascontiguousarray(np.asarray(values, dtype=np.float32).T)
    for name, column in zip(names, by_feature):
        columns[str(name)] = pa.array(column)
    return pa.table(columns)


def write_atomic_parquet(table, path: Path) -> None:
    """Write ``table`` to ``path``: a partial file never takes the final name."""
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _unified(parts: list[Path]):
    """The schema of the assembled output: an id column whose type varies between chunks
    (integers in one chunk of a CSV, text in another) becomes text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = [pq.read_schema(p) for p in parts]
    first = schemas[0]
    if all(s.equals(first) for s in schemas):
        return first
    return first.set(0, pa.field(first.names[0], pa.string()))


def assemble(parts: list[Path], output: str, fmt: str, empty) -> tuple[int, int]:
    """Write the chunk files ``parts``, in order, into ``output`` (atomically); ``empty`` is
    the table of an input without rows. Returns (rows, columns) written."""
    import pyarrow.parquet as pq

    tmp = Path(output).with_name(Path(output).name + ".tmp")
    schema = _unified(parts) if parts else empty.schema
    n_columns = len(schema.names)

    def tables():
        if not parts:
            yield empty
        for p in parts:
            yield pq.read_table(p).cast(schema)

    rows = 0
    try:
        if fmt == "npy":
            rows = _assemble_npy(parts, tmp, schema)
            n_columns -= 1  # no id column in a .npy
        elif fmt == "parquet":
            with pq.ParquetWriter(tmp, schema) as writer:
                for table in tables():
                    writer.write_table(table)
                    rows += table.num_rows
        else:
            import pyarrow.csv as pcsv

            with pcsv.CSVWriter(tmp, schema) as writer:
                for table in tables():
                    writer.write_table(table)
                    rows += table.num_rows
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return rows, n_columns


def _assemble_npy(parts: list[Path], tmp: Path, schema) -> int:
    import numpy as np
    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
    dim = len(schema.names) - 1
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows, dim))
    at = 0
    for p in parts:
        table = pq.read_table(p)
        block = np.stack([c.to_numpy() for c in table.columns[1:]], axis=1)
        out[at : at + len(block)] = block
        at += len(block)
    out.flush()
    del out
    return rows
