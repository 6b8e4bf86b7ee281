"""Compaction: one read-optimized file per closed product-day, swapped in atomically for readers.

The transform writes one file per raw object per day ("parts"): about 1,000
files for a busy product-day, and every reader pays per file. `compact`
merges a day's parts into one copy and then writes a manifest that names the
parts it holds.

One rule decides which files make up a day, for every reader (`day_files`):
the DuckDB `trades` view takes it from the store (read_layout), and Athena
from the catalog partition that `sync_catalog` points at the same files:

    a day is read as its compacted copy only if its manifest names exactly
    the day's current parts (same names, same sizes) and the copy exists;
    otherwise as all its parts.

So a reader sees a day either as parts or as its copy, never both and never
partly:

- each copy sits alone in its own version folder
  (compacted/<partition>/v-<digest>/), so a catalog partition whose location
  is that folder holds exactly that one file, and the switch for Athena is
  one UpdatePartition (Athena plans a query with one location per partition);
- the copy is written create-only *before* its manifest, and a copy without
  a manifest is never read (a crash in between leaves an orphan that the
  next run adopts: same parts, same name);
- the manifest is written create-only, so it appears whole or not at all;
- the catalog moves to a copy only after its manifest is written, and then
  the day's manifest and parts are read again: if they changed meanwhile (a
  late part, a rebuild) the partition goes back to the parts at once;
- compaction never deletes parts, so a reader that planned on them before the
  switch still reads a complete day;
- a part that arrives after compaction (a backfill, a repair, a rebuild)
  makes the manifest no longer exact: readers read all the day's parts again
  (the transform points the catalog back at them), and the next compaction
  writes a new copy in a new version folder;
- parts are deleted only by a rebuild, and only those the new mapping no
  longer writes; a rebuild that changes a part also deletes the day's
  manifest (a same-size change is caught that way);
- the manifest names each part with its size and the digest of its bytes;
- a trade id held by two parts (two raw objects that overlap, which an
  older landing could write) is kept once in the compacted copy, from the
  lowest raw key, and counted in the manifest. Days read as parts show
  such a trade twice until they are compacted (a dedupe in the view cost
  10-20x on those days).

Manifests written before version folders existed (a copy next to the
manifest) are not exact by this rule: those days are read as parts until
the next compact writes a copy in a version folder.
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
from schemahub.layout import (
    COMPACTED,
    CURATED,
    EXCHANGE,
    MANIFEST,
    PRODUCT_ID,
    VERSION,
    compacted_file,
    compacted_key,
    location_of,
    manifest_key,
    parse_table_file,
    parts_prefix,
)
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
    """What readers read: per partition, its compacted copy or its parts (never both)."""

    files: dict[str, list[str]] = field(default_factory=dict)  # partition -> keys to read
    compacted: dict[str, str] = field(default_factory=dict)     # partition -> compacted key (days read as their copy)
    parts: dict[str, list[str]] = field(default_factory=dict)   # partition -> every part key
    stale: list[str] = field(default_factory=list)              # partitions whose manifest no longer matches
    sizes: dict[str, int] = field(default_factory=dict)         # part key -> size
    manifests: dict[str, dict] = field(default_factory=dict)    # partition -> its manifest, exact or not
    manifest_sizes: dict[str, int] = field(default_factory=dict)  # partition -> its manifest's size, as listed
    damaged: dict[str, str] = field(default_factory=dict)       # table file -> why it is set aside (tablefiles)

    def keys(self) -> list[str]:
        return [k for p in sorted(self.files) for k in self.files[p]]

    def location(self, partition: str) -> str:
        """The one folder a catalog partition points at: the copy's version folder, or the parts folder."""
        key = self.compacted.get(partition)
        return location_of(key) if key else parts_prefix(partition)


def _held(manifest: dict) -> dict[str, int | None]:
    """Part name -> size the manifest holds (size None in manifests written before sizes were recorded)."""
    parts = manifest.get("parts")
    if isinstance(parts, dict):
        return {str(k): (v.get("size") if isinstance(v, dict) else None) for k, v in parts.items()}
    return {str(k): None for k in parts or []}


def day_files(partition: str, parts: dict[str, int], manifest: dict | None, copies: set[str]) -> tuple[list[str], str | None, str | None]:
    """THE rule: (keys that make up the day, its compacted key or None, why the manifest is not used or None).

    parts: the day's current part keys -> size; manifest: the day's manifest (None if there is none);
    copies: the compacted keys that exist. The day is its copy only if the manifest names exactly the
    current parts (same names, same sizes) and the copy exists in its own version folder; else all its parts.
    """
    all_parts = sorted(parts)
    if manifest is None:
        return all_parts, None, None
    file = str(manifest.get("file", ""))
    current = {k.rsplit("/", 1)[-1]: size for k, size in parts.items()}
    held = _held(manifest)
    if "/" not in file or not VERSION.match(file.split("/", 1)[0]):
        return all_parts, None, "its manifest predates version folders"
    if held.keys() != current.keys() or any(size is None or current[n] != size for n, size in held.items()):
        late = sorted(set(current) - set(held))
        why = (f"{len(late)} part(s) arrived after it was compacted" if late and set(held) <= set(current)
               and all(held[n] == current[n] for n in held) else "its parts changed (rebuilt?)")
        return all_parts, None, why
    key = compacted_key(partition, file)
    if key not in copies:
        # A manifest whose file is gone (deleted by hand or a lifecycle rule, or a lost write): the parts
        # still hold the day, so read them, and let the next compact write the copy again.
        return all_parts, None, f"its manifest names {file}, which does not exist"
    return [key], key, None


def _load_manifest(store: ObjectStore, key: str) -> dict | None:
    try:
        doc = json.loads(store.get(key).data)
    except NotFound:
        return None
    except ValueError:
        log.warning("%s: unreadable manifest; the day is read from its parts", key)
        return None
    return doc if isinstance(doc, dict) and "file" in doc else None


def read_layout(store: ObjectStore, *, check_parts: bool = True) -> Layout:
    """The files a consistent reader takes right now (day_files for every partition).

    check_parts=False (compact): only compacted copies are checked for damage here; compact checks each day's
    parts when it starts that day (a year of parts is 900,000 footer reads: longer than a Lambda lives)."""
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
        return partition_of(key), _load_manifest(store, key)

    # One small GET per compacted day: in parallel, so a year of days on S3 takes seconds, not minutes.
    keys, copies = [], set()
    for info in store.list(COMPACTED):
        if info.key.endswith("/" + MANIFEST) and table_partition(info.key) is not None:
            keys.append(info.key)
            layout.manifest_sizes[partition_of(info.key)] = info.size
        elif info.key.endswith(".parquet"):
            copies.add(info.key)
    with ThreadPoolExecutor(max_workers=16) as pool:
        manifests = {p: m for p, m in pool.map(load, keys) if m is not None}
    for p in sorted(set(parts) | set(manifests)):
        m = manifests.get(p)
        files, copy, why = day_files(p, {k: sizes[k] for k in parts.get(p, [])}, m, copies)
        if why is not None:
            layout.stale.append(p)
            log.info("%s: read as its parts until the next compact: %s", p, why)
        if copy is not None:
            layout.compacted[p] = copy
        if files:
            layout.files[p] = files
    for p in sorted(set(layout.manifest_sizes) - set(manifests)):
        if p in parts and p not in layout.stale:
            layout.stale.append(p)  # an unreadable manifest (damaged by hand): replaced by the next compact
    layout.parts = dict(parts)
    layout.sizes = sizes
    layout.manifests = manifests

    from schemahub.tablefiles import set_aside_damaged

    set_aside_damaged(store, layout, parts=check_parts)  # damaged Parquet files are set aside, never read
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
    pending: int = 0  # closed days left for the next run (the deadline came first)
    catalog: dict[str, int] = field(default_factory=dict)  # what sync_catalog changed (registered, to_parts, ...)


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
            exchange: str | None = None, product_id: str | None = None, catalog=None,
            deadline: float | None = None, progress=None) -> CompactResult:
    """Compact every product-day before `before` (default: today, UTC) that is not read as an exact copy yet,
    then point the catalog's partitions at what day_files says (sync_catalog).

    deadline (time.monotonic()): no new day is started after it; the rest is left for the next run (.pending).
    catalog: default open_catalog(store) (the no-op catalog unless SCHEMAHUB_GLUE_TABLE is set).
    """
    import time
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from schemahub.table import FILE_SCHEMA
    from schemahub.transform import write_parquet

    before = before or datetime.now(timezone.utc).date()
    from schemahub.tablefiles import check

    layout = read_layout(store, check_parts=False)  # each day's parts are checked when the day starts
    res = CompactResult()
    stale = set(layout.stale)
    for done, (p, keys) in enumerate(sorted(layout.parts.items())):
        if progress is not None:  # progress(product-days checked, product-days), for a person at a terminal
            progress(done, len(layout.parts))
        _, (ex, pid, day) = table_partition(keys[0])
        if (exchange and ex != exchange) or (product_id and pid != product_id) or p in layout.compacted:
            continue
        if Date.fromisoformat(day) >= before:
            res.skipped_open += 1  # the day may still be growing
            continue
        if len(keys) < min_parts and p not in stale:
            continue
        if deadline is not None and time.monotonic() > deadline:
            res.pending += 1
            continue
        layout.damaged.update(check(store, [k for k in keys if k not in layout.damaged]))
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
        name = compacted_file(digest)  # its own version folder: a catalog location holding this file alone
        target = compacted_key(p, name)
        tables, unreadable = [], {}
        for k, o in zip(sorted(keys), objs):
            try:
                tables.append(pq.read_table(io.BytesIO(o.data), schema=FILE_SCHEMA))
            except Exception as e:  # pyarrow's error for pages damaged behind a whole footer (tablefiles)
                unreadable[k] = f"unreadable pages ({type(e).__name__}: {' '.join(str(e).split())})"
        if unreadable:  # as for a damaged footer: the day keeps its parts, the other days go on
            from schemahub.tablefiles import rebuild_hint

            layout.damaged.update(unreadable)
            res.planned.remove(p)
            res.skipped_damaged.append(p)
            log.warning("%s: not compacted: %s; rebuild it from raw: run `%s`", p,
                        "; ".join(f"{k}: {why}" for k, why in sorted(unreadable.items())), rebuild_hint(p))
            continue
        table = pa.concat_tables(tables)
        table, dropped = dedupe_lowest_raw_key(table)
        # Parts are sorted by time already; a stable sort keeps ties in part-name order: deterministic bytes.
        table = table.take(pc.sort_indices(table, sort_keys=[("trade_time", "ascending")]))
        try:
            # A damaged copy of these same parts is overwritten in place (no reader reads it: the day is on its
            # parts), never deleted: the scheduled role may not delete copies.
            store.put(target, write_parquet(table), if_none_match=target not in layout.damaged)
        except PreconditionFailed:
            pass  # an earlier run wrote the same file (same parts, same name) and died before its manifest
        if p in stale and p in layout.manifest_sizes:  # listed: readable or not
            invalidate_compaction(store, p)  # a manifest that no longer names the parts: replaced by this one
        manifest = {"file": name, "parts": held, "rows": table.num_rows, "duplicates": dropped,
                    "compacted_at": datetime.now(timezone.utc).isoformat()}
        body = json.dumps(manifest, indent=1, sort_keys=True).encode()
        try:
            store.put(manifest_key(p), body, if_none_match=True)
        except PreconditionFailed:
            log.info("%s was compacted by another run meanwhile", p)
            continue
        layout.compacted[p], layout.files[p], layout.manifests[p] = target, [target], manifest
        layout.manifest_sizes[p] = len(body)
        res.partitions += 1
        res.parts += len(keys)
        res.rows += table.num_rows
        res.duplicates += dropped
    if not dry_run:
        res.catalog = sync_catalog(store, catalog, layout)
    return res


# ------------------------------------------------------------------ the catalog (Athena's view of the same rule)

def _current(store: ObjectStore, partitions: list[str]) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """Listed now: (partition -> {part key: size}, partition -> its manifest's size). One LIST per folder for
    a few days, else one listing of curated/ and one of compacted/ (a year of days: tens of LISTs, not 36,000)."""
    parts: dict[str, dict[str, int]] = {p: {} for p in partitions}
    manifests: dict[str, int] = {}
    few = len(partitions) <= 20
    for base, prefixes in ((CURATED, [parts_prefix(p) for p in partitions]),
                           (COMPACTED, [manifest_key(p) for p in partitions])):
        for prefix in (prefixes if few else [base]):
            for info in store.list(prefix):
                p = partition_of(info.key)
                if p not in parts:
                    continue
                if base == CURATED and info.key.endswith(".parquet"):
                    parts[p][info.key] = info.size
                elif base == COMPACTED and info.key == manifest_key(p):
                    manifests[p] = info.size
    return parts, manifests


def switch_to_copies(store: ObjectStore, catalog, targets: dict[str, str], layout: Layout) -> list[str]:
    """Point partitions at their compacted copies (partition -> copy key), then check each day again.

    The catalog moves first, then the day's manifest and parts are read back: a day whose parts changed
    or whose manifest went meanwhile (a late part, a rebuild: their transform points the partition at the
    parts) goes back to its parts at once. With S3's strong consistency either this check sees the change,
    or the change's own catalog update comes after ours; either way the partition ends on the parts.
    Returns the partitions left on (or sent back to) their parts.
    """
    if not targets:
        return []
    # Checked before the move too: a day that changed since our own listing (a late part landed while this
    # run compacted) never moves at all. The check after the move catches what lands during the move.
    exact = set(_still_exact(store, targets, layout, trust_sizes=True))
    stayed = sorted(set(targets) - exact)
    targets = {p: k for p, k in targets.items() if p in exact}
    try:
        catalog.update({p: location_of(k) for p, k in targets.items()})
    except Exception:
        # Part of the move may be applied (Glue applies the batches before a failing one): the check after the
        # move still runs for every target, so no day is left on a copy that lacks a part; then the error.
        keep = set(_still_exact(store, targets, layout, trust_sizes=False))
        catalog.update({p: parts_prefix(p) for p in sorted(targets) if p not in keep})
        raise
    keep = set(_still_exact(store, targets, layout, trust_sizes=False))
    back = [p for p in sorted(targets) if p not in keep]
    if back:
        log.info("%d day(s) changed while their partition moved to the copy; read as parts again", len(back))
        catalog.update({p: parts_prefix(p) for p in back})
    return sorted(stayed + back)


def _still_exact(store: ObjectStore, targets: dict[str, str], layout: Layout, *, trust_sizes: bool) -> list[str]:
    """The partitions whose day, listed now, is still exactly the given compacted copy (day_files).

    trust_sizes (the check before the move, an optimization): a manifest listed at the size we know is taken
    to be the one we know. The check after the move, which decides, reads every manifest again (a rebuild
    that deletes one and another run that writes a new one of the same size would fool a size)."""
    if not targets:
        return []
    parts, sizes = _current(store, sorted(targets))
    copies = set(targets.values())
    out = []
    for p in sorted(targets):
        if p not in sizes:
            continue  # the manifest went (a rebuild): parts
        manifest = layout.manifests.get(p) if trust_sizes and sizes[p] == layout.manifest_sizes.get(p) else None
        if manifest is None:
            manifest = _load_manifest(store, manifest_key(p))
        if day_files(p, parts[p], manifest, copies)[1] == targets[p]:
            out.append(p)
    return out


def sync_catalog(store: ObjectStore, catalog=None, layout: Layout | None = None) -> dict[str, int]:
    """Make every catalog partition point where day_files says, for Athena: register missing days (at their
    parts), move days back to their parts where the copy no longer holds them, and move exactly-compacted
    days to their copy (switch_to_copies, which checks again after the move). Idempotent."""
    if catalog is None:
        from schemahub.catalog import open_catalog

        catalog = open_catalog(store)
    have = catalog.locations()
    if have is None:  # a catalog without partitions (the local folder): nothing to point
        return {}
    layout = layout or read_layout(store)
    days = set(layout.files) | set(layout.parts)
    missing = {p: parts_prefix(p) for p in sorted(days) if p not in have}
    catalog.create(missing)
    to_parts = {p: parts_prefix(p) for p in sorted(days) if p in have and p not in layout.compacted
                and have[p] != parts_prefix(p)}
    catalog.update(to_parts)
    targets = {p: k for p, k in layout.compacted.items() if have.get(p) != location_of(k)}
    moved = switch_to_copies(store, catalog, targets, layout)
    return {"registered": len(missing), "to_parts": len(to_parts), "to_copy": len(targets) - len(moved),
            "not_moved": len(moved)}
