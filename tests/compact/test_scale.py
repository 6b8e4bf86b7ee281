"""A simulated year at scale, offline, with moto's S3 and Glue: a few products, each day in tiny parts.
After the scheduled compaction, a full-table Athena scan (planned from the Glue metadata: one location per
partition, every object under it) opens one file per closed product-day plus today's parts; after a late
part, that day reads as its parts at once, and after the next compaction as one file again."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pyarrow as pa
import pytest

from schemahub.catalog import NullCatalog
from schemahub.clock import FakeClock
from schemahub.compact import read_layout
from schemahub.layout import curated_key, parts_prefix, partition, raw_key
from schemahub.pipeline import compact_closed
from schemahub.table import FILE_SCHEMA
from schemahub.transform import Transformer, write_parquet
from tests.compact.conftest import athena_plan, trade_ids
from tests.transform.helpers import put_raw

PRODUCTS = ["BTC-USD", "ETH-USD"]
TODAY = date(2026, 12, 1)
DAYS = [TODAY - timedelta(days=d) for d in range(365, 0, -1)]  # a year of closed days
PARTS_PER_DAY = 2


def _part(pid: str, day: date, n: int, first_id: int) -> bytes:
    """A tiny part as the transform writes it: 2 trades."""
    t0 = datetime(day.year, day.month, day.day, 1, tzinfo=timezone.utc) + timedelta(hours=n)
    base, quote = pid.split("-")
    rows = {"symbol": [pid] * 2, "base_asset": [base] * 2, "quote_asset": [quote] * 2,
            "trade_id": [str(first_id), str(first_id + 1)], "price": ["100.5", "101.5"], "size": ["1", "2"],
            "side": ["buy", "sell"], "trade_time": [t0, t0 + timedelta(seconds=1)], "ingested_at": [t0, t0],
            "raw_key": [raw_key("coinbase", pid, first_id)] * 2}
    table = pa.table({f.name: pa.array(rows[f.name]).cast(f.type) if f.name in ("price", "size")
                      else pa.array(rows[f.name], f.type) for f in FILE_SCHEMA})
    return write_parquet(table)


def _seed(store, catalog) -> tuple[int, int]:
    """The year's parts written straight into moto's backend (setup only: the code under test speaks HTTP to
    the server), and their partitions registered at their parts folders, as the transform leaves them.
    Returns (parts, next trade id)."""
    from moto.s3.models import s3_backends

    backend = s3_backends["123456789012"]["aws"]
    n = 0
    next_id = 1
    for pid in PRODUCTS:
        for day in DAYS + [TODAY]:
            for k in range(PARTS_PER_DAY):
                key = curated_key("coinbase", pid, day.isoformat(), raw_key("coinbase", pid, next_id))
                backend.put_object(store.bucket, store.prefix + key, _part(pid, day, k, next_id))
                next_id += 2
                n += 1
    catalog.create({partition("coinbase", pid, d.isoformat()): parts_prefix(partition("coinbase", pid, d.isoformat()))
                    for pid in PRODUCTS for d in DAYS + [TODAY]})
    return n, next_id


def _scan(catalog, store) -> int:
    """Files a full-table Athena scan opens: the sum over partitions of the objects under each location."""
    return sum(len(keys) for keys in athena_plan(catalog, store).values())


@pytest.mark.slow  # ~4,000 requests to moto: 20-45 s alone, minutes on a loaded machine
def test_a_year_of_tiny_parts_scans_one_file_per_closed_product_day_plus_todays_parts(lake):
    store, catalog = lake
    parts, next_id = _seed(store, catalog)
    closed = len(PRODUCTS) * len(DAYS)
    today_parts = len(PRODUCTS) * PARTS_PER_DAY
    assert _scan(catalog, store) == parts == (closed + len(PRODUCTS)) * PARTS_PER_DAY  # before: every part

    clock = FakeClock(start=datetime(2026, 12, 1, 0, 40, tzinfo=timezone.utc).timestamp())  # the schedule's time
    res = compact_closed(store, catalog=catalog, clock=clock)
    assert (res.partitions, res.pending, res.skipped_open) == (closed, 0, len(PRODUCTS))
    assert _scan(catalog, store) == closed + today_parts

    # Readers agree on every day's files (DuckDB's view reads read_layout's files).
    plan = athena_plan(catalog, store)
    layout = read_layout(store)
    assert {p: sorted(k) for p, k in layout.files.items()} == plan

    # A late part (a backfill) for a day 100 days back, through the real transform: read as its parts at once.
    late_day = TODAY - timedelta(days=100)
    line = json.dumps({"time": f"{late_day.isoformat()}T23:59:59.5Z", "trade_id": next_id, "price": "99.5",
                       "size": "3", "side": "buy"}, separators=(",", ":")).encode()
    put_raw(store, [line], product="ETH-USD", start=next_id, fetched=f"{late_day.isoformat()}T23:59:59.9Z")
    Transformer(store, catalog=catalog).run()
    late = partition("coinbase", "ETH-USD", late_day.isoformat())
    assert _scan(catalog, store) == closed - 1 + (PARTS_PER_DAY + 1) + today_parts
    plan = athena_plan(catalog, store)
    late_parts = sorted(k for k in (o.key for o in store.list(parts_prefix(late))) if k.endswith(".parquet"))
    assert plan[late] == late_parts and len(late_parts) == PARTS_PER_DAY + 1  # every part, the late one too
    assert next_id in trade_ids(store, plan[late])

    again = compact_closed(store, catalog=catalog, clock=clock)
    assert again.partitions == 1 and again.catalog["to_copy"] == 1
    assert _scan(catalog, store) == closed + today_parts
    [copy] = athena_plan(catalog, store)[late]
    assert "/v-" in copy and sorted(trade_ids(store, [copy])) == sorted(trade_ids(store, late_parts))


def test_a_deadline_leaves_the_backlog_for_the_next_run(lake):
    """Bounded per invocation: no day is started after the deadline; the next run goes on."""
    store, catalog = lake
    for k, day in enumerate(DAYS[:5]):
        for j in range(2):
            store.put(curated_key("coinbase", "BTC-USD", day.isoformat(), raw_key("coinbase", "BTC-USD", 10 * k + j)),
                      _part("BTC-USD", day, j, 100 * k + 2 * j))
    first = compact_closed(store, catalog=catalog, before=TODAY, deadline=0.0)  # already passed
    assert (first.partitions, first.pending) == (0, 5)
    assert first.catalog["registered"] == 5  # still registered, at their parts: Athena reads every day
    assert _scan(catalog, store) == 10
    second = compact_closed(store, catalog=catalog, before=TODAY)
    assert (second.partitions, second.pending) == (5, 0) and _scan(catalog, store) == 5
    assert compact_closed(store, catalog=NullCatalog(), before=TODAY).partitions == 0  # idempotent
