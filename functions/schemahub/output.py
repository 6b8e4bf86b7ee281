"""Query results written in constant memory: Arrow record batches in, table / CSV / JSON / Parquet out.

A result is never held whole: DuckDB hands over record batches of BATCH_ROWS rows, and every writer writes each
batch before asking for the next, so `schemahub query` and `schemahub export` use the same memory for a thousand
rows or a billion. Files are written beside their final name and renamed into place when complete, so a failed or
interrupted export never leaves a half file under the name asked for.

- table: for people; column widths are taken from the first batch, numbers are right-aligned and decimals are
  printed without their padding zeros (453.3, not 453.300000000000).
- csv: exact (decimals with every digit the table keeps), a header line, times ISO-8601 UTC (`...Z`).
- json: one JSON array, one object per line; decimals as strings (exact), integers and floats as numbers.
- parquet: the Arrow types as they are: decimal128(38, 12), timestamp[us, UTC].
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, time
from decimal import Decimal
from typing import BinaryIO

import pyarrow as pa

from schemahub.errors import QueryError, UsageError

BATCH_ROWS = 10_000
FORMATS = ("table", "csv", "json", "parquet")


def query_batches(con, sql: str, batch_rows: int = BATCH_ROWS) -> Batches:
    """Stream a query's result as record batches; SQL errors (now or while streaming) become QueryError."""
    import duckdb

    try:
        rel = con.sql(sql.strip().rstrip(";"))
    except duckdb.Error as e:
        raise QueryError(f"query failed: {str(e).splitlines()[0]}") from None
    if rel is None:  # a statement that returns no rows (SET, CREATE VIEW ...)
        return Batches(pa.schema([]), iter(()))
    try:
        reader = rel.to_arrow_reader(batch_rows)
    except (duckdb.Error, pa.ArrowException, OSError) as e:
        raise QueryError(f"query failed: {str(e).splitlines()[0]}") from None
    return Batches(reader.schema, _translated(reader))


class Batches:
    """A schema and the record batches that follow it (what every writer reads; pa.RecordBatchReader fits too)."""

    def __init__(self, schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> None:
        self.schema = schema
        self._batches = batches

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self._batches


def _translated(reader) -> Iterator[pa.RecordBatch]:
    """DuckDB reports an error met while streaming (a failed cast in row 50,000) through Arrow's C stream, as an
    OSError or ArrowException: it is the query's error, told as one."""
    import duckdb

    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (duckdb.Error, pa.ArrowException, OSError) as e:
            raise QueryError(f"query failed: {str(e).splitlines()[0]}") from None
        yield batch


def format_for(path: str, fmt: str | None = None) -> str:
    """The output format: --format if given, else from the file name's extension."""
    if fmt:
        return fmt
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext in ("parquet", "pq"):
        return "parquet"
    if ext in ("csv", "json"):
        return ext
    raise UsageError(f"--output {path!r}: cannot tell the format from the name; end it in .parquet, .csv or .json, "
                     "or pass --format")


def write(reader, fmt: str, output: str | None = None) -> int:
    """Write every batch in `fmt` to the file `output` (atomically) or to stdout; returns the number of rows.

    A reader that goes away (`schemahub query ... | head`) ends the output quietly: exit 0, no error line."""
    if fmt == "parquet" and output is None and sys.stdout.isatty():
        raise UsageError("--format parquet writes binary: pass --output FILE.parquet (or pipe it)")
    if output is None:
        try:
            return _to_stdout(reader, fmt)
        except OSError as e:  # BrokenPipeError, or Arrow's IOError carrying EPIPE from its CSV/Parquet writer
            if not (isinstance(e, BrokenPipeError) or getattr(e, "errno", None) == errno.EPIPE
                    or "Broken pipe" in str(e)):
                raise
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # Python's exit-time flush must not fail again
            raise SystemExit(0) from None
    with _atomic(output, binary=fmt in ("parquet", "csv")) as f:
        return _WRITERS[fmt](reader, f)


def render(reader, fmt: str, out) -> int:
    """Write every batch as table, csv or json to the text stream `out` (a frame of `stats --watch`)."""
    if fmt == "parquet":
        raise UsageError("parquet is binary: it cannot be shown as text")
    return _WRITERS[fmt](reader, _TextSink(out) if fmt == "csv" else out)


def _to_stdout(reader, fmt: str) -> int:
    binary = getattr(sys.stdout, "buffer", None)
    if fmt in ("parquet", "csv") and binary is not None:
        sys.stdout.flush()
        n = _WRITERS[fmt](reader, binary)
        binary.flush()
        return n
    if fmt in ("parquet", "csv"):  # a text-only stdout (captured): bytes go through a small adapter
        return _WRITERS[fmt](reader, _TextSink(sys.stdout))
    n = _WRITERS[fmt](reader, sys.stdout)
    sys.stdout.flush()
    return n


class _TextSink:
    """A binary file-like object over a text stream (CSV only is text; parquet bytes are not printable)."""

    def __init__(self, text) -> None:
        self.text = text
        self.closed = False

    def write(self, data) -> int:
        self.text.write(bytes(data).decode("utf-8", "replace"))
        return len(data)

    def flush(self) -> None:
        self.text.flush()

    def writable(self) -> bool:
        return True


@contextmanager
def _atomic(path: str, *, binary: bool):
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"--output {path!r}: folder {folder} does not exist")
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        text = {} if binary else {"encoding": "utf-8", "newline": ""}
        with open(tmp, "wb" if binary else "w", **text) as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ------------------------------------------------------------------ parquet and csv (Arrow's own writers)

def _parquet(reader, out: BinaryIO) -> int:
    import pyarrow.parquet as pq

    n = 0
    with pq.ParquetWriter(out, reader.schema, compression="zstd") as w:
        for batch in reader:
            w.write_batch(batch)
            n += batch.num_rows
    return n


_CSV_NATIVE = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer, pa.types.is_floating,
               pa.types.is_boolean, pa.types.is_decimal, pa.types.is_date, pa.types.is_timestamp, pa.types.is_null,
               pa.types.is_time)


def _csv_ready(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Columns Arrow's CSV writer cannot print (lists, structs, intervals) become their JSON/text form."""
    cols, names = [], batch.schema.names
    for col in batch.columns:
        if any(check(col.type) for check in _CSV_NATIVE):
            cols.append(col)
        else:
            cols.append(pa.array([None if v is None else json.dumps(v, default=_plain) for v in col.to_pylist()],
                                 pa.string()))
    return pa.RecordBatch.from_arrays(cols, names=names)


def _csv(reader, out: BinaryIO) -> int:
    import csv
    import io

    import pyarrow.csv as pcsv

    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow(reader.schema.names)  # quoted only where a name needs it
    out.write(header.getvalue().encode())
    n, writer = 0, None
    opts = pcsv.WriteOptions(include_header=False, quoting_style="needed")  # strings quoted, numbers bare
    try:
        for raw in reader:
            batch = _csv_ready(raw)
            if writer is None:
                writer = pcsv.CSVWriter(out, batch.schema, write_options=opts)
            writer.write_batch(batch)
            n += batch.num_rows
    finally:
        if writer is not None:
            writer.close()
    return n


# ------------------------------------------------------------------ json

def _plain(v):
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, datetime | date | time):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.hex()
    return str(v)


def _json(reader, out) -> int:
    n = 0
    out.write("[")
    for batch in reader:
        for row in batch.to_pylist():
            out.write(("\n" if n == 0 else ",\n") + json.dumps(row, default=_plain))
            n += 1
    out.write("\n]\n" if n else "]\n")
    return n


# ------------------------------------------------------------------ table

def plain_decimal(d: Decimal) -> str:
    """453.300000000000 -> 453.3; 100.000 -> 100 (never exponent notation)."""
    text = format(d, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, Decimal):
        return plain_decimal(v)
    return str(v)


#: Field metadata that right-aligns a text column in tables (sizes such as "2.65 MiB").
RIGHT = {b"align": b"right"}
#: Schema metadata key: the table's last line instead of "(N rows)" (stats: "(9 products)").
FOOTER = b"schemahub.footer"


def _right(f: pa.Field) -> bool:
    t = f.type
    return (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
            or (f.metadata or {}).get(b"align") == b"right")


def _table(reader, out) -> int:
    names = reader.schema.names
    right = [_right(f) for f in reader.schema]
    widths: list[int] | None = None
    n = 0

    def line(cells):
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)).rstrip()

    for batch in reader:
        cols = [[_cell(v) for v in col.to_pylist()] for col in batch.columns]
        rows = list(zip(*cols, strict=True)) if cols else [()] * batch.num_rows
        if widths is None:
            widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(names)]
            out.write(line(names) + "\n" + line(["-" * w for w in widths]) + "\n")
        for r in rows:
            out.write(line(r) + "\n")
        n += batch.num_rows
    if widths is None:
        widths = [len(c) for c in names]
        if names:
            out.write(line(names) + "\n" + line(["-" * w for w in widths]) + "\n")
    footer = (reader.schema.metadata or {}).get(FOOTER)
    out.write((footer.decode() if footer else f"({n:,} row{'s' if n != 1 else ''})") + "\n")
    return n


_WRITERS = {"table": _table, "csv": _csv, "json": _json, "parquet": _parquet}
