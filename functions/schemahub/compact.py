"""Compaction: one read-optimized file per closed product-day, swapped in atomically for readers.

The transform writes one file per raw object per day ("parts"): about 1,000
files for a busy product-day, and DuckDB pays per file. `compact` merges a
day's parts into one file under compacted/ and then writes a manifest that
names the parts it holds. Readers (the `trades` view) take, per partition,
the compacted file plus any part the manifest does not name, or the parts
alone when there is no manifest. So a reader sees a day either as parts or
as its compacted copy, never both:

- the compacted file is written create-only *before* its manifest, and a
  compacted file without a manifest is never read (a crash in between
  leaves an orphan that the next run adopts: same parts, same name);
- the manifest is written create-only, so it appears whole or not at all;
- compaction never deletes parts, so a reader that listed them before the manifest
  appeared still reads a complete day, and Athena (whose table is over
  curated/) is unaffected;
- a part that arrives after compaction (a late or backfilled object) is not
  named in the manifest, so readers still read it;
- parts are deleted only by a rebuild, and only those the new mapping no
  longer writes;
- the manifest names each part with its size and the digest of its bytes;
  a day whose parts no longer match its manifest (a part changed size or
  went) is read as parts until compaction writes a new copy;
- a rebuild that changes a part deletes the day's manifest (the switch back
  to parts is one delete), and the next `compact` makes a new copy;
- a trade id held by two parts (two raw objects that overlap, which an
  older landing could write) is kept once in the compacted copy, from the
  lowest raw key, and counted in the manifest. Days read as parts show
  such a trade twice until they are compacted (a dedupe in the view cost
  10-20x on those days).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date as Date
from datetime import datetime, timezone

from schemahub.errors import NotFound, PreconditionFailed
from schemahub.layout import COMPACTED, CURATED, EXCHANGE, MANIFEST, PRODUCT_ID, compacted_key, manifest_key, parse_table_file
from schemahub.store.base import ObjectStore

log = logging.getLogger("schemahub.compact")


def partition_of(key: str) -> str | None:
    """'curated/exchange=a/product_id=b/date=d/x.parquet' -> 'exchange=a/product_id=b/date=d' (None if not one)."""
    parsed = parse_table_file(key)
    return None if parsed is None else parsed[1]


def table_partition(key: str, *, warn: bool = True) -> tuple[str, tuple[str, str, str]] | None:
    """(partition path, (exchange, product_id, date)) of a table file, or None with a warning for a key whose
    path is not a valid partition (a product id with '=' or '/', a bad date): skipped, never fatal."""
    parsed = parse_table_file(key)
    if parsed is not None:
        _, path, (ex, pid, day) = parsed
        try:
            Date.fromisoformat(day)
        except ValueError:
            parsed = None
        else:
            if PRODUCT_ID.match(pid) and EXCHANGE.match(ex):
                return path, (ex, pid, day)
    if warn:
        log.warning("%s: not a table file at exchange=<e>/product_id=<BASE-QUOTE>/date=<YYYY-MM-DD>/; skipped "
                    "(move it out of curated/ or compacted/)", key)
    return None


@dataclass
class Layout:
    """What readers read: per partition, the compacted file (if any) and the parts it does not hold."""

    files: dict[str, list[str]] = field(default_factory=dict)  # partition -> keys to read
    compacted: dict[str, str] = field(default_factory=dict)     # partition -> compacted key
    parts: dict[str, list[str]] = field(default_factory=dict)   # partition -> every part key
    stale: list[str] = field(default_factory=list)              # partitions whose manifest no longer matches
    damaged: dict[str, str] = field(default_factory=dict)       # table file -> why it is set aside (tablefiles)

    def keys(self) -> list[str]:
        return [k for p in sorted(self.files) for k in self.files[p]]


def _held(manifest: dict) -> dict[str, int | None]:
    """Part name -> size the manifest holds (size None in manifests written before sizes were recorded)."""
    parts = manifest.get("parts")
    if isinstance(parts, dict):
        return {str(k): (v.get("size") if isinstance(v, dict) else None) for k, v in parts.items()}
    return {str(k): None for k in parts or []}


def read_layout(store: ObjectStore) -> Layout:
    """The files a consistent reader takes right now."""
    layout = Layout()
    parts: dict[str, list[str]] = defaultdict(list)
    sizes: dict[str, int] = {}
    for info in store.list(CURATED):
        if info.key.endswith(".parquet"):
            v = table_partition(info.key)
            if v is not None:
                parts[v[0]].append(info.key)
                sizes[info.key] = info.size

    def load(key: str):
        try:
            doc = json.loads(store.get(key).data)
        except NotFound:
            return partition_of(key), None
        except ValueError:
            log.warning("%s: unreadable manifest; the day is read from its parts", key)
            return partition_of(key), None
        return partition_of(key), doc if isinstance(doc, dict) and "file" in doc else None

    # One small GET per compacted day: in parallel, so a year of days on S3 takes seconds, not minutes.
    keys, copies = [], set()
    for info in store.list(COMPACTED):
        if info.key.endswith("/" + MANIFEST) and table_partition(info.key) is not None:
            keys.append(info.key)
        elif info.key.endswith(".parquet"):
            copies.add(info.key)
    with ThreadPoolExecutor(max_workers=16) as pool:
        manifests = {p: m for p, m in pool.map(load, keys) if m is not None}
    for p in sorted(set(parts) | set(manifests)):
        m = manifests.get(p)
        current = {k.rsplit("/", 1)[-1]: sizes[k] for k in parts.get(p, [])}
        if m is not None:
            held = _held(m)
            # Valid only while every part it holds is still there, unchanged in size; a rebuild that changed a
            # part also deletes the manifest (Transformer), so a same-size change is caught there.
            if any(name not in current or (size is not None and current[name] != size) for name, size in held.items()):
                layout.stale.append(p)
                log.warning("%s: its compacted copy no longer matches its parts (rebuilt?); reading the parts "
                            "until the next compact", p)
                m = None
        if m is not None and compacted_key(p, m["file"]) not in copies:
            # A manifest whose file is gone (deleted by hand or a lifecycle rule, or a lost write): the parts
            # still hold the day, so read them, and let the next compact write the copy again.
            layout.stale.append(p)
            log.warning("%s: its manifest names %s, which does not exist; reading the parts until the next compact",
                        p, m["file"])
            m = None
        if m is None:
            layout.files[p] = sorted(parts[p])
            continue
        key = compacted_key(p, m["file"])
        layout.compacted[p] = key
        layout.files[p] = [key] + sorted(k for k in parts.get(p, []) if k.rsplit("/", 1)[-1] not in held)
    layout.parts = dict(parts)
    from schemahub.tablefiles import set_aside_damaged

    set_aside_damaged(store, layout)  # damaged Parquet files are set aside, never read
    return layout


def invalidate_compaction(store: ObjectStore, partition_path: str) -> None:
    """Make readers read a day from its parts again (its compacted copy holds rows a rebuild changed)."""
    store.delete(manifest_key(partition_path))


@dataclass
class CompactResult:
    partitions: int = 0
    parts: int = 0
    rows: int = 0
    duplicates: int = 0  # rows of a trade id already held by a part from a lower raw key
    skipped_open: int = 0
    skipped_damaged: list[str] = field(default_factory=list)  # days holding a damaged part (tablefiles)
    planned: list[str] = field(default_factory=list)


def dedupe_lowest_raw_key(table):
    """(table with each trade_id once, the row from the lowest raw_key; rows dropped). Order is kept."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from schemahub.transform import group_heads, positions

    n = table.num_rows
    if n < 2 or pc.count_distinct(table["trade_id"]).as_py() == n:
        return table, 0
    order = pc.sort_indices(pa.table({"id": table["trade_id"], "raw": table["raw_key"], "pos": positions(n)}),
                            sort_keys=[("id", "ascending"), ("raw", "ascending"), ("pos", "ascending")])
    keep = order.filter(group_heads(table["trade_id"].combine_chunks().take(order)))
    keep = keep.take(pc.sort_indices(keep))
    return table.take(keep), n - len(keep)


def compact(store: ObjectStore, *, before: Date | None = None, dry_run: bool = False, min_parts: int = 2,
            exchange: str | None = None, product_id: str | None = None) -> CompactResult:
    """Compact every product-day before `before` (default: today, UTC) that has no valid manifest yet."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from schemahub.table import FILE_SCHEMA
    from schemahub.transform import write_parquet

    before = before or datetime.now(timezone.utc).date()
    layout = read_layout(store)
    res = CompactResult()
    stale = set(layout.stale)
    for p, keys in sorted(layout.parts.items()):
        _, (ex, pid, day) = table_partition(keys[0])
        if (exchange and ex != exchange) or (product_id and pid != product_id) or p in layout.compacted:
            continue
        if Date.fromisoformat(day) >= before:
            res.skipped_open += 1  # the day may still be growing
            continue
        if len(keys) < min_parts and p not in stale:
            continue
        bad = [k for k in keys if k in layout.damaged]
        if bad:  # a copy without the damaged part's rows would hide them for good
            res.skipped_damaged.append(p)
            log.warning("%s: not compacted: it holds %d damaged file(s) (%s); rebuild them from raw first", p,
                        len(bad), ", ".join(bad))
            continue
        res.planned.append(p)
        if dry_run:
            continue
        objs = [store.get(k) for k in sorted(keys)]
        names = [k.rsplit("/", 1)[-1] for k in sorted(keys)]
        held = {n: {"size": len(o.data), "sha256": hashlib.sha256(o.data).hexdigest()[:32]} for n, o in zip(names, objs)}
        digest = hashlib.sha256(json.dumps(held, sort_keys=True).encode()).hexdigest()[:16]
        name = f"compact-{digest}.parquet"
        target = compacted_key(p, name)
        tables = [pq.read_table(io.BytesIO(o.data), schema=FILE_SCHEMA) for o in objs]
        table = pa.concat_tables(tables)
        table, dropped = dedupe_lowest_raw_key(table)
        # Parts are sorted by time already; a stable sort keeps ties in part-name order: deterministic bytes.
        table = table.take(pc.sort_indices(table, sort_keys=[("trade_time", "ascending")]))
        if target in layout.damaged:
            store.delete(target)  # a damaged copy of these same parts: written again below
        try:
            store.put(target, write_parquet(table), if_none_match=True)
        except PreconditionFailed:
            pass  # an earlier run wrote the same file (same parts, same name) and died before its manifest
        if p in stale:
            invalidate_compaction(store, p)  # a manifest that names changed parts: replaced by this one
        manifest = {"file": name, "parts": held, "rows": table.num_rows, "duplicates": dropped,
                    "compacted_at": datetime.now(timezone.utc).isoformat()}
        try:
            store.put(manifest_key(p), json.dumps(manifest, indent=1, sort_keys=True).encode(), if_none_match=True)
        except PreconditionFailed:
            log.info("%s was compacted by another run meanwhile", p)
            continue
        res.partitions += 1
        res.parts += len(keys)
        res.rows += table.num_rows
        res.duplicates += dropped
    return res
