"""DuckDB query speed over >= 20M trades in the curated layout, next to an ideal reference layout.

schemahub layout: what the transform writes (one zstd Parquet file per raw object
per UTC day: ~10,000 trades per file, decimal(38,12) columns) behind the
`trades` view. Reference, built in the same run from the same trades: one
time-sorted file per product-day with INT64 fixed-point price and size.
Queries: 1-minute OHLCV over one product-day; exact sum(price * size) by product.
Each is measured on the layout as transformed, then again after `schemahub compact`
(one file per closed product-day, swapped in for readers atomically).

Run: make bench   (or .venv/bin/python bench/bench_query.py --products 4 --days 5)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "functions"))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from schemahub.compact import compact  # noqa: E402
from schemahub.layout import curated_key  # noqa: E402
from schemahub.query import connect  # noqa: E402
from schemahub.store.local import LocalStore  # noqa: E402
from schemahub.table import DECIMAL, FILE_SCHEMA, TIMESTAMP  # noqa: E402
from schemahub.transform import write_parquet  # noqa: E402

DAY0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
PER_FILE = 10_000


def product_day(p: int, d: int, n: int) -> tuple[pa.Table, pa.Table]:
    """One product-day of trades: (curated-schema table, fixed-point reference table)."""
    i = pa.array(range(n), pa.int64())
    r = pc.random(n, initializer=p * 1000 + d)
    start_us = int((DAY0 + timedelta(days=d)).timestamp() * 1e6)
    step = 86_400_000_000 // n
    t_us = pc.add(pc.multiply(i, step), pc.cast(pc.floor(pc.multiply(r, step - 1)), pa.int64()))
    t_us = pc.add(t_us, start_us)
    cents = pc.add(pc.add(6_000_000 + p * 10_000, pc.divide(i, 500)), pc.cast(pc.floor(pc.multiply(r, 40)), pa.int64()))
    sat = pc.add(pc.cast(pc.floor(pc.multiply(pc.random(n, initializer=p * 7 + d), 250_000_000)), pa.int64()), 1)
    price = pc.cast(pc.multiply(pc.cast(cents, pa.decimal128(19, 0)), pa.scalar(Decimal("0.01"), pa.decimal128(3, 2))), DECIMAL)
    size = pc.cast(pc.multiply(pc.cast(sat, pa.decimal128(19, 0)), pa.scalar(Decimal("0.00000001"), pa.decimal128(9, 8))), DECIMAL)
    ts = pc.cast(t_us, TIMESTAMP)
    pid = f"P{p:02d}-USD"
    cur = pa.table({
        "symbol": pa.repeat(pa.scalar(pid), n), "base_asset": pa.repeat(pa.scalar(f"P{p:02d}"), n),
        "quote_asset": pa.repeat(pa.scalar("USD"), n), "trade_id": pc.cast(pc.add(i, 10_000_000), pa.string()),
        "price": price, "size": size, "side": pc.if_else(pc.greater(r, 0.5), "buy", "sell"),
        "trade_time": ts, "ingested_at": ts, "raw_key": pa.repeat(pa.scalar("raw/x"), n),
    }, schema=FILE_SCHEMA)
    ref = pa.table({"product_id": pa.repeat(pa.scalar(pid), n), "trade_id": pc.add(i, 10_000_000),
                    "price": pc.multiply(cents, 1_000_000), "size": sat, "trade_time": ts})  # both at scale 8
    return cur, ref


def build(root: str, products: int, days: int, per_day: int) -> int:
    store = LocalStore(os.path.join(root, "store"), fsync=False)
    os.makedirs(os.path.join(root, "ref"), exist_ok=True)
    for p in range(products):
        for d in range(days):
            cur, ref = product_day(p, d, per_day)
            date = (DAY0 + timedelta(days=d)).date().isoformat()
            for k in range(0, per_day, PER_FILE):
                key = curated_key("coinbase", f"P{p:02d}-USD", date, f"raw/coinbase/P{p:02d}-USD/{d * per_day + k:020d}.jsonl.gz")
                store.put(key, write_parquet(cur.slice(k, PER_FILE)))
            pq.write_table(ref, os.path.join(root, "ref", f"P{p:02d}-{date}.parquet"), compression="zstd")
    return products * days * per_day


def timed(con, sql: str, runs: int) -> tuple[float, list]:
    con.execute(sql).fetchall()  # warm
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = con.execute(sql).fetchall()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--products", type=int, default=4)
    ap.add_argument("--days", type=int, default=5)
    ap.add_argument("--per-day", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        n = build(root, args.products, args.days, args.per_day)
        built = time.perf_counter() - t0
        con = connect(LocalStore(os.path.join(root, "store")))
        ref_glob = os.path.join(root, "ref", "*.parquet")
        con.execute(f"CREATE VIEW ref AS SELECT * FROM read_parquet('{ref_glob}')")
        day = DAY0.date().isoformat()
        q = {
            "1-minute OHLCV, one product-day": (
                f"""SELECT time_bucket(INTERVAL 1 minute, trade_time) m, arg_min(price, trade_time), max(price), min(price),
                    arg_max(price, trade_time), sum(size), count(*) FROM trades
                    WHERE product_id = 'P00-USD' AND date = DATE '{day}' GROUP BY 1 ORDER BY 1""",
                f"""SELECT time_bucket(INTERVAL 1 minute, trade_time) m, arg_min(price, trade_time), max(price), min(price),
                    arg_max(price, trade_time), sum(size), count(*) FROM ref
                    WHERE product_id = 'P00-USD' AND trade_time >= TIMESTAMPTZ '{day} 00:00:00+00'
                    AND trade_time < TIMESTAMPTZ '{day} 00:00:00+00' + INTERVAL 1 day GROUP BY 1 ORDER BY 1""",
                args.per_day),
            "exact sum(price * size) by product, full table": (
                "SELECT product_id, sum(price * size) FROM trades GROUP BY 1 ORDER BY 1",
                "SELECT product_id, sum(price::HUGEINT * size) FROM ref GROUP BY 1 ORDER BY 1",
                n),
        }
        print(f"query benchmark: {n:,} trades ({args.products} products x {args.days} days), DuckDB {__import__('duckdb').__version__}, "
              f"built in {built:.0f}s; curated files: {sum(1 for _ in Path(root, 'store', 'curated').rglob('*.parquet'))}, "
              f"reference files: {args.products * args.days}")
        store = LocalStore(os.path.join(root, "store"))
        for stage in ("as transformed (one file per raw object per day)", "after `schemahub compact` (one file per product-day)"):
            if stage.startswith("after"):
                t0 = time.perf_counter()
                res = compact(store, before=DAY0.date() + timedelta(days=args.days))
                print(f"  compact: {res.partitions} product-days, {res.parts:,} files -> {res.partitions}, "
                      f"{time.perf_counter() - t0:.0f}s")
                con = connect(store)
                con.execute(f"CREATE VIEW ref AS SELECT * FROM read_parquet('{ref_glob}')")
            print(f"  schemahub layout {stage}:")
            for name, (ours_sql, ref_sql, rows) in q.items():
                t_ours, out_ours = timed(con, ours_sql, args.runs)
                t_ref, out_ref = timed(con, ref_sql, args.runs)
                assert len(out_ours) == len(out_ref)
                print(f"    {name}:")
                print(f"      reference  {t_ref * 1000:8.1f} ms  {rows / t_ref:>14,.0f} rows/s")
                print(f"      schemahub  {t_ours * 1000:8.1f} ms  {rows / t_ours:>14,.0f} rows/s   "
                      f"ratio {t_ref / t_ours:.2f}x (target >= 0.80x)")
        # The two layouts hold the same trades: exact sums agree (reference is at scale 8 * 8 = 16).
        ours = dict(con.execute("SELECT product_id, sum(price * size) FROM trades GROUP BY 1").fetchall())
        ref = dict(con.execute("SELECT product_id, sum(price::HUGEINT * size) FROM ref GROUP BY 1").fetchall())
        assert all(ours[k] == Decimal(ref[k]) / Decimal(10) ** 16 for k in ref), "layouts disagree"


if __name__ == "__main__":
    main()
