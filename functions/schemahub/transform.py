"""Raw objects -> curated Parquet, exactly: vectorized mapping, quarantine, deterministic files.

Each raw object becomes one Parquet file per UTC day it spans, named after
the raw key, so transforming it again rewrites the same bytes and never
duplicates rows. A marker under transformed/ records that an object is done;
it is written last, so a crash only means the object is transformed again.
"""

from __future__ import annotations

import hashlib
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
from schemahub.compact import invalidate_compaction
from schemahub.errors import DamagedObject, NotFound, SchemahubError
from schemahub.layout import (
    RawKey,
    curated_key,
    damaged_key,
    damaged_prefix,
    marker_key,
    marker_prefix,
    parse_source_key,
    parse_table_file,
    quarantine_key,
    raw_key_of_damaged,
)
from schemahub.mapping import Compiled, CompiledCsv, NotText, compile_mapping
from schemahub.sources.spec import load_exchange
from schemahub.store.base import ObjectStore
from schemahub.table import FILE_SCHEMA

log = logging.getLogger("schemahub.transform")

# Encodings measured with bench/bench_transform.py, all readable by Athena (no BYTE_STREAM_SPLIT on
# decimals): ids and times delta-encode; constants and prices (which repeat) use a dictionary; sizes,
# which rarely repeat, stay plain (a dictionary made them larger and slower).
_ENCODING = {"trade_id": "DELTA_BYTE_ARRAY", "trade_time": "DELTA_BINARY_PACKED"}
_DICT = ["symbol", "base_asset", "quote_asset", "side", "ingested_at", "raw_key", "price"]


#: Min/max statistics for the columns queries filter on (a time window; an id range, as the audit asks).
#: Statistics on every column cost 40% of the write (bench/bench_transform.py) and prune nothing more.
_STATISTICS = ["trade_time", "trade_id"]


def write_parquet(table: pa.Table) -> bytes:
    """Deterministic zstd Parquet with statistics on trade_time and trade_id, sorted input assumed."""
    sink = io.BytesIO()
    pq.write_table(
        table, sink, compression="zstd", compression_level=1, write_statistics=_STATISTICS,
        use_dictionary=_DICT, column_encoding=_ENCODING, row_group_size=1_000_000,
        coerce_timestamps="us", allow_truncated_timestamps=False, store_schema=True,
    )
    return sink.getvalue()


@dataclass
class ObjectResult:
    raw_key: str
    rows: int = 0
    quarantined: int = 0
    duplicates: int = 0  # exact repeats of a trade already in the object (raw keeps them; the table does not)
    files: list[str] = field(default_factory=list)
    last_trade_us: int | None = None  # newest trade time, for the freshness metric
    removed: list[str] = field(default_factory=list)  # files of an earlier transform this one no longer writes


@dataclass
class TransformResult:
    objects: int = 0
    rows: int = 0
    quarantined: int = 0
    duplicates: int = 0
    files: int = 0
    pending: list[str] = field(default_factory=list)
    by_product: dict[str, dict] = field(default_factory=dict)
    damaged: dict[str, str] = field(default_factory=dict)  # raw key -> reason: set aside, see damaged/
    failed: dict[str, str] = field(default_factory=dict)   # raw key -> error: left for the next run
    stray: list[str] = field(default_factory=list)         # keys under raw/ that are not raw objects (ignored)

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.failed

    def add(self, r: ObjectResult) -> None:
        """Count one object transformed."""
        self.objects += 1
        self.rows += r.rows
        self.quarantined += r.quarantined
        self.duplicates += r.duplicates
        self.files += len(r.files)
        rk = parse_source_key(r.raw_key)
        agg = self.by_product.setdefault(f"{rk.exchange}/{rk.product_id}", {"rows": 0, "quarantined": 0, "duplicates": 0})
        agg["rows"] += r.rows
        agg["quarantined"] += r.quarantined
        agg["duplicates"] += r.duplicates

    def merge(self, other: TransformResult) -> None:
        """Add another run's counts (objects transformed as they landed, then the pass after ingest)."""
        for name in ("objects", "rows", "quarantined", "duplicates", "files"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name, agg in other.by_product.items():
            mine = self.by_product.setdefault(name, {"rows": 0, "quarantined": 0, "duplicates": 0})
            for k, v in agg.items():
                mine[k] += v


class Transformer:
    """Turns raw objects into curated files; mappings are compiled once per exchange.

    Nothing learnt from one raw object changes how another is read: the compiled mapping is the only
    state kept between objects (and between invocations of a warm Lambda).
    """

    def __init__(self, store: ObjectStore, *, mappings_dir=None, catalog=None) -> None:
        self.store = store
        self.mappings_dir = mappings_dir
        self._compiled: dict[str, tuple[Compiled, bool]] = {}
        self._integer_ids: dict[str, bool] = {}
        self._compiled_csv: dict[str, CompiledCsv] = {}
        self._specs: dict = {}
        self._catalog = catalog  # schemahub.catalog: default open_catalog(store), on first use

    @property
    def catalog(self):
        if self._catalog is None:
            from schemahub.catalog import open_catalog

            self._catalog = open_catalog(self.store)
        return self._catalog

    def _spec(self, exchange: str):
        """The exchange's mapping file, read once (both of its tables come from it)."""
        if exchange not in self._specs:
            self._specs[exchange] = load_exchange(exchange, self.mappings_dir)
        return self._specs[exchange]

    def _load(self, exchange: str) -> tuple[Compiled, bool]:
        if exchange not in self._compiled:
            spec = self._spec(exchange)
            # The header's min_id/max_id are the source's id field; check them only where the table's trade_id
            # is that same field.
            same_id = spec.table.columns["trade_id"].path == spec.source.trades.id_field
            # An exchange that numbers its trades 1, 2, 3... prints integer ids: only canonical ones are ids.
            self._integer_ids[exchange] = bool(getattr(spec.source.trades.pagination, "contiguous_ids", False))
            self._compiled[exchange] = (compile_mapping(spec.table), same_id)
        return self._compiled[exchange]

    def compiled(self, exchange: str) -> Compiled:
        return self._load(exchange)[0]

    def compiled_csv(self, exchange: str) -> CompiledCsv:
        """The exchange's archive table (CSV rows by column index), for raw objects whose header says "lines": "csv"."""
        if exchange not in self._compiled_csv:
            spec = self._spec(exchange)
            if spec.archive is None:
                raise SchemahubError(f"{exchange}: this raw object holds archive CSV rows, but mappings/exchanges/"
                                     f"{exchange}.yaml has no archive: table: to read them; add one or move the object out of raw/")
            self._integer_ids[exchange] = bool(getattr(spec.source.trades.pagination, "contiguous_ids", False))
            self._compiled_csv[exchange] = compile_mapping(spec.archive.table)
        return self._compiled_csv[exchange]

    def _raw_keys(self, prefix: str) -> tuple[list[str], list[str]]:
        """(raw object keys, stray keys) under prefix; strays are logged and never transformed."""
        keys, stray = [], []
        for o in self.store.list(prefix):
            (keys if parse_source_key(o.key) is not None else stray).append(o.key)
        for key in stray:
            log.warning("%s: not a raw object key (raw/<exchange>/<BASE-QUOTE>/<20-digit cursor>.jsonl.gz); "
                        "ignored: move it out of raw/", key)
        return keys, stray

    def pending(self, *, rebuild: bool = False, prefix: str = "raw/") -> list[str]:
        """Raw keys not yet transformed (all of them with rebuild)."""
        return self._pending(rebuild=rebuild, prefix=prefix)[0]

    def _pending(self, *, rebuild: bool, prefix: str) -> tuple[list[str], list[str]]:
        raw, stray = self._raw_keys(prefix)
        if rebuild:
            return raw, stray
        done = {o.key for o in self.store.list(marker_prefix(prefix))}
        return [k for k in raw if marker_key(k) not in done], stray

    def run(self, *, rebuild: bool = False, dry_run: bool = False, prefix: str = "raw/", deadline: float | None = None,
            progress=None) -> TransformResult:
        """Transform pending raw objects under prefix; stop starting new ones after deadline (time.monotonic()).

        One object's failure never stops the others: a damaged object is set aside (recorded under damaged/,
        reported in .damaged), any other per-object error is reported in .failed; the rest go on.
        """
        res = TransformResult()
        keys, res.stray = self._pending(rebuild=rebuild, prefix=prefix)
        if dry_run:
            res.pending = keys
            return res
        marked_damaged = {raw_key_of_damaged(o.key) for o in self.store.list(damaged_prefix(prefix))}
        todo = set(keys)
        for key in sorted(k for k in marked_damaged - todo if parse_source_key(k) is not None):
            # deleted, or restored and transformed since (the transform Lambda's path): dealt with
            log.info("%s: no longer set aside (deleted, or transformed since); removed %s", key, damaged_key(key))
            self.store.delete(damaged_key(key))
        for done, key in enumerate(keys):
            if progress is not None:  # progress(objects done, objects to do), for a person at a terminal
                progress(done, len(keys))
            if deadline is not None and time.monotonic() > deadline:
                res.pending.append(key)
                continue
            try:
                r = self.transform_object(key, rebuild=rebuild, was_damaged=key in marked_damaged)
            except DamagedObject as e:
                res.damaged[key] = e.reason
                continue
            except SchemahubError as e:
                log.error("%s: not transformed: %s", key, e)
                res.failed[key] = str(e)
                continue
            res.add(r)
        return res

    def transform_object(self, raw_key: str, *, rebuild: bool = False, was_damaged: bool | None = None,
                         text: bytes | None = None) -> ObjectResult:
        """Transform one raw object; safe to repeat (same files, same bytes).

        rebuild also removes what an earlier transform of the object wrote and this one does not (files on
        other days, quarantine), and invalidates the compaction of every day whose part changed.
        A damaged object raises DamagedObject after it is recorded under damaged/ with its reason.
        was_damaged: whether a damaged/ record exists (None: look).
        text: the object's text, decompressed, from the lander that just stored it (then it is not read back; the
        same checks against its header run on it).
        """
        rk = parse_source_key(raw_key)
        if rk is None:
            raise SchemahubError(f"{raw_key}: not a raw object key (raw/<exchange>/<BASE-QUOTE>/<cursor>.jsonl.gz)")
        try:
            res = self._transform(rk, rebuild=rebuild, text=text)
        except DamagedObject as e:
            record = {"raw_key": raw_key, "reason": e.reason}
            self.store.put(damaged_key(raw_key), json.dumps(record, sort_keys=True).encode())
            log.error("%s: damaged, set aside (recorded in %s): %s. The other objects go on; restore the object "
                      "from a copy or delete it, then run transform again", raw_key, damaged_key(raw_key), e.reason)
            raise
        if was_damaged or (was_damaged is None and (rebuild or self.store.exists(damaged_key(raw_key)))):
            self.store.delete(damaged_key(raw_key))  # readable again (restored): no longer set aside
        return res

    def _transform(self, rk: RawKey, *, rebuild: bool, text: bytes | None = None) -> ObjectResult:
        raw_key = rk.key
        if text is not None:
            header, rest = rawobject.split_text(text, raw_key)
        else:
            try:
                data = self.store.get(raw_key).data
            except NotFound:
                raise SchemahubError(f"{raw_key}: raw object not found") from None
            header, rest = rawobject.split(data, raw_key)
        if (header.exchange, header.product_id, header.start) != (rk.exchange, rk.product_id, rk.start):
            raise DamagedObject(raw_key, f"header names {header.exchange}/{header.product_id} from cursor "
                                         f"{header.start}, not what its key says")
        if header.lines == rawobject.LINES_CSV:
            # The archive's id column is the trade id the header's min_id/max_id were read from.
            compiled, same_id = self.compiled_csv(header.exchange), True
        else:
            compiled, same_id = self._load(header.exchange)
        table, bad, info = build_table(compiled, rest, header=header.doc, raw_key=raw_key, fetched=header.fetched_at,
                                  n=header.count,  # split() checked the line count against the header
                                  integer_ids=self._integer_ids.get(header.exchange, False))
        if same_id and info.get("id_range") is not None:
            rawobject.check_ids(header, raw_key, *info["id_range"])
        res = ObjectResult(raw_key, rows=table.num_rows, quarantined=bad.num_rows, duplicates=info["duplicates"])
        old = self._old_marker(raw_key) if rebuild else None
        self._write_quarantine(raw_key, bad, clean_stale=rebuild)
        digests: dict[str, str] = {}
        if table.num_rows:
            res.last_trade_us = pc.max(pc.cast(table["trade_time"], pa.int64())).as_py()
            days = pc.cast(table["trade_time"], pa.date32())  # the UTC day
            lo, hi = pc.min_max(days).values()
            for day in ([lo] if lo == hi else sorted(pc.unique(days).to_pylist())):
                day = day.as_py() if hasattr(day, "as_py") else day
                part = table if lo == hi else table.filter(pc.equal(days, pa.scalar(day, pa.date32())))
                key = curated_key(header.exchange, header.product_id, day.isoformat(), raw_key)
                body = write_parquet(part)
                self.store.put(key, body)
                res.files.append(key)
                digests[key] = hashlib.sha256(body).hexdigest()[:32]
        if old is not None:
            self._retire(old, digests, res)
        # Before the marker: each day this object wrote to is read as its parts by Athena too (registered, or
        # moved back from a compacted copy that lacks this part); a crash before this just transforms again.
        # A rebuild that wrote a part byte for byte as the completed earlier transform did (its marker says so)
        # leaves the day where it is: a compacted copy of the day holds this very part.
        same = {k for k in res.files if old is not None and (old.get("digests") or {}).get(k) == digests[k]}
        for path in sorted({parse_table_file(k)[1] for k in res.files if k not in same}):
            self.catalog.show_parts(path)
        marker = {"raw_key": raw_key, "rows": res.rows, "quarantined": res.quarantined, "duplicates": res.duplicates,
                  "files": res.files, "digests": digests, "symbol": header.symbol}
        self.store.put(marker_key(raw_key), json.dumps(marker, sort_keys=True).encode())
        return res

    def _old_marker(self, raw_key: str) -> dict | None:
        try:
            doc = json.loads(self.store.get(marker_key(raw_key)).data)
        except NotFound:
            return None
        except ValueError:
            log.warning("%s: unreadable marker; its files cannot be checked", marker_key(raw_key))
            return None
        return doc if isinstance(doc, dict) else None

    def _retire(self, old: dict, digests: dict[str, str], res: ObjectResult) -> None:
        """After a rebuild: delete the earlier transform's files this one no longer writes, and invalidate the
        compaction of each day whose part changed or went (its compacted copy holds the old rows)."""
        old_digests = old.get("digests") or {}
        changed = set()
        for key in old.get("files") or []:
            if not isinstance(key, str) or parse_table_file(key) is None:
                continue
            if key not in digests:
                self.store.delete(key)
                res.removed.append(key)
                changed.add(key)
            elif old_digests.get(key) != digests[key]:
                changed.add(key)
        for key in sorted(changed):
            _, path, _ = parse_table_file(key)
            invalidate_compaction(self.store, path)
            self.catalog.show_parts(path)  # the manifest is gone first: a switch that checks again sees it
        if res.removed:
            log.info("%s: removed %d file(s) an earlier mapping wrote: %s", res.raw_key, len(res.removed),
                     ", ".join(res.removed))

    def _write_quarantine(self, raw_key: str, bad: pa.Table, *, clean_stale: bool) -> None:
        key = quarantine_key(raw_key)
        if bad.num_rows == 0:
            if clean_stale:
                self.store.delete(key)
            return
        lines = [json.dumps(r, sort_keys=True) for r in bad.to_pylist()]  # only bad rows: rare, not the hot path
        self.store.put(key, ("\n".join(lines) + "\n").encode())
        log.warning("%s: %d row(s) quarantined in %s", raw_key, bad.num_rows, key)


def positions(n: int) -> pa.Array:
    """0, 1, ..., n-1 as int64, without a Python list."""
    return pc.subtract(pc.cumulative_sum(constant(1, pa.int64(), n)), 1) if n else pa.array([], pa.int64())


def group_heads(sorted_values: pa.Array) -> pa.Array:
    """True where a value differs from the one before it (the first row of each run of equal values)."""
    if len(sorted_values) == 0:
        return pa.array([], pa.bool_())
    diff = pc.fill_null(pc.not_equal(sorted_values[1:], sorted_values[:-1]), True)
    return pa.concat_arrays([pa.array([True]), diff])


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


_GENESIS_US = 1_230_940_800_000_000  # 2009-01-03T00:00:00Z: no crypto trade is older than Bitcoin's first block
_FUTURE_US = 86_400_000_000          # a trade more than a day after its object was fetched is a misprint


def build_table(compiled: Compiled | CompiledCsv, rest: bytes, *, header: dict, raw_key: str, fetched: datetime,
                n: int | None = None, integer_ids: bool = False) -> tuple[pa.Table, pa.Table, dict]:
    """(good rows in FILE_SCHEMA sorted by trade_time, quarantined rows with reasons, info).

    info: duplicates (exact repeats of a trade id dropped: the first line wins), id_range (min, max) of
    the numeric trade ids of every line, or None if some id is not numeric; header_rows: 1 when the lines
    open with a CSV header row (column names, not a trade: dropped), else 0.
    """
    skipped = 0
    if isinstance(compiled, CompiledCsv) and rest:
        cut = compiled.header_row(rest)
        if cut:
            rest, skipped = rest[cut:], 1
            n = None if n is None else n - 1
    lines = LazyLines(rest, n)
    n = len(lines)
    try:
        cols, bad = compiled.apply(lines, rest)
    except NotText as e:
        raise DamagedObject(raw_key, str(e)) from None
    _check_values(cols, bad, fetched)
    ints, printed = bad.ints.get("trade_id"), True  # read as JSON integers: printed back canonically
    if ints is None or ints.null_count:
        ints, printed = (_int_ids(cols["trade_id"]) if n else None), False
    if integer_ids and n:
        _check_integer_ids(cols["trade_id"], bad, ints, printed=printed)
    info = {"duplicates": 0, "id_range": None, "header_rows": skipped}
    if ints is not None:
        info["id_range"] = tuple(v.as_py() for v in pc.min_max(ints).values())
    good = bad.reason.is_null()
    # When every row is good: the time order (None: already in order), and whether the ids, taken in that
    # order, strictly increase (then all are distinct: no duplicate to look for). The usual case, for a
    # REST chain (ids rise with time) and an archive file alike.
    order, distinct = None, False
    if n > 1 and good.true_count == n:
        order = _time_order(cols["trade_time"])
        if ints is not None:
            s = ints if order is None else ints.take(order)
            distinct = pc.all(pc.greater(s.slice(1), s.slice(0, n - 1))).as_py()
    drop = None if distinct else _duplicates(cols, good, bad, n, ints)
    if drop is not None:
        info["duplicates"] = drop.true_count
        good = bad.reason.is_null()  # a repeat with other values is now marked bad
    keep = good if drop is None else pc.and_(good, pc.invert(drop))
    n_good = keep.true_count
    product_id = header["product_id"]
    base, _, quote = product_id.partition("-")
    const = {
        "symbol": header["symbol"], "base_asset": base, "quote_asset": quote, "raw_key": raw_key,
    }
    const["ingested_at"] = fetched
    arrays = []
    for f in FILE_SCHEMA:
        if f.name in cols:
            arr = cols[f.name]
            if n_good != n:
                arr = arr.filter(keep)
            elif order is not None:
                arr = arr.take(order)  # every row kept: sorted here, column by column (constants need no sort)
            arrays.append(arr.cast(f.type))
        else:
            arrays.append(constant(const[f.name], f.type, n_good))
    table = pa.Table.from_arrays(arrays, schema=FILE_SCHEMA)
    if n_good > 1 and n_good != n:
        rows = _time_order(table["trade_time"])
        if rows is not None:
            table = table.take(rows)
    empty = pa.table({c: pa.array([], pa.string()) for c in ("raw_key", "field", "reason", "value", "raw")})
    n_bad = n - good.true_count if n else 0
    if n_bad == 0:
        return table, empty, info
    bad_mask = pc.invert(good)
    line_no = pc.add(pc.cumulative_sum(constant(1, pa.int64(), n)), 1 + skipped)  # line 1 is the header
    quarantined = pa.table({
        "raw_key": constant(raw_key, pa.string(), n_bad),
        "line": line_no.filter(bad_mask),
        "field": bad.field.filter(bad_mask),
        "reason": bad.reason.filter(bad_mask),
        "value": bad.value.filter(bad_mask),
        "raw": lines.array.filter(bad_mask),
    })
    return table, quarantined, info


def _time_order(t) -> pa.Array | None:
    """The rows' indices in trade_time order, or None when they are in that order already (an archive file,
    oldest first). Stable: equal times keep raw-line order, which never changes, so output is deterministic."""
    n = len(t)
    if n < 2 or pc.all(pc.greater_equal(t.slice(1), t.slice(0, n - 1))).as_py():
        return None
    return pc.sort_indices(t)


def _check_values(cols: dict, bad, fetched: datetime) -> None:
    """Quarantine values no exchange prints for a real trade: price <= 0, size <= 0, impossible times.

    One min/max pass per column; the row masks are only built when a bound is crossed (rare)."""
    limit = int(fetched.timestamp()) * 1_000_000 + fetched.microsecond + _FUTURE_US
    price, size = cols["price"], cols["size"]
    micros = pc.cast(cols["trade_time"], pa.int64())
    zero = pa.scalar(0, pa.int64())
    lo_p = pc.min(price).as_py()
    if lo_p is not None and lo_p <= 0:
        bad.mark(pc.less_equal(price, pc.cast(zero, price.type)), "price", "not positive (a price must be > 0)",
                 bad.texts["price"])
    lo_s = pc.min(size).as_py()
    if lo_s is not None and lo_s <= 0:
        bad.mark(pc.less(size, pc.cast(zero, size.type)), "size", "negative size", bad.texts["size"])
        bad.mark(pc.equal(size, pc.cast(zero, size.type)), "size", "zero size (a trade of nothing)", bad.texts["size"])
    lo_t, hi_t = (v.as_py() for v in pc.min_max(micros).values())
    if lo_t is not None and lo_t < _GENESIS_US:
        bad.mark(pc.less(micros, _GENESIS_US), "trade_time", "before 2009-01-03 (older than any crypto trade)",
                 bad.texts["trade_time"])
    if hi_t is not None and hi_t > limit:
        bad.mark(pc.greater(micros, limit), "trade_time",
                 f"more than a day after the object was fetched ({fetched.isoformat()})", bad.texts["trade_time"])


CANONICAL_ID = r"^(0|[1-9][0-9]*)$"


def _check_integer_ids(ids: pa.Array, bad, ints: pa.Array | None = None, *, printed: bool = False) -> None:
    """Quarantine any spelling of an integer id but the canonical decimal one ('099', '99.0', ' 99', '+99',
    '9.9e1'): read as a number it would merge with another trade, read as text it would be a second row for
    one trade, and the table keeps ids exactly as printed.

    ints: the ids as int64 when every one reads as an integer. Then the canonical spelling of each is the one
    int64 prints back (no sign, no leading zero, no space): ids equal to their printed value, none negative,
    are all canonical, without a regex. printed: ids is ints printed (JSON integers read by Arrow), so only the
    sign is left to check. Otherwise one anchored regex pass over the ids decides, row by row."""
    if ints is not None and len(ints) and pc.min(ints).as_py() >= 0 \
            and (printed or pc.all(pc.equal(pc.cast(ints, pa.string()), ids)).as_py()):
        return
    ok = pc.match_substring_regex(ids, CANONICAL_ID)
    if ok.null_count == 0 and pc.all(ok).as_py():
        return
    bad.mark(pc.invert(pc.fill_null(ok, True)), "trade_id",
             "not a canonical decimal integer (this exchange prints integer ids such as 99: no sign, leading zero, "
             "space, fraction or exponent)", ids)


def _int_ids(ids: pa.Array) -> pa.Array | None:
    """The trade ids as int64, or None when some line's id is missing or not an integer."""
    if ids.null_count:
        return None
    try:
        return pc.cast(ids, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _duplicates(cols: dict, good: pa.Array, bad, n: int, ints: pa.Array | None = None) -> pa.Array | None:
    """Mask of good rows that repeat an earlier line's trade id with the same values (dropped: raw keeps
    them, the table holds each trade once), or None if there are none. A repeat with different values is
    marked bad instead (quarantined), so the first line of an id is the one the table holds."""
    if n < 2:
        return None
    n_good = pc.sum(pc.cast(good, pa.int64())).as_py() or 0
    # The usual case, one cheap hash pass: all ids distinct (on integers where the ids are integers).
    probe = ints if ints is not None else cols["trade_id"]
    if n_good == n and ints is not None and pc.all(pc.greater(ints.slice(1), ints.slice(0, n - 1))).as_py():
        return None  # ids strictly increasing (an archive file, a REST chain): all distinct, one cheap pass
    if n_good == n and pc.count_distinct(probe).as_py() == n:
        return None
    ids = pc.if_else(good, cols["trade_id"], pa.scalar(None, pa.string()))
    if pc.count_distinct(ids, mode="only_valid").as_py() == n_good:
        return None
    pos = positions(n)
    order = pc.sort_indices(pa.table({"id": ids, "pos": pos}), sort_keys=[("id", "ascending"), ("pos", "ascending")])
    head = group_heads(ids.take(order))
    start = pc.cumulative_max(pc.if_else(head, pos, 0))
    # Per line: the first line holding its trade id (order.take(start), put back in line order).
    leader_a = order.take(start).take(pc.sort_indices(order))
    repeat = pc.and_(good, pc.not_equal(leader_a, pos))
    same = None
    for name in ("price", "size", "side", "trade_time"):
        col = cols[name]
        eq = pc.fill_null(pc.equal(col, col.take(leader_a)), False)
        both_null = pc.and_(col.is_null(), col.take(leader_a).is_null())
        eq = pc.or_(eq, both_null)
        same = eq if same is None else pc.and_(same, eq)
    conflict = pc.and_(repeat, pc.invert(same))
    if pc.any(conflict).as_py():
        first_line = pc.cast(pc.add(leader_a, 2), pa.string())  # file line numbers: the header is line 1
        reason = pc.binary_join_element_wise("duplicate trade id with other values than line ", first_line,
                                             " (kept the first)", "")
        bad.mark_each(conflict, "trade_id", reason, cols["trade_id"])
    return pc.and_(repeat, same)


class LazyLines:
    """The object's lines: counted cheaply, split into an array only when needed (regex path, quarantine)."""

    def __init__(self, rest: bytes, n: int | None = None) -> None:
        self.rest = rest
        self._array = None
        self._n = n if n is not None else rest.count(b"\n") + (0 if not rest or rest.endswith(b"\n") else 1)

    def __len__(self) -> int:
        return self._n

    @property
    def array(self) -> pa.Array:
        if self._array is None:
            self._array = split_lines(self.rest)
        return self._array
