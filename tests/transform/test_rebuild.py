"""Rebuilds are rebuilds: after fixing a mapping, `transform --all` leaves no row of the old mapping on any
day, compacted days included."""

from __future__ import annotations

import json
import shutil
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from schemahub.compact import compact, read_layout
from schemahub.query import connect
from schemahub.transform import Transformer
from tests.transform.helpers import put_raw

ROOT = Path(__file__).resolve().parents[2]
IDS = 3_000
PER_OBJECT = 500


def _mappings(tmp_path: Path, name: str, replace: tuple[str, str] | None) -> Path:
    d = tmp_path / name
    shutil.copytree(ROOT / "mappings", d)
    if replace:
        f = d / "exchanges" / "coinbase.yaml"
        text = f.read_text()
        assert replace[0] in text
        f.write_text(text.replace(*replace))
    return d


def _land(store) -> None:
    # Each line carries the right time and a wrong one ("created", two days earlier), and the right price
    # and a wrong one ("px"), so a mapping can be "fixed" between two transforms.
    for start in range(0, IDS, PER_OBJECT):
        lines = []
        for i in range(start + 1, start + PER_OBJECT + 1):
            day = 28 if start < IDS // 2 else 29
            t = f"2026-11-{day}T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d}000Z"
            lines.append(json.dumps({"time": t, "created": t.replace("2026-11-2", "2026-11-1"), "trade_id": i,
                                     "price": "100.5", "px": f"{i}.25", "size": "0.01", "side": "buy"},
                                    separators=(",", ":")).encode())
        put_raw(store, lines, start=start)


def _counts(store):
    return connect(store).execute("SELECT count(*), count(DISTINCT trade_id), min(date), max(date), "
                                  "count(*) FILTER (WHERE price <> 100.5) FROM trades").fetchone()


def test_a_rebuild_after_fixing_a_mapping_leaves_no_row_of_the_old_mapping_on_any_day(store, tmp_path):
    _land(store)
    wrong = _mappings(tmp_path, "wrong", ("trade_time: {path: time,", "trade_time: {path: created,"))
    first = Transformer(store, mappings_dir=wrong).run()
    assert first.rows == IDS and _counts(store)[2:4] == (date(2026, 11, 18), date(2026, 11, 19))
    fixed = _mappings(tmp_path, "fixed", None)
    again = Transformer(store, mappings_dir=fixed).run(rebuild=True)
    assert again.rows == IDS
    n, distinct, lo, hi, _ = _counts(store)
    assert (n, distinct, lo, hi) == (IDS, IDS, date(2026, 11, 28), date(2026, 11, 29))
    assert not [o.key for o in store.list("curated/") if "date=2026-11-1" in o.key]  # the old days are gone


def test_a_rebuild_is_visible_on_days_compacted_before_it(store, tmp_path):
    _land(store)
    wrong = _mappings(tmp_path, "wrong", ("price: {path: price,", "price: {path: px,"))
    Transformer(store, mappings_dir=wrong).run()
    assert compact(store, before=date(2026, 12, 1)).partitions == 2
    assert _counts(store)[4] == IDS  # every price wrong, read from the compacted copies
    Transformer(store, mappings_dir=_mappings(tmp_path, "fixed", None)).run(rebuild=True)
    assert _counts(store) == (IDS, IDS, date(2026, 11, 28), date(2026, 11, 29), 0)
    assert compact(store, before=date(2026, 12, 1)).partitions == 2  # the rebuilt days are compacted anew
    assert len(read_layout(store).compacted) == 2
    assert _counts(store) == (IDS, IDS, date(2026, 11, 28), date(2026, 11, 29), 0)
    assert connect(store).execute("SELECT sum(price * size) FROM trades").fetchone()[0] == Decimal("100.5") * Decimal("0.01") * IDS


def test_a_manifest_naming_a_part_that_changed_is_not_read(store):
    """Defence in depth: readers check the manifest against the parts, even if nobody invalidated it."""
    import io

    import pyarrow.parquet as pq

    from schemahub.transform import write_parquet

    _land(store)
    Transformer(store).run()
    compact(store, before=date(2026, 12, 1))
    part = sorted(next(iter(read_layout(store).parts.values())))[0]
    table = pq.read_table(io.BytesIO(store.get(part).data))
    store.put(part, write_parquet(table.slice(0, table.num_rows - 1)))  # one row fewer than the copy holds
    assert _counts(store)[0] == IDS - 1


@pytest.fixture(autouse=True)
def _quiet(caplog):
    caplog.set_level("ERROR")
