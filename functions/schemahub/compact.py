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
- parts are never deleted, so a reader that listed them before the manifest
  appeared still reads a complete day, and Athena (whose table is over
  curated/) is unaffected;
- a part that arrives after compaction (a late or backfilled object) is not
  named in the manifest, so readers still read it.
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
from schemahub.store.base import ObjectStore

log = logging.getLogger("schemahub.compact")

from schemahub.layout import COMPACTED, MANIFEST  # noqa: E402


def partition_of(key: str) -> str:
    """'curated/exchange=a/product_id=b/date=d/x.parquet' -> 'exchange=a/product_id=b/date=d'."""
    parts = key.split("/")
    return "/".join(parts[1:4])


@dataclass
class Layout:
    """What readers read: per partition, the compacted file (if any) and the parts it does not hold."""

    files: dict[str, list[str]] = field(default_factory=dict)  # partition -> keys to read
    compacted: dict[str, str] = field(default_factory=dict)     # partition -> compacted key
    parts: dict[str, list[str]] = field(default_factory=dict)   # partition -> every part key

    def keys(self) -> list[str]:
        return [k for p in sorted(self.files) for k in self.files[p]]


def read_layout(store: ObjectStore) -> Layout:
    """The files a consistent reader takes right now."""
    layout = Layout()
    parts: dict[str, list[str]] = defaultdict(list)
    for info in store.list("curated/"):
        if info.key.endswith(".parquet"):
            parts[partition_of(info.key)].append(info.key)
    def load(key: str):
        try:
            return partition_of(key), json.loads(store.get(key).data)
        except NotFound:
            return partition_of(key), None

    # One small GET per compacted day: in parallel, so a year of days on S3 takes seconds, not minutes.
    keys = [info.key for info in store.list(COMPACTED) if info.key.endswith("/" + MANIFEST)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        manifests = {p: m for p, m in pool.map(load, keys) if m is not None}
    for p in sorted(set(parts) | set(manifests)):
        m = manifests.get(p)
        if m is None:
            layout.files[p] = sorted(parts[p])
            continue
        held = set(m["parts"])
        key = f"{COMPACTED}{p}/{m['file']}"
        layout.compacted[p] = key
        layout.files[p] = [key] + sorted(k for k in parts.get(p, []) if k.rsplit("/", 1)[-1] not in held)
    layout.parts = dict(parts)
    return layout


@dataclass
class CompactResult:
    partitions: int = 0
    parts: int = 0
    rows: int = 0
    skipped_open: int = 0
    planned: list[str] = field(default_factory=list)


def compact(store: ObjectStore, *, before: Date | None = None, dry_run: bool = False, min_parts: int = 2,
            exchange: str | None = None, product_id: str | None = None) -> CompactResult:
    """Compact every product-day before `before` (default: today, UTC) that has no manifest yet."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from schemahub.table import FILE_SCHEMA
    from schemahub.transform import write_parquet

    before = before or datetime.now(timezone.utc).date()
    layout = read_layout(store)
    res = CompactResult()
    for p, keys in sorted(layout.parts.items()):
        ex, pid, day = (kv.split("=", 1)[1] for kv in p.split("/"))
        if (exchange and ex != exchange) or (product_id and pid != product_id) or p in layout.compacted:
            continue
        if Date.fromisoformat(day) >= before:
            res.skipped_open += 1  # the day may still be growing
            continue
        if len(keys) < min_parts:
            continue
        res.planned.append(p)
        if dry_run:
            continue
        names = sorted(k.rsplit("/", 1)[-1] for k in keys)
        digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
        name = f"compact-{digest}.parquet"
        target = f"{COMPACTED}{p}/{name}"
        tables = [pq.read_table(io.BytesIO(store.get(k).data), schema=FILE_SCHEMA) for k in sorted(keys)]
        table = pa.concat_tables(tables)
        # Parts are sorted by time already; a stable sort keeps ties in part-name order: deterministic bytes.
        table = table.take(pc.sort_indices(table, sort_keys=[("trade_time", "ascending")]))
        try:
            store.put(target, write_parquet(table), if_none_match=True)
        except PreconditionFailed:
            pass  # an earlier run wrote the same file (same parts, same name) and died before its manifest
        manifest = {"file": name, "parts": names, "rows": table.num_rows,
                    "compacted_at": datetime.now(timezone.utc).isoformat()}
        try:
            store.put(f"{COMPACTED}{p}/{MANIFEST}", json.dumps(manifest, indent=1).encode(), if_none_match=True)
        except PreconditionFailed:
            log.info("%s was compacted by another run meanwhile", p)
            continue
        res.partitions += 1
        res.parts += len(keys)
        res.rows += table.num_rows
    return res
