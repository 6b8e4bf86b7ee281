"""Candles (OHLCV bars) over the `trades` view, defined exactly, as one DuckDB table macro.

One row per exchange, product and interval that has at least one trade (an interval without trades has no row):

- ``interval_start``: the interval's first microsecond, UTC. Intervals are aligned to the Unix epoch, so ``1d`` bars
  start at 00:00 UTC and ``4h`` bars at 00:00, 04:00, ... UTC. The interval is [interval_start, interval_start + step).
- ``open`` / ``close``: the price of the first / last trade of the interval by trade time; trades at the same time
  are ordered by the exchange's trade order: trade_id as a number where it is one, then as text.
- ``high`` / ``low``: the highest / lowest price.
- ``volume``: Σ size (base asset), exact. ``quote_volume``: Σ price·size, exact (DECIMAL(38,24): a product of two
  12-place decimals has 24 places, so nothing is rounded).
- ``trades``: the number of trades.
- ``buy_volume`` / ``sell_volume``: Σ size of trades whose taker bought / sold; ``unknown`` sides count in neither.
- ``complete``: true when the landed data covers the whole interval: the product's first landed trade is before
  the interval and its last landed trade is at or after the interval's end. The intervals holding the first and
  the last landed trade (data not landed yet, or not backfilled) are false; they can still change.
"""

from __future__ import annotations

import pyarrow as pa

from schemahub.errors import UsageError
from schemahub.table import DECIMAL, TIMESTAMP

#: Interval name -> length in microseconds.
INTERVALS: dict[str, int] = {
    "1m": 60_000_000, "5m": 300_000_000, "15m": 900_000_000,
    "1h": 3_600_000_000, "4h": 14_400_000_000, "1d": 86_400_000_000,
}

QUOTE_DECIMAL = pa.decimal128(38, 24)

#: The columns of a candles table, in order.
CANDLES = pa.schema([
    ("exchange", pa.string()), ("product_id", pa.string()), ("interval_start", TIMESTAMP),
    ("open", DECIMAL), ("high", DECIMAL), ("low", DECIMAL), ("close", DECIMAL),
    ("volume", DECIMAL), ("quote_volume", QUOTE_DECIMAL), ("trades", pa.int64()),
    ("buy_volume", DECIMAL), ("sell_volume", DECIMAL), ("complete", pa.bool_()),
])

_STEP = "CASE interval " + " ".join(f"WHEN '{k}' THEN {v}" for k, v in INTERVALS.items()) + (
    " ELSE error('candles: unknown interval ''' || interval || ''' (use " + ", ".join(INTERVALS) + ")') END")

_ORDER = "p.trade_time, TRY_CAST(p.trade_id AS HUGEINT) NULLS LAST, p.trade_id"

# The body qualifies every column, and no parameter is named like a column: parameters shadow columns, and DuckDB
# rejects the clash outright when `trades` is a view over a registered Arrow table (an empty or S3 lake).
MACRO = f"""
CREATE OR REPLACE MACRO candles(interval, ex := NULL, product := NULL, start := NULL, stop := NULL) AS TABLE
WITH picked AS (
  SELECT t.exchange AS c_ex, t.product_id AS c_pid, t.trade_id, t.price, t.size, t.side, t.trade_time
  FROM trades t
  WHERE (ex IS NULL OR t.exchange = ex) AND (product IS NULL OR t.product_id = product)
),
cover AS (
  SELECT c.c_ex, c.c_pid, min(c.trade_time) AS lo, max(c.trade_time) AS hi FROM picked c GROUP BY c.c_ex, c.c_pid
),
bars AS (
  SELECT p.c_ex, p.c_pid, epoch_us(p.trade_time) // ({_STEP})::BIGINT * ({_STEP})::BIGINT AS b,
         first(p.price ORDER BY {_ORDER}) AS open, max(p.price) AS high, min(p.price) AS low,
         last(p.price ORDER BY {_ORDER}) AS close,
         sum(p.size) AS volume, sum(p.price * p.size) AS quote_volume, count(*) AS trades,
         coalesce(sum(p.size) FILTER (WHERE p.side = 'buy'), 0) AS buy_volume,
         coalesce(sum(p.size) FILTER (WHERE p.side = 'sell'), 0) AS sell_volume
  FROM picked p
  WHERE (start IS NULL OR p.trade_time >= CAST(start AS TIMESTAMPTZ))
    AND (stop IS NULL OR p.trade_time < CAST(stop AS TIMESTAMPTZ))
  GROUP BY p.c_ex, p.c_pid, b
)
SELECT bars.c_ex AS exchange, bars.c_pid AS product_id, make_timestamptz(bars.b) AS interval_start,
       bars.open, bars.high, bars.low, bars.close, bars.volume, bars.quote_volume, bars.trades,
       CAST(bars.buy_volume AS DECIMAL(38, 12)) AS buy_volume, CAST(bars.sell_volume AS DECIMAL(38, 12)) AS sell_volume,
       (cover.lo < make_timestamptz(bars.b) AND make_timestamptz(bars.b + ({_STEP})::BIGINT) <= cover.hi) AS complete
FROM bars JOIN cover ON cover.c_ex = bars.c_ex AND cover.c_pid = bars.c_pid
ORDER BY 1, 2, 3
"""


def interval_us(interval: str) -> int:
    """The interval's length in microseconds; a UsageError names the valid ones."""
    try:
        return INTERVALS[interval]
    except (KeyError, TypeError):
        raise UsageError(f"candles: unknown interval {interval!r} (use {', '.join(INTERVALS)})") from None


def register(con) -> None:
    """Add the `candles(interval, ex := .., product := .., start := .., stop := ..)` table macro (product: the
    unified id; start inclusive, stop exclusive)."""
    con.execute(MACRO)


def candles_sql(interval: str, *, exchange: str | None = None, product_id: str | None = None,
                start: str | None = None, stop: str | None = None) -> str:
    """A SELECT over the macro with its arguments as SQL literals (partition pruning sees constants)."""
    interval_us(interval)
    args = [_lit(interval)] + [f"{name} := {_lit(value)}" for name, value in
                               (("ex", exchange), ("product", product_id), ("start", start), ("stop", stop))
                               if value is not None]
    return f"SELECT * FROM candles({', '.join(args)})"


def _lit(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"
