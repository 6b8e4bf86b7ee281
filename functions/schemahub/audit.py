"""The completeness audit: per product and UTC day, what the table holds, and every hole in its trade ids, explained.

For an exchange whose trade ids are contiguous and whose cursor is the trade id (PageChecks.contiguous_ids with an
id cursor: Coinbase, Binance, OKX), every id in the landed cursor range (the checkpoint's (lo, hi], and a backfill's
(target, cursor]) must be in the table once. An id that is not is a hole, classified:

- `confirmed`: the exchange never served it (the landing's page checks confirmed the gap: the raw header's `gaps`);
- `not_landed`: outside the landed range (beyond the checkpoint, or below a backfill still under way);
- `lost`: landed in raw (a raw object that was transformed holds it) but missing from the table: our bug;
- `unexplained`: missing from raw and not confirmed (a raw object rewritten without it, a lost page):
  repairable with `audit --repair`, which asks the exchange again;
- and, reported but explained: `quarantined` (in raw, refused by the mapping with a reason under quarantine/) and
  `not_transformed` (in a raw object the transform has not read yet).

Duplicates: a trade id read twice by the table's readers (e.g. a copy of a part under another name), a part that no
raw object wrote (a stray file) and rows a compaction dropped as duplicates all fail the audit.

Vectorized with pyarrow compute: ids are sorted, differenced and matched as arrays; Python loops run over holes
and objects, never over trades. Plain Python: the store is the only port (the repair's exchange is a Source).
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemahub import rawobject
from schemahub.errors import DamagedObject, InvalidCheckpoint, NotFound, SchemahubError
from schemahub.layout import (
    audit_key,
    CHECKPOINTS,
    audit_prefix,
    curated_prefix,
    manifest_key,
    marker_prefix,
    parse_audit_key,
    parse_checkpoint_key,
    parse_source_key,
    raw_name,
    raw_prefix,
)
from schemahub.store.base import ObjectStore

log = logging.getLogger("schemahub.audit")

CONFIRMED, NOT_LANDED, LOST, UNEXPLAINED = "confirmed", "not_landed", "lost", "unexplained"
QUARANTINED, NOT_TRANSFORMED = "quarantined", "not_transformed"
CLASSES = (CONFIRMED, NOT_LANDED, QUARANTINED, NOT_TRANSFORMED, LOST, UNEXPLAINED)
EXPLAINED = frozenset({CONFIRMED, NOT_LANDED, QUARANTINED, NOT_TRANSFORMED})

#: Exit codes of `schemahub audit` (README, "Audit"): 1 when a product could not be audited (and nothing worse).
EXIT_OK, EXIT_NOT_AUDITED, EXIT_UNEXPLAINED, EXIT_LOST = 0, 1, 3, 4

_US = pa.timestamp("us", tz="UTC")
_NO_LOWER, _NO_UPPER = -(2**62), 2**62  # an id window's open ends


@dataclass
class ProductAudit:
    exchange: str
    product_id: str
    days: list[dict] = field(default_factory=list)  # one report per UTC day, in date order
    holes: list[dict] = field(default_factory=list)  # every hole of the product (also listed in its day)
    contiguous: bool = False
    lo: int | None = None
    hi: int | None = None
    damaged: list[str] = field(default_factory=list)  # raw objects that could not be read (their ids are holes)
    error: str = ""

    @property
    def missing(self) -> dict[str, int]:
        out = {c: 0 for c in CLASSES}
        for h in self.holes:
            out[h["class"]] += h["ids"]
        return out

    @property
    def duplicates(self) -> int:
        return sum(d["duplicates"] + d["compaction_duplicates"] + len(d["stray_parts"]) for d in self.days)

    @property
    def ok(self) -> bool:
        m = self.missing
        return not self.error and not m[LOST] and not m[UNEXPLAINED] and not self.duplicates and all(
            d["compacted_agrees"] is not False for d in self.days)

    def to_dict(self) -> dict:
        return {"exchange": self.exchange, "product_id": self.product_id, "contiguous_ids": self.contiguous,
                "lo": self.lo, "hi": self.hi, "ok": self.ok, "missing": self.missing, "duplicates": self.duplicates,
                "holes": self.holes, "damaged": self.damaged, "error": self.error, "days": self.days}


@dataclass
class AuditResult:
    products: list[ProductAudit] = field(default_factory=list)
    audited_at: str = ""
    reports: list[str] = field(default_factory=list)  # report keys written
    repairs: list[dict] = field(default_factory=list)  # what --repair did

    @property
    def exit_code(self) -> int:
        if any(p.missing[LOST] for p in self.products):
            return EXIT_LOST
        if any(not p.ok for p in self.products if not p.error):
            return EXIT_UNEXPLAINED
        return EXIT_NOT_AUDITED if any(p.error for p in self.products) else EXIT_OK

    @property
    def missing_trades(self) -> int:
        """Ids missing for no good reason (lost + unexplained): the `MissingTrades` metric."""
        return sum(p.missing[LOST] + p.missing[UNEXPLAINED] for p in self.products)

    def to_dict(self) -> dict:
        return {"audited_at": self.audited_at, "exit_code": self.exit_code, "missing_trades": self.missing_trades,
                "products": [p.to_dict() for p in self.products], "repairs": self.repairs}


# ------------------------------------------------------------------ what the store holds

def products_in(store: ObjectStore, exchange: str | None = None, product_id: str | None = None) -> list[tuple[str, str]]:
    """(exchange, product) pairs that have raw objects or table files."""
    found = set()
    for info in store.list(raw_prefix(exchange) if exchange else raw_prefix()):
        rk = parse_source_key(info.key)
        if rk is not None:
            found.add((rk.exchange, rk.product_id))
    from schemahub.compact import table_partition

    for info in store.list(curated_prefix(exchange)):
        v = table_partition(info.key, warn=False)
        if v is not None:
            found.add(v[1][:2])
    # A checkpoint says ids were landed, even where its raw objects and table files are all gone.
    for info in store.list(CHECKPOINTS + (f"{exchange}/" if exchange else "")):
        v = parse_checkpoint_key(info.key)
        if v is not None:
            found.add(v)
    return sorted(p for p in found if product_id is None or p[1] == product_id)


def product_of(store: ObjectStore, exchange: str, product_id: str):
    """The product as its first raw object names it (symbol, base, quote): what a repair asks the exchange for."""
    from schemahub.sources.base import Product

    for info in store.list(raw_prefix(exchange, product_id)):
        if parse_source_key(info.key) is None:
            continue
        try:
            h = rawobject.read_header(store.get(info.key).data, info.key)
        except (NotFound, DamagedObject):
            continue
        return Product(product_id, h.symbol, h.base_asset, h.quote_asset)
    raise SchemahubError(f"{raw_prefix(exchange, product_id)}: no readable raw object names the exchange's symbol "
                         "for this product; nothing to repair from")


def _id_cursor(exchange: str, mappings_dir=None) -> bool:
    """True where the cursor is the trade id and ids are contiguous: every id of the landed range must exist."""
    from schemahub.sources.spec import load_exchange

    pg = load_exchange(exchange, mappings_dir).source.trades.pagination
    return bool(pg.contiguous_ids) and pg.kind in ("id_forward", "id_window_desc")


def _keys_in(store: ObjectStore, exchange: str, product_id: str, window: tuple[int, int] | None) -> list[str]:
    """The product's raw and amendment keys; with an id window, only those whose cursor range meets it (a chain
    object covers (its start, the next object's start], an amendment (start, end]: known from the keys alone)."""
    from schemahub.layout import parse_amendment_key, parse_raw_key

    chain, amends = [], []
    for info in store.list(raw_prefix(exchange, product_id)):
        rk = parse_raw_key(info.key)
        if rk is not None and rk.product_id == product_id:
            chain.append(rk)
        elif (ak := parse_amendment_key(info.key)) is not None and ak.product_id == product_id:
            amends.append(ak)
    if window is None:
        return sorted([k.key for k in chain] + [k.key for k in amends])
    lo, hi = window
    chain.sort(key=lambda k: k.start)
    out = []
    for i, k in enumerate(chain):
        end = chain[i + 1].start if i + 1 < len(chain) else None
        if k.start < hi and (end is None or end >= lo):
            out.append(k.key)
    for k in amends:
        end = int(raw_name(k.key).split("-")[1])
        if k.start < hi and end >= lo:
            out.append(k.key)
    return sorted(out)


def _raw(store: ObjectStore, exchange: str, product_id: str, transformer, pa_: ProductAudit,
         window: tuple[int, int] | None = None):
    """(raw ids table: id, time, quarantined, transformed; confirmed gaps [(a, b)]; the chain's cursor range
    (lowest start, highest end) or None), over the objects whose range meets the id window (all without one).

    A gap is believed only inside its own object's cursor range (no page of another range could confirm it);
    one that is not is reported in pa_.damaged and left out."""
    done = {o.key for o in store.list(marker_prefix(raw_prefix(exchange, product_id)))}
    from schemahub.layout import marker_key
    from schemahub.mapping import NotText
    from schemahub.transform import LazyLines, _check_values

    compiled = transformer.compiled(exchange)
    from schemahub.layout import parse_raw_key

    pieces, gaps, chain = [], [], None
    for key in _keys_in(store, exchange, product_id, window):
        info = _Key(key)
        try:
            header, rest = rawobject.split(store.get(info.key).data, info.key)
        except NotFound:
            continue
        except DamagedObject as e:
            pa_.damaged.append(f"{info.key}: {e.reason}")
            continue
        if parse_raw_key(info.key) is not None:
            chain = (min(chain[0], header.start), max(chain[1], header.end)) if chain else (header.start, header.end)
        for g in (header.doc or {}).get("gaps") or []:
            try:
                ga, gb = int(g[0]), int(g[1])
            except (TypeError, ValueError, IndexError):
                log.warning("%s: unreadable gap %r in its header; ignored", info.key, g)
                continue
            if not header.start < ga <= gb <= header.end:
                pa_.damaged.append(f"{info.key}: its header's gap [{ga}, {gb}] lies outside its own ids "
                                   f"({header.start}, {header.end}]: not believed")
                continue
            gaps.append((ga, gb, info.key))
        if not header.count:
            continue
        n = header.count
        try:
            mapping = compiled
            if header.lines == rawobject.LINES_CSV:  # an archive slice: CSV rows (a header row is not a trade)
                mapping = transformer.compiled_csv(exchange)
                cut = mapping.header_row(rest)
                if cut:
                    rest, n = rest[cut:], n - 1
            lines = LazyLines(rest, n)
            cols, bad = mapping.apply(lines, rest)
            _check_values(cols, bad, header.fetched_at)
            ids = pc.cast(cols["trade_id"], pa.int64())
        except (pa.ArrowInvalid, SchemahubError, KeyError, NotText) as e:
            pa_.damaged.append(f"{info.key}: its trade ids cannot be read as integers ({e})")
            continue
        n = len(ids)
        pieces.append(pa.table({
            "id": ids, "time": pc.cast(cols["trade_time"], _US),
            "quarantined": pc.invert(bad.reason.is_null()),
            "transformed": pa.repeat(pa.scalar(marker_key(info.key) in done), n),
        }))
    schema = pa.schema([("id", pa.int64()), ("time", _US), ("quarantined", pa.bool_()), ("transformed", pa.bool_())])
    table = pa.concat_tables(pieces) if pieces else schema.empty_table()
    table = table.filter(pc.is_valid(table["id"])) if table.num_rows else table
    return table, sorted(gaps), chain


def _damaged_table_files(layout, exchange: str, product_id: str, res: ProductAudit) -> None:
    """Name each of the product's damaged table files (set aside by schemahub.tablefiles, or found unreadable
    here) in res.damaged, with the command that rebuilds it: its rows count as missing from the table."""
    from schemahub.layout import parse_table_file
    from schemahub.tablefiles import rebuild_hint

    for key, why in sorted(layout.damaged.items()):
        parsed = parse_table_file(key)
        if parsed is None or parsed[2][:2] != (exchange, product_id):
            continue
        res.damaged.append(f"{key}: damaged table file ({why}); its rows are missing from the table until it is "
                           f"rebuilt from raw: run `{rebuild_hint(parsed[1])}`")


@dataclass(frozen=True)
class _Key:
    key: str


def _table(store: ObjectStore, exchange: str, product_id: str, layout, span: tuple[str | None, str | None] = (None, None)
           ) -> tuple[pa.Table, dict[str, dict]]:
    """(rows as the table's readers read them: id, time, date; per day: parts, compaction facts), for the days
    in `span` (first, last; ISO, inclusive; None: open)."""
    from schemahub.layout import parse_partition

    pieces, days = [], {}
    raw_names = {raw_name(o.key) for o in store.list(raw_prefix(exchange, product_id)) if parse_source_key(o.key)}
    for path, keys in sorted(layout.files.items()):
        ex, pid, day = parse_partition(path) or (None, None, None)
        if (ex, pid) != (exchange, product_id) or (span[0] and day < span[0]) or (span[1] and day > span[1]):
            continue
        for key in keys:
            try:
                t = pq.read_table(io.BytesIO(store.get(key).data), columns=["trade_id", "trade_time"])
            except (pa.ArrowException, OSError) as e:  # pages damaged behind a whole footer (tablefiles)
                layout.damaged[key] = f"unreadable pages ({type(e).__name__}: {' '.join(str(e).split())})"
                continue
            pieces.append(pa.table({"id": pc.cast(t["trade_id"], pa.int64()), "time": pc.cast(t["trade_time"], _US),
                                    "date": pa.repeat(pa.scalar(day), t.num_rows)}))
        parts = layout.parts.get(path, [])
        info = {"parts": len(parts), "parts_rows": 0, "compacted_rows": None, "compaction_duplicates": 0,
                "compacted_agrees": None,
                "stray_parts": sorted(k.rsplit("/", 1)[-1] for k in parts
                                      if k.rsplit("/", 1)[-1].removesuffix(".parquet") not in raw_names)}
        sizes = {}
        for k in parts:
            if k in layout.damaged:
                continue  # set aside (schemahub.tablefiles): its rows are not the table's
            try:
                sizes[k.rsplit("/", 1)[-1]] = pq.read_metadata(io.BytesIO(store.get(k).data)).num_rows
            except (pa.ArrowException, OSError) as e:  # a part under a sound compacted copy, damaged
                layout.damaged[k] = f"unreadable Parquet footer ({type(e).__name__}: {' '.join(str(e).split())})"
        info["parts_rows"] = sum(sizes.values())
        ckey = layout.compacted.get(path)
        if ckey is not None:
            try:
                m = json.loads(store.get(manifest_key(path)).data)
            except (NotFound, ValueError):
                m = {}
            crows = pq.read_metadata(io.BytesIO(store.get(ckey).data)).num_rows
            held = m.get("parts") or {}
            held_rows = sum(sizes.get(name, 0) for name in held)
            dup = int(m.get("duplicates") or 0)
            info.update(compacted_rows=crows, compaction_duplicates=dup,
                        compacted_agrees=crows == int(m.get("rows", -1)) and crows + dup == held_rows)
        days[day] = info
    schema = pa.schema([("id", pa.int64()), ("time", _US), ("date", pa.string())])
    return (pa.concat_tables(pieces) if pieces else schema.empty_table()), days


# ------------------------------------------------------------------ intervals (few: holes, not trades)

def _runs(ids: pa.Array) -> list[tuple[int, int]]:
    """Sorted distinct int64 ids -> their maximal runs of consecutive ids [(a, b)], vectorized."""
    n = len(ids)
    if n == 0:
        return []
    if n == 1:
        v = ids[0].as_py()
        return [(v, v)]
    step = pc.subtract(ids[1:], ids[:-1])
    breaks = pc.indices_nonzero(pc.greater(step, 1))  # run ends at i, next starts at i+1
    ends = pc.take(ids, breaks).to_pylist() + [ids[n - 1].as_py()]
    starts = [ids[0].as_py()] + pc.take(ids, pc.add(breaks, 1)).to_pylist()
    return list(zip(starts, ends))


def _gaps_of(present: pa.Array, lo: int, hi: int) -> list[tuple[int, int]]:
    """Ids in [lo, hi] not in the sorted distinct array `present` (restricted to [lo, hi]), as runs."""
    if hi < lo:
        return []
    inside = present.filter(pc.and_(pc.greater_equal(present, lo), pc.less_equal(present, hi)))
    out, prev = [], lo - 1
    for a, b in _runs(inside):
        if a > prev + 1:
            out.append((prev + 1, a - 1))
        prev = b
    if prev < hi:
        out.append((prev + 1, hi))
    return out


def _cut(a: int, b: int, cover: list[tuple[int, int, str]], ends: list[int] | None = None
         ) -> list[tuple[int, int, str | None]]:
    """[a, b] split by sorted disjoint labelled intervals: covered pieces get their label, the rest None.
    With `ends` (the intervals' ends, in order), the scan starts at the first interval ending at or after a
    (a binary search), so many holes against many intervals cost holes x log(intervals), not their product."""
    import bisect

    out, at = [], a
    for i in range(bisect.bisect_left(ends, a) if ends is not None else 0, len(cover)):
        x, y, label = cover[i]
        if x > b:  # sorted: every later interval starts after b too
            break
        if y < at:
            continue
        if x > at:
            out.append((at, x - 1, None))
        out.append((max(x, at), min(y, b), label))
        at = min(y, b) + 1
        if at > b:
            break
    if at <= b:
        out.append((at, b, None))
    return out


def _labelled_runs(ids: pa.Array, labels: pa.Array) -> list[tuple[int, int, str]]:
    """Runs of consecutive ids with the same label (ids sorted, distinct)."""
    out = []
    for label in pc.unique(labels).to_pylist():
        sel = ids.filter(pc.equal(labels, label))
        out += [(a, b, label) for a, b in _runs(sel)]
    return sorted(out)


# ------------------------------------------------------------------ one product

def audit_product(store: ObjectStore, exchange: str, product_id: str, *, layout=None, transformer=None,
                  start: str | None = None, end: str | None = None, mappings_dir=None,
                  today: str | None = None) -> ProductAudit:
    """Audit one product: per-day reports (dates start..end inclusive, ISO) and its holes, classified.

    With start or end, on an id-cursor exchange, only those days' table files (and the day on each side, so a
    hole at the edge has its neighbour) and the raw objects whose id range meets theirs are read: the daily audit
    of a long history costs its recent days, not all of it."""
    from schemahub.compact import read_layout
    from schemahub.landing.checkpoint import Checkpoints
    from schemahub.transform import Transformer

    res = ProductAudit(exchange, product_id)
    layout = layout or read_layout(store)
    transformer = transformer or Transformer(store, mappings_dir=mappings_dir)
    try:
        res.contiguous = _id_cursor(exchange, mappings_dir)
        try:
            cp = Checkpoints(store).load(exchange, product_id)
        except InvalidCheckpoint as e:  # damaged: the raw chain still says what was landed (below)
            res.damaged.append(str(e))
            cp = None
        window = None
        if res.contiguous and (start or end):
            # The nearest day with table files on each side (not merely the day next to it: a hole may span
            # whole days, and its edges are the trades around it).
            from schemahub.layout import parse_partition

            have = sorted(v[2] for v in map(parse_partition, layout.files) if v and v[:2] == (exchange, product_id))
            before = max((d for d in have if d < start), default=None) if start else None
            after = min((d for d in have if d > end), default=None) if end else None
            around = (before or start, after or end)
            table, day_info = _table(store, exchange, product_id, layout, around)
            if table.num_rows:
                lo_w, hi_w = (v.as_py() for v in pc.min_max(table["id"]).values())
                # No table day before the window (or after it): its edge is the chain's own end, not a trade.
                if not before:
                    lo_w = _NO_LOWER
                if not after:
                    hi_w = _NO_UPPER  # an open end, or nothing after it: everything landed since
                window = (lo_w, hi_w)
            else:
                table, day_info = _table(store, exchange, product_id, layout)  # nothing there: audit it all
        else:
            table, day_info = _table(store, exchange, product_id, layout)
        raw, gaps, chain = _raw(store, exchange, product_id, transformer, res, window)
        _damaged_table_files(layout, exchange, product_id, res)
    except SchemahubError as e:
        res.error = str(e)
        return res

    # Table facts per day (grouped by pyarrow).
    per_day: dict[str, dict] = {}
    if table.num_rows:
        g = table.group_by("date").aggregate([("id", "count"), ("id", "count_distinct"), ("id", "min"), ("id", "max"),
                                               ("time", "min"), ("time", "max")])
        for r in g.to_pylist():
            per_day[r["date"]] = {"rows": r["id_count"], "distinct_ids": r["id_count_distinct"],
                                  "first_id": r["id_min"], "last_id": r["id_max"],
                                  "first_time": _iso(r["time_min"]), "last_time": _iso(r["time_max"])}
        # Duplicates as the readers see them, over the whole table: a row repeats a trade id read before it (in
        # its own day, or in another day's files: a part misfiled under another date), sorted by (id, date).
        from schemahub.transform import group_heads

        st = table.select(["id", "date"]).sort_by([("id", "ascending"), ("date", "ascending")])
        heads = pa.table({"date": st["date"], "head": pc.cast(group_heads(st["id"].combine_chunks()), pa.int64())})
        for r in heads.group_by("date").aggregate([("head", "sum")]).to_pylist():
            per_day[r["date"]]["duplicates"] = per_day[r["date"]]["rows"] - r["head_sum"]
    raw_day: dict[str, dict] = {}
    if raw.num_rows:
        rd = raw.filter(pc.is_valid(raw["time"]))
        rd = rd.append_column("date", pc.strftime(rd["time"], format="%Y-%m-%d"))
        g = rd.group_by("date").aggregate([("id", "count"), ("id", "count_distinct")])
        for r in g.to_pylist():
            raw_day[r["date"]] = {"raw_lines": r["id_count"], "raw_duplicates": r["id_count"] - r["id_count_distinct"]}
        q = rd.filter(rd["quarantined"])
        if q.num_rows:
            for r in q.group_by("date").aggregate([("id", "count")]).to_pylist():
                raw_day[r["date"]]["quarantined"] = r["id_count"]

    present = pc.unique(table["id"].combine_chunks()) if table.num_rows else pa.array([], pa.int64())
    present = present.take(pc.sort_indices(present))

    holes: list[dict] = []
    if res.contiguous and cp is None and chain is not None:
        # No checkpoint (lost, or never written): the raw chain's own cursor range says what was landed.
        from schemahub.landing.checkpoint import Checkpoint

        cp = Checkpoint(exchange, product_id, chain[0], chain[1])
        res.damaged.append(f"{exchange}/{product_id}: no checkpoint; audited over the raw chain's ids "
                           f"({chain[0]}, {chain[1]}]")
    if res.contiguous and cp is not None:
        res.lo, res.hi = cp.lo, cp.hi
        landed = [(cp.lo + 1, cp.hi)]
        if cp.backfill_target is not None:
            landed.append((cp.backfill_target + 1, cp.backfill_cursor))
        landed = sorted((a, b) for a, b in landed if b >= a)
        # Everything from the lowest landed id up to the newest id seen anywhere is expected; outside the landed
        # ranges, it is not landed yet.
        raw_ids = raw["id"].combine_chunks() if raw.num_rows else pa.array([], pa.int64())
        top = max([cp.hi] + ([pc.max(present).as_py()] if len(present) else [])
                  + ([pc.max(raw_ids).as_py()] if len(raw_ids) else []))
        bottom = landed[0][0] if landed else cp.lo + 1
        if window is not None:
            bottom, top = max(bottom, window[0]), min(top, window[1])
        ranges = [(a, b, "landed") for a, b in landed]
        # Ids the raw objects hold that the table lacks, labelled by why (vectorized over the raw ids).
        # A gap is confirmed only if no trade at all was seen inside it (raw or table): a header whose gap holds
        # trades is not believed, for any of its ids.
        cover = []
        if gaps:
            seen = pc.unique(pa.concat_arrays([present, raw_ids])) if len(raw_ids) else present
            seen = seen.take(pc.sort_indices(seen))
            at = _below(seen, pa.array([a for a, _, _ in gaps] + [b + 1 for _, b, _ in gaps], pa.int64())).to_pylist()
            inside = [y - x for x, y in zip(at[:len(gaps)], at[len(gaps):])]  # trades seen inside each gap
        for (a, b, key), k in zip(gaps, inside if gaps else []):
            if k:
                res.damaged.append(f"{key}: its header's gap [{a}, {b}] holds trades that were served: not believed")
            else:
                cover.append((a, b, CONFIRMED))
        if raw.num_rows:
            lacking = raw.filter(pc.invert(pc.is_in(raw["id"], value_set=present)))
            if lacking.num_rows:
                label = pc.if_else(lacking["quarantined"], QUARANTINED,
                                   pc.if_else(lacking["transformed"], LOST, NOT_TRANSFORMED))
                t = pa.table({"id": lacking["id"], "label": label})
                # One label per id: lost wins over quarantined wins over not_transformed (sorted after a rank).
                rank = pc.if_else(pc.equal(t["label"], LOST), 0, pc.if_else(pc.equal(t["label"], QUARANTINED), 1, 2))
                t = t.append_column("rank", rank).sort_by([("id", "ascending"), ("rank", "ascending")])
                from schemahub.transform import group_heads

                t = t.filter(group_heads(t["id"].combine_chunks()))
                cover += _labelled_runs(t["id"].combine_chunks(), t["label"].combine_chunks())
        cover = _disjoint(sorted(cover))
        ends = [y for _, y, _ in cover]
        for a, b in _gaps_of(present, bottom, top):
            for x, y, inside in _cut(a, b, ranges):
                # Outside the landed ranges a missing id is not landed yet, unless raw says otherwise (an object
                # written beyond a checkpoint that was not moved: its ids lacking from the table are lost).
                for u, v, label in _cut(x, y, cover, ends):
                    holes.append({"from": u, "to": v, "ids": v - u + 1,
                                  "class": label or (NOT_LANDED if inside is None else UNEXPLAINED)})
        # Attribute each hole to the day of the trade before it (or after it, at the start).
        _attribute(holes, table, raw)
        for h in holes:  # no trade left anywhere to date it by: reported on the audit's own day
            if "date" not in h and today:
                h["date"] = h["until"] = today
        if start or end:
            inside = []
            for h in holes:
                if (start and h.get("until", h.get("date", "")) < start) or (end and h.get("date", "") > end):
                    continue
                if start and h.get("date") and h["date"] < start:
                    h["date"] = start  # a hole reaching into the window from before it: reported on its first day
                inside.append(h)
            holes = inside
        for h in holes:
            h.pop("until", None)
    res.holes = holes

    dates = sorted(set(per_day) | set(raw_day) | set(day_info) | {h["date"] for h in holes if h.get("date")})
    for d in dates:
        if (start and d < start) or (end and d > end):
            continue
        t = per_day.get(d, {"rows": 0, "distinct_ids": 0, "first_id": None, "last_id": None, "first_time": None,
                            "last_time": None})
        r = raw_day.get(d, {})
        info = day_info.get(d, {"parts": 0, "parts_rows": 0, "compacted_rows": None, "compaction_duplicates": 0,
                                "compacted_agrees": None, "stray_parts": []})
        day_holes = [{k: v for k, v in h.items() if k != "date"} for h in holes if h.get("date") == d]
        missing = {c: sum(h["ids"] for h in day_holes if h["class"] == c) for c in CLASSES}
        expected = t["distinct_ids"] + sum(missing.values()) if res.contiguous else None
        servable = (expected - missing[CONFIRMED] - missing[NOT_LANDED]) if expected is not None else None
        rep = {"exchange": exchange, "product_id": product_id, "date": d, **t,
               "duplicates": t.get("duplicates", t["rows"] - t["distinct_ids"]),
               "raw_lines": r.get("raw_lines", 0), "raw_duplicates": r.get("raw_duplicates", 0),
               "quarantined": r.get("quarantined", 0), **info, "contiguous_ids": res.contiguous,
               "ids_expected": expected, "holes": day_holes, "missing": missing,
               "coverage": (round(t["distinct_ids"] / servable, 6) if servable else None)}
        rep["ok"] = (not missing[LOST] and not missing[UNEXPLAINED] and not rep["duplicates"]
                     and not rep["compaction_duplicates"] and not rep["stray_parts"] and rep["compacted_agrees"] is not False)
        res.days.append(rep)
    return res


def _disjoint(cover: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Sorted labelled intervals made disjoint (an earlier one wins where they overlap)."""
    out: list[tuple[int, int, str]] = []
    for a, b, label in cover:
        if out and a <= out[-1][1]:
            a = out[-1][1] + 1
            if a > b:
                continue
        out.append((a, b, label))
    return out


def _attribute(holes: list[dict], table: pa.Table, raw: pa.Table) -> None:
    """Set each hole's `date`: the UTC day of the nearest trade below it, else above it (table or raw), and its
    `until`: the day of the nearest trade above it, else below it (the days it may span: date..until)."""
    if not holes:
        return
    both = pa.concat_tables([table.select(["id", "time"]), raw.select(["id", "time"])]) if raw.num_rows else table.select(["id", "time"])
    both = both.filter(pc.is_valid(both["time"]))
    if not both.num_rows:
        return
    both = both.sort_by("id")
    ids, times = both["id"].combine_chunks(), both["time"].combine_chunks()
    n, m = len(ids), len(holes)
    # Ids below each hole and ids up to its end, for every hole at once (a merge by one sort, not a search each).
    at = _below(ids, pa.array([h["from"] for h in holes] + [h["to"] + 1 for h in holes], pa.int64()))
    lo, up = at[:m], at[m:]
    before = pc.take(times, pc.max_element_wise(pc.subtract(lo, 1), 0))
    after = pc.take(times, pc.min_element_wise(up, n - 1))
    for h, d, u in zip(holes, pc.strftime(before, format="%Y-%m-%d").to_pylist(),
                       pc.strftime(after, format="%Y-%m-%d").to_pylist()):
        h["date"], h["until"] = d, u


def _below(ids: pa.Array, queries: pa.Array) -> pa.Array:
    """For each query, the count of values below it in the sorted int64 array ids (vectorized: one stable sort
    of ids and queries together, a query placed before the ids equal to it)."""
    n, m = len(ids), len(queries)
    order = pc.sort_indices(pa.table({"v": pa.concat_arrays([ids, queries]),
                                      "q": pa.concat_arrays([pa.repeat(pa.scalar(1, pa.int8()), n),
                                                             pa.repeat(pa.scalar(0, pa.int8()), m)])}),
                            sort_keys=[("v", "ascending"), ("q", "ascending")])
    isq = pc.greater_equal(order, n)
    pos = pc.cast(pc.indices_nonzero(isq), pa.int64())  # where the queries landed, in sorted order
    which = pc.subtract(pc.cast(pc.filter(order, isq), pa.int64()), n)  # which query is at each of them
    below = pc.subtract(pos, pa.array(range(m), pa.int64()))  # k queries sort before the k-th one
    # Back to the queries' own order: the k-th sorted one is query which[k].
    return pc.take(below, pc.sort_indices(which))


def _iso(t) -> str | None:
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------ reports

def report_bytes(day: dict, audited_at: str) -> bytes:
    """A product-day report's deterministic bytes: sorted keys, and no time but `audited_at` (given)."""
    return (json.dumps({**day, "audited_at": audited_at}, sort_keys=True, indent=1) + "\n").encode()


def write_reports(store: ObjectStore, result: AuditResult, start: str | None = None, end: str | None = None
                  ) -> list[str]:
    """Write each audited product-day's report, and rewrite the product's older reports of days inside the
    audited window (start..end, None: open) that this audit no longer reports: their trades are gone (the hole
    is reported on the day it starts), so such a report says `gone` and fails, never what it said before. (A
    rewrite, not a delete: the daily audit Lambda may only put objects under audit/.)"""
    keys = []
    for p in result.products:
        mine = set()
        for d in p.days:
            key = audit_key(p.exchange, p.product_id, d["date"])
            store.put(key, report_bytes(d, result.audited_at))
            keys.append(key)
            mine.add(key)
        if p.error:
            continue
        for info in store.list(audit_prefix(p.exchange, p.product_id)):
            parsed = parse_audit_key(info.key)
            if (parsed is not None and info.key not in mine and (not start or parsed[2] >= start)
                    and (not end or parsed[2] <= end)):
                gone = {"exchange": p.exchange, "product_id": p.product_id, "date": parsed[2], "rows": 0,
                        "distinct_ids": 0, "duplicates": 0, "raw_lines": 0, "contiguous_ids": p.contiguous,
                        "ids_expected": None, "holes": [], "missing": {c: 0 for c in CLASSES}, "coverage": None,
                        "ok": False, "gone": True,
                        "note": "an earlier audit reported trades on this day; none are left in raw or the table "
                                "(a hole over them is reported on the day it starts)"}
                store.put(info.key, report_bytes(gone, result.audited_at))
    return keys


def coverage(store: ObjectStore) -> dict[tuple[str, str], dict]:
    """Per (exchange, product): audited coverage from the latest reports under audit/ (None without reports).

    coverage = distinct ids in the table / ids the exchange served in the audited days; `ok` whether every
    audited day passed; `audited_at` the oldest report's time (a day not audited again keeps its older report)."""
    agg: dict[tuple[str, str], dict] = {}
    for info in store.list(audit_prefix()):
        parsed = parse_audit_key(info.key)
        if parsed is None:
            continue
        try:
            doc = json.loads(store.get(info.key).data)
        except (NotFound, ValueError):
            continue
        a = agg.setdefault(parsed[:2], {"days": 0, "have": 0, "servable": 0, "ok": True, "audited_at": None,
                                        "missing": 0})
        a["days"] += 1
        a["ok"] = a["ok"] and bool(doc.get("ok"))
        miss = doc.get("missing") or {}
        a["missing"] += int(miss.get(LOST, 0)) + int(miss.get(UNEXPLAINED, 0))
        if doc.get("ids_expected") is not None:
            a["have"] += int(doc.get("distinct_ids") or 0)
            a["servable"] += int(doc["ids_expected"]) - int(miss.get(CONFIRMED, 0)) - int(miss.get(NOT_LANDED, 0))
        at = doc.get("audited_at")
        if at and (a["audited_at"] is None or at < a["audited_at"]):
            a["audited_at"] = at
    out = {}
    for k, a in agg.items():
        out[k] = {"coverage": round(a["have"] / a["servable"], 6) if a["servable"] else None, "days": a["days"],
                  "ok": a["ok"], "missing": a["missing"], "audited_at": a["audited_at"]}
    return out


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------ repair

def to_ask(store: ObjectStore, pa_: ProductAudit) -> list[dict]:
    """The holes a repair asks the exchange for: every `unexplained` one, and each `confirmed` one that no
    amendment has asked for yet (the landing's header said the exchange never printed those ids; a header can be
    wrong, so a repair asks once more, and the answer is kept in an amendment: never asked a third time)."""
    from schemahub.layout import parse_amendment_key

    asked = []
    for info in store.list(raw_prefix(pa_.exchange, pa_.product_id)):
        ak = parse_amendment_key(info.key)
        if ak is not None and ak.product_id == pa_.product_id:
            asked.append((ak.start, int(raw_name(info.key).split("-")[1])))
    return [h for h in pa_.holes if h["class"] == UNEXPLAINED
            or (h["class"] == CONFIRMED and not any(s < h["from"] and h["to"] <= e for s, e in asked))]


def repair_product(store: ObjectStore, source, product, pa_: ProductAudit, *, clock=None,
                   deadline: float | None = None) -> list[dict]:
    """Ask the exchange again for every hole of to_ask() and land what it serves once, create-only, as an
    amendment object keyed by the hole's range (layout.amendment_key); what it confirms missing is recorded in
    the amendment's `gaps` (the hole is then `confirmed`). An amendment already there is never fetched again."""
    from schemahub.clock import SYSTEM_CLOCK
    from schemahub.errors import PreconditionFailed
    from schemahub.layout import amendment_key

    clock = clock or SYSTEM_CLOCK
    done = []
    holes = to_ask(store, pa_)
    if not holes:
        return done
    head = source.head(product.symbol, deadline)
    for h in holes:
        a, b = h["from"], h["to"]
        key = amendment_key(pa_.exchange, pa_.product_id, a - 1, b)
        if store.exists(key):
            done.append({"exchange": pa_.exchange, "product_id": pa_.product_id, "from": a, "to": b, "key": key,
                         "status": "already landed"})
            continue
        lines, requests, gaps = [], [], []
        cursor = a - 1
        # Asked up to b + 1, a trade the table holds: a gap is confirmed only with trades on both sides of it.
        try:
            while cursor < b:
                chunk = source.fetch(product.symbol, cursor, head=head, upper=b + 1, deadline=deadline)
                if chunk.end <= cursor:
                    break
                lines += chunk.lines
                requests += [r for r in [chunk.request, *chunk.more_requests] if r]
                gaps += [[x, min(y, b)] for x, y in chunk.gaps if x <= b]
                cursor = chunk.end
        except SchemahubError as e:  # this hole failed (an outage, a deadline): the others are still asked for
            done.append({"exchange": pa_.exchange, "product_id": pa_.product_id, "from": a, "to": b, "key": key,
                         "status": f"failed: {e}"})
            continue
        # Keep the hole's ids alone (a hole's few lines: parsed one by one, never the product's trades).
        id_field = source.t.id_field
        pairs = [(int(json.loads(ln)[id_field]), ln) for ln in lines]
        pairs = [(i, ln) for i, ln in pairs if a <= i <= b]
        lines = [ln for _, ln in pairs]
        ids = [min((i for i, _ in pairs), default=None), max((i for i, _ in pairs), default=None)]
        if cursor < b:
            done.append({"exchange": pa_.exchange, "product_id": pa_.product_id, "from": a, "to": b, "key": key,
                         "status": f"not served: the exchange's trades end at {cursor}; try again later"})
            continue
        header = rawobject.make_header(
            exchange=pa_.exchange, product_id=pa_.product_id, symbol=product.symbol, base=product.base,
            quote=product.quote, start=a - 1, end=b, count=len(lines), min_id=ids[0], max_id=ids[1],
            fetched_at=_iso(clock.now()), requests=requests, amends=[a, b], **({"gaps": sorted(gaps)} if gaps else {}))
        try:
            store.put(key, rawobject.encode(header, lines), if_none_match=True)
            status = "landed"
        except PreconditionFailed:
            status = "already landed"
        done.append({"exchange": pa_.exchange, "product_id": pa_.product_id, "from": a, "to": b, "key": key,
                     "status": status, "trades": len(lines), "confirmed_missing": sum(y - x + 1 for x, y in gaps),
                     "was": h["class"]})
    return done
