"""Raw objects -> curated Parquet, exactly: vectorized mapping, quarantine, deterministic files.

Each raw object becomes one Parquet file per UTC day it spans, named after
the raw key, so transforming it again rewrites the same bytes and never
duplicates rows. A marker under transformed/ records that an object is done;
it is written last, so a crash only means the object is transformed again.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemahub import rawobject
from schemahub.errors import NotFound, SchemahubError
from schemahub.layout import curated_key, marker_key, marker_prefix, quarantine_key
from schemahub.mapping import Compiled, compile_mapping
from schemahub.sources.spec import load_exchange
from schemahub.store.base import ObjectStore
from schemahub.table import FILE_SCHEMA

log = logging.getLogger("schemahub.transform")

# Encodings measured with bench/bench_transform.py, all readable by Athena (no BYTE_STREAM_SPLIT on
# decimals): ids and times delta-encode; constants and prices (which repeat) use a dictionary; sizes,
# which rarely repeat, stay plain (a dictionary made them larger and slower).
_ENCODING = {"trade_id": "DELTA_BYTE_ARRAY", "trade_time": "DELTA_BINARY_PACKED"}
_DICT = ["symbol", "base_asset", "quote_asset", "side", "ingested_at", "raw_key", "price"]


def write_parquet(table: pa.Table) -> bytes:
    """Deterministic zstd Parquet with statistics, sorted input assumed."""
    sink = io.BytesIO()
    pq.write_table(
        table, sink, compression="zstd", compression_level=1, write_statistics=True,
        use_dictionary=_DICT, column_encoding=_ENCODING, row_group_size=1_000_000,
        coerce_timestamps="us", allow_truncated_timestamps=False, store_schema=True,
    )
    return sink.getvalue()


@dataclass
class ObjectResult:
    raw_key: str
    rows: int = 0
    quarantined: int = 0
    files: list[str] = field(default_factory=list)
    last_trade_us: int | None = None  # newest trade time, for the freshness metric


@dataclass
class TransformResult:
    objects: int = 0
    rows: int = 0
    quarantined: int = 0
    files: int = 0
    pending: list[str] = field(default_factory=list)
    by_product: dict[str, dict] = field(default_factory=dict)


class Transformer:
    """Turns raw objects into curated files; mappings are compiled once per exchange."""

    def __init__(self, store: ObjectStore, *, mappings_dir=None) -> None:
        self.store = store
        self.mappings_dir = mappings_dir
        self._compiled: dict[str, Compiled] = {}

    def compiled(self, exchange: str) -> Compiled:
        if exchange not in self._compiled:
            self._compiled[exchange] = compile_mapping(load_exchange(exchange, self.mappings_dir).table)
        return self._compiled[exchange]

    def pending(self, *, rebuild: bool = False, prefix: str = "raw/") -> list[str]:
        """Raw keys not yet transformed (all of them with rebuild)."""
        raw = [o.key for o in self.store.list(prefix)]
        if rebuild:
            return raw
        done = {o.key for o in self.store.list(marker_prefix(prefix))}
        return [k for k in raw if marker_key(k) not in done]

    def run(self, *, rebuild: bool = False, dry_run: bool = False, prefix: str = "raw/", deadline: float | None = None) -> TransformResult:
        """Transform pending raw objects under prefix; stop starting new ones after deadline (time.monotonic())."""
        res = TransformResult()
        keys = self.pending(rebuild=rebuild, prefix=prefix)
        if dry_run:
            res.pending = keys
            return res
        for key in keys:
            if deadline is not None and time.monotonic() > deadline:
                res.pending.append(key)
                continue
            r = self.transform_object(key, rebuild=rebuild)
            res.objects += 1
            res.rows += r.rows
            res.quarantined += r.quarantined
            res.files += len(r.files)
            _, ex, pid, _ = key.split("/", 3)
            agg = res.by_product.setdefault(f"{ex}/{pid}", {"rows": 0, "quarantined": 0})
            agg["rows"] += r.rows
            agg["quarantined"] += r.quarantined
        return res

    def transform_object(self, raw_key: str, *, rebuild: bool = False) -> ObjectResult:
        """Transform one raw object; safe to repeat (same files, same bytes).

        rebuild also removes quarantine left by an earlier mapping, which a
        plain repeat cannot have produced differently.
        """
        try:
            data = self.store.get(raw_key).data
        except NotFound:
            raise SchemahubError(f"{raw_key}: raw object not found") from None
        header, rest = rawobject.split(data, raw_key)
        exchange, product_id, symbol, fetched = header.exchange, header.product_id, header.symbol, header.fetched_at
        table, bad = build_table(self.compiled(exchange), rest, header=header.doc, raw_key=raw_key, fetched=fetched)
        res = ObjectResult(raw_key, rows=table.num_rows, quarantined=bad.num_rows)
        self._write_quarantine(raw_key, bad, clean_stale=rebuild)
        if table.num_rows:
            res.last_trade_us = pc.max(pc.cast(table["trade_time"], pa.int64())).as_py()
            days = pc.cast(table["trade_time"], pa.date32())  # the UTC day
            lo, hi = pc.min_max(days).values()
            for day in ([lo] if lo == hi else sorted(pc.unique(days).to_pylist())):
                day = day.as_py() if hasattr(day, "as_py") else day
                part = table if lo == hi else table.filter(pc.equal(days, pa.scalar(day, pa.date32())))
                key = curated_key(exchange, product_id, day.isoformat(), raw_key)
                self.store.put(key, write_parquet(part))
                res.files.append(key)
        marker = {"raw_key": raw_key, "rows": res.rows, "quarantined": res.quarantined, "files": res.files,
                  "symbol": symbol}
        self.store.put(marker_key(raw_key), json.dumps(marker, sort_keys=True).encode())
        return res

    def _write_quarantine(self, raw_key: str, bad: pa.Table, *, clean_stale: bool) -> None:
        key = quarantine_key(raw_key)
        if bad.num_rows == 0:
            if clean_stale:
                self.store.delete(key)
            return
        lines = [json.dumps(r, sort_keys=True) for r in bad.to_pylist()]  # only bad rows: rare, not the hot path
        self.store.put(key, ("\n".join(lines) + "\n").encode())
        log.warning("%s: %d row(s) quarantined in %s", raw_key, bad.num_rows, key)


def constant(value, type_: pa.DataType, n: int) -> pa.Array:
    """n copies of value, built without a Python list of n items."""
    return pa.repeat(pa.scalar(value, type_), n)


def split_lines(rest: bytes) -> pa.Array:
    """The verbatim trade lines of a raw object as one StringArray (no per-row Python)."""
    if rest.endswith(b"\n"):
        rest = rest[:-1]
    if not rest:
        return pa.array([], pa.string())
    return pc.split_pattern(pa.array([rest], pa.binary()), b"\n").flatten().cast(pa.string())


def build_table(compiled: Compiled, rest: bytes, *, header: dict, raw_key: str, fetched: datetime) -> tuple[pa.Table, pa.Table]:
    """(good rows in FILE_SCHEMA sorted by trade_time, quarantined rows with reasons)."""
    lines = LazyLines(rest)
    cols, bad = compiled.apply(lines, rest)
    good = bad.reason.is_null()
    n_good = pc.sum(pc.cast(good, pa.int64())).as_py() or 0
    product_id = header["product_id"]
    base, _, quote = product_id.partition("-")
    const = {
        "symbol": header["symbol"], "base_asset": base, "quote_asset": quote, "raw_key": raw_key,
    }
    const["ingested_at"] = fetched
    arrays = []
    for f in FILE_SCHEMA:
        if f.name in cols:
            arr = cols[f.name].filter(good) if n_good != len(lines) else cols[f.name]
            arrays.append(arr.cast(f.type))
        else:
            arrays.append(constant(const[f.name], f.type, n_good))
    table = pa.Table.from_arrays(arrays, schema=FILE_SCHEMA)
    if n_good > 1:
        # Stable sort: equal times keep raw-line order, which never changes, so output is deterministic.
        table = table.take(pc.sort_indices(table["trade_time"]))
    if n_good == len(lines):
        return table, pa.table({c: pa.array([], pa.string()) for c in ("raw_key", "field", "reason", "value", "raw")})
    bad_mask = pc.invert(good)
    line_no = pc.add(pc.cumulative_sum(constant(1, pa.int64(), len(lines))), 1)  # line 1 is the header
    quarantined = pa.table({
        "raw_key": constant(raw_key, pa.string(), len(lines) - n_good),
        "line": line_no.filter(bad_mask),
        "field": bad.field.filter(bad_mask),
        "reason": bad.reason.filter(bad_mask),
        "value": bad.value.filter(bad_mask),
        "raw": lines.array.filter(bad_mask),
    })
    return table, quarantined


class LazyLines:
    """The object's lines: counted cheaply, split into an array only when needed (regex path, quarantine)."""

    def __init__(self, rest: bytes) -> None:
        self.rest = rest
        self._array = None
        self._n = rest.count(b"\n") + (0 if not rest or rest.endswith(b"\n") else 1)

    def __len__(self) -> int:
        return self._n

    @property
    def array(self) -> pa.Array:
        if self._array is None:
            self._array = split_lines(self.rest)
        return self._array
