"""Damaged table files: a curated part or compacted copy whose Parquet footer does not hold is set aside.

A disk that filled, a partial upload or a hand edit can leave a table file
truncated or full of garbage. DuckDB and pyarrow then fail the whole `trades`
view, so one file would stop every query, `stats` and `compact`. Readers
instead check each file they are about to read, cheaply: one ranged read of
its tail, then the Parquet footer (magic, length, metadata, every column chunk
inside the file, the table's columns). A damaged file is:

- a **part**: set aside from the view, with one warning naming its key, the
  reason and the command that rebuilds it from raw (its rows are missing
  from queries until then, and `stats` counts it in `damaged_files`);
  `compact` skips its day, naming it;
- a **compacted copy**: the day is read from its parts (which hold the same
  rows), and the next `compact` writes the copy again.

The check reads the footer only: a file whose footer is whole but whose pages
are damaged inside still fails the query that reads it.

This module only decides; `schemahub.compact.read_layout` calls
`set_aside_damaged` once on the layout it computed.
"""

from __future__ import annotations

import io
import logging
from concurrent.futures import ThreadPoolExecutor

from schemahub.errors import NotFound
from schemahub.store.base import ObjectStore

log = logging.getLogger("schemahub.tablefiles")

TAIL_READ = 16 * 1024  # one ranged read holds the footer of a table file schemahub writes (a longer one: two)


def footer_problem(store: ObjectStore, key: str) -> str | None:
    """Why the file at key is not a readable table file (None if its footer holds)."""
    import pyarrow.parquet as pq

    from schemahub.table import FILE_SCHEMA

    try:
        tail, size = store.get_tail(key, TAIL_READ)
    except NotFound:
        return None  # gone since it was listed (a rebuild): nothing to read, nothing to set aside
    # Never cached: a rebuild may write a sound file of the very size the damaged one had.
    if size < 12:
        why = f"{size} bytes, too short for a Parquet file (truncated or empty)"
    elif tail[-4:] != b"PAR1":
        why = "no Parquet footer at its end (truncated, or not a Parquet file)"
    else:
        length = int.from_bytes(tail[-8:-4], "little")
        why = None
        if length <= 0 or length + 12 > size:
            why = f"its footer claims {length} bytes, which do not fit its {size} bytes (truncated)"
        else:
            if length + 8 > len(tail):
                tail, size = store.get_tail(key, length + 8)
            try:
                meta = pq.read_metadata(io.BytesIO(b"PAR1" + tail[-(length + 8):]))
                names = set(meta.schema.to_arrow_schema().names)
            except Exception as e:  # pyarrow's own error for a footer that does not parse
                why = f"unreadable Parquet footer ({type(e).__name__}: {' '.join(str(e).split())})"
            else:
                missing = [f.name for f in FILE_SCHEMA if f.name not in names]
                if missing:
                    why = f"not a table file: no column {', '.join(missing)}"
                data_end = size - length - 8
                for g in range(meta.num_row_groups if why is None else 0):
                    rg = meta.row_group(g)
                    for c in range(rg.num_columns):
                        col = rg.column(c)
                        start = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
                        if start is None or start < 4 or start + col.total_compressed_size > data_end:
                            why = (f"column {col.path_in_schema} of row group {g} lies outside the file's {size} "
                                   "bytes (truncated or overwritten)")
                            break
                    if why:
                        break
    return why


def check(store: ObjectStore, keys: list[str]) -> dict[str, str]:
    """key -> reason for each damaged file among keys (footers read in parallel)."""
    if not keys:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(keys))) as pool:
        return {k: why for k, why in zip(keys, pool.map(lambda k: footer_problem(store, k), keys)) if why}


def rebuild_hint(partition: str) -> str:
    fields = dict(part.split("=", 1) for part in partition.split("/") if "=" in part)
    return (f"schemahub transform --all --exchange {fields.get('exchange', 'E')} "
            f"--product {fields.get('product_id', 'P')}")


_reported: set[tuple[str, str, str]] = set()


def _warn_once(store: ObjectStore, key: str, why: str, text: str) -> None:
    if (store.uri, key, why) not in _reported:
        _reported.add((store.uri, key, why))
        log.warning(text)


def set_aside_damaged(store: ObjectStore, layout, *, parts: bool = True) -> None:
    """Take damaged files out of `layout` (a schemahub.compact.Layout), recording them in layout.damaged.
    parts=False: check the compacted copies only (and the parts of a day whose copy is damaged)."""
    damaged = check(store, layout.keys() if parts else sorted(layout.compacted.values()))
    fallback = {p: k for p, k in layout.compacted.items() if k in damaged}
    if fallback:  # a damaged compacted copy: its day is read from its parts, so those must be checked too
        held = sorted({k for p in fallback for k in layout.parts.get(p, [])} - set(damaged))
        damaged.update(check(store, held))
    for p, key in sorted(fallback.items()):
        del layout.compacted[p]
        layout.files[p] = sorted(layout.parts.get(p, []))
        if p not in layout.stale:
            layout.stale.append(p)  # so the next compact writes the copy again
        _warn_once(store, key, damaged[key],
                   f"{key}: damaged compacted copy ({damaged[key]}); {p} is read from its parts instead, and the "
                   "next `schemahub compact` writes the copy again")
    for p, files in layout.files.items():
        bad = [k for k in files if k in damaged]
        if bad:
            layout.files[p] = [k for k in files if k not in damaged]
            for key in bad:
                _warn_once(store, key, damaged[key],
                           f"{key}: damaged table file ({damaged[key]}); set aside, so its rows are missing from "
                           f"queries and stats until it is rebuilt from raw: run `{rebuild_hint(p)}`")
    layout.files = {p: f for p, f in layout.files.items() if f}
    layout.damaged.update(damaged)
