"""Candles (OHLCV bars) over the `trades` view, defined exactly, as one DuckDB table macro.

One row per exchange, product and interval that has at least one trade (an interval without trades has no row):

- ``interval_start``: the interval's first microsecond, UTC. Intervals are aligned to the Unix epoch, so ``1d`` bars
  start at 00:00 UTC and ``4h`` bars at 00:00, 04:00, ... UTC. The interval is [interval_start, interval_start + step).
- ``open`` / ``close``: the price of the first / last trade of the interval by trade time; trades at the same time
  are ordered by the exchange's trade order: trade_id as a number where it is one, then as text.
- ``high`` / ``low``: the highest / lowest price.
- ``volume``: Σ size (base asset), exact. ``quote_volume``: Σ price·size, exact, as DECIMAL(38,20) (QUOTE_SCALE:
  18 integer digits). A bar whose sum needs more than 20 decimal places (a 12-place price times a 12-place size)
  or reaches 1e18 is an error naming the bar, never a rounded or wrapped value. The sum is exact per minute first
  (DuckDB's DECIMAL(38,24)): a minute of one product worth 1e14 or more stops the query with an overflow, which
  Lake.candles names (overflow_message).
- ``trades``: the number of trades.
- ``buy_volume`` / ``sell_volume``: Σ size of trades whose taker bought / sold; ``unknown`` sides count in neither.
- ``complete``: true when the landed data covers the whole interval, i.e. all of:
  1. the product's first landed trade is before the interval, and its last landed trade at or after its end (the
     bars holding the first and the last landed trade can still change: data not landed yet, or not backfilled);
  2. for an exchange whose trade ids run 1, 2, 3... (its mapping's ``contiguous_ids``), no trade id is missing
     around the bar: with a and b two landed trades whose ids are neighbours in the table but not consecutive
     (b > a + 1: a hole in the raw chain, an id the exchange skipped, or a row set aside in quarantine), every bar
     that the times [time(a), time(b)] touch lacks trades (ids are assumed to rise with trade time). A bar with
     ids a..c and no gap inside, whose neighbouring bars with trades end at a - 1 and start at c + 1, is whole.
  Exchanges without contiguous ids get rule 1 only.
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

#: quote_volume's type. Σ price·size of 12-place decimals has up to 24 places, but DECIMAL(38,24) leaves 14 integer
#: digits and overflows at 1e14 quote units (a day of a JPY, KRW or IDR market). 20 places leave 18 integer digits
#: (1e18) and hold every product of inputs with at most 20 decimal places between them (8-place prices times
#: 12-place sizes, 12 x 8, 10 x 10): exchanges print 8-10. A bar whose sum needs more places, or more integer
#: digits, is an error naming the bar: never rounded, never wrapped.
QUOTE_SCALE = 20
QUOTE_DECIMAL = pa.decimal128(38, QUOTE_SCALE)
_QUOTE_INT_DIGITS = 38 - QUOTE_SCALE

#: The columns of a candles table, in order.
CANDLES = pa.schema([
    ("exchange", pa.string()), ("product_id", pa.string()), ("interval_start", TIMESTAMP),
    ("open", DECIMAL), ("high", DECIMAL), ("low", DECIMAL), ("close", DECIMAL),
    ("volume", DECIMAL), ("quote_volume", QUOTE_DECIMAL), ("trades", pa.int64()),
    ("buy_volume", DECIMAL), ("sell_volume", DECIMAL), ("complete", pa.bool_()),
])

_STEP = "CASE interval " + " ".join(f"WHEN '{k}' THEN {v}" for k, v in INTERVALS.items()) + (
    " ELSE error('candles: unknown interval ''' || interval || ''' (use " + ", ".join(INTERVALS) + ")') END")

_ORDER = "p.trade_time, p.nid NULLS LAST, p.trade_id"
_INSIDE = ("((start IS NULL OR p.trade_time >= CAST(start AS TIMESTAMPTZ)) "
           "AND (stop IS NULL OR p.trade_time < CAST(stop AS TIMESTAMPTZ)))")
_BAR = ("bars.c_ex || ' ' || bars.c_pid || ' ' || interval || ' bar ' || "
        "strftime(make_timestamptz(bars.b), '%Y-%m-%dT%H:%M:%SZ')")
_QUOTE = (
    "CASE WHEN bars.q_int + CAST(floor(bars.q_frac) AS HUGEINT) >= CAST(10 AS HUGEINT) ** " + str(_QUOTE_INT_DIGITS)
    + " THEN error('candles: quote_volume of ' || " + _BAR + " || ' does not fit DECIMAL(38," + str(QUOTE_SCALE)
    + ") (1e" + str(_QUOTE_INT_DIGITS) + " or more): query sum(price * size) over shorter spans')"
    + " WHEN bars.q_frac <> CAST(bars.q_frac AS DECIMAL(38, " + str(QUOTE_SCALE) + "))"
    + " THEN error('candles: quote_volume of ' || " + _BAR + " || ' has more than " + str(QUOTE_SCALE)
    + " decimal places (price and size places add up): query sum(price * size) for it')"
    + " ELSE CAST(bars.q_int AS DECIMAL(38, " + str(QUOTE_SCALE) + ")) + CAST(bars.q_frac AS DECIMAL(38, "
    + str(QUOTE_SCALE) + ")) END")

# The body qualifies every column, and no parameter is named like a column: parameters shadow columns, and DuckDB
# rejects the clash outright when `trades` is a view over a registered Arrow table (an empty or S3 lake).
#
# One pass over the rows builds `mins`: per product and minute (every interval is whole minutes aligned to the
# epoch, so minutes nest in bars), split by whether the rows are inside [start, stop). Bars aggregate the inside
# minutes; the coverage and the holes look at every minute, so a hole just before the window still counts
# (price·size is summed inside only: a minute outside the window never stops the query).
# quote_volume: price·size is DECIMAL(38,24), exact, summed per minute (DuckDB's fast decimal sum; a minute of one
# product may be worth up to 1e14, beyond which DuckDB's own overflow error stops the query), then per bar as the
# minutes' integer parts (HUGEINT) and fractions (each < 1), which cannot overflow; _QUOTE checks the bar's sum fits
# the column. Holes: per bar, the lowest and highest numeric trade id and how many it holds (the view holds a
# trade id once); a bar misses ids inside it, or between it and its neighbouring bar with trades.
MACRO = f"""
CREATE OR REPLACE MACRO candles(interval, ex := NULL, product := NULL, start := NULL, stop := NULL) AS TABLE
WITH picked AS (
  SELECT t.exchange AS c_ex, t.product_id AS c_pid, t.trade_id, TRY_CAST(t.trade_id AS HUGEINT) AS nid, t.price,
         t.size, t.side, t.trade_time
  FROM trades t
  WHERE (ex IS NULL OR t.exchange = ex) AND (product IS NULL OR t.product_id = product)
),
mins AS (
  SELECT p.c_ex, p.c_pid, epoch_us(p.trade_time) // 60000000 * 60000000 AS m,
         {_INSIDE} AS inside,
         first(p.price ORDER BY {_ORDER}) AS open, last(p.price ORDER BY {_ORDER}) AS close,
         max(p.price) AS high, min(p.price) AS low, sum(p.size) AS volume, sum(p.price * p.size) FILTER (WHERE {_INSIDE}) AS q,
         count(*) AS trades, coalesce(sum(p.size) FILTER (WHERE p.side = 'buy'), 0) AS buy_volume,
         coalesce(sum(p.size) FILTER (WHERE p.side = 'sell'), 0) AS sell_volume,
         min(p.nid) AS lo_id, max(p.nid) AS hi_id, count(p.nid) AS n_ids,
         min(p.trade_time) AS first_t, max(p.trade_time) AS last_t
  FROM picked p
  GROUP BY p.c_ex, p.c_pid, m, inside
),
cover AS (
  SELECT c.c_ex, c.c_pid, min(c.first_t) AS lo, max(c.last_t) AS hi FROM mins c GROUP BY c.c_ex, c.c_pid
),
spans AS (
  SELECT s.c_ex, s.c_pid, s.m // ({_STEP})::BIGINT * ({_STEP})::BIGINT AS b, min(s.lo_id) AS lo_id,
         max(s.hi_id) AS hi_id, sum(s.n_ids) AS n_ids
  FROM mins s WHERE s.c_ex IN (SELECT e.exchange FROM candle_contiguous_ids e) AND s.n_ids > 0
  GROUP BY s.c_ex, s.c_pid, b
),
holed AS (
  SELECT s.c_ex, s.c_pid, s.b,
         s.hi_id - s.lo_id + 1 > s.n_ids
         OR coalesce(lag(s.hi_id) OVER w + 1 < s.lo_id, false)
         OR coalesce(lead(s.lo_id) OVER w > s.hi_id + 1, false) AS missing
  FROM spans s
  WINDOW w AS (PARTITION BY s.c_ex, s.c_pid ORDER BY s.b)
),
bars AS (
  SELECT n.c_ex, n.c_pid, n.m // ({_STEP})::BIGINT * ({_STEP})::BIGINT AS b,
         first(n.open ORDER BY n.m) AS open, max(n.high) AS high, min(n.low) AS low, last(n.close ORDER BY n.m) AS close,
         sum(n.volume) AS volume, sum(CAST(floor(n.q) AS HUGEINT)) AS q_int, sum(n.q - floor(n.q)) AS q_frac,
         sum(n.trades) AS trades, sum(n.buy_volume) AS buy_volume, sum(n.sell_volume) AS sell_volume
  FROM mins n WHERE n.inside
  GROUP BY n.c_ex, n.c_pid, b
)
SELECT bars.c_ex AS exchange, bars.c_pid AS product_id, make_timestamptz(bars.b) AS interval_start,
       bars.open, bars.high, bars.low, bars.close, bars.volume, {_QUOTE} AS quote_volume, CAST(bars.trades AS BIGINT) AS trades,
       CAST(bars.buy_volume AS DECIMAL(38, 12)) AS buy_volume, CAST(bars.sell_volume AS DECIMAL(38, 12)) AS sell_volume,
       (cover.lo < make_timestamptz(bars.b) AND make_timestamptz(bars.b + ({_STEP})::BIGINT) <= cover.hi
        AND NOT coalesce(holed.missing, false)) AS complete
FROM bars JOIN cover ON cover.c_ex = bars.c_ex AND cover.c_pid = bars.c_pid
LEFT JOIN holed ON holed.c_ex = bars.c_ex AND holed.c_pid = bars.c_pid AND holed.b = bars.b
ORDER BY 1, 2, 3
"""


def interval_us(interval: str) -> int:
    """The interval's length in microseconds; a UsageError names the valid ones."""
    try:
        return INTERVALS[interval]
    except (KeyError, TypeError):
        raise UsageError(f"candles: unknown interval {interval!r} (use {', '.join(INTERVALS)})") from None


def register(con, mappings: str | None = None, *, contiguous: list[str] | None = None) -> None:
    """Add the `candles(interval, ex := .., product := .., start := .., stop := ..)` table macro (product: the
    unified id; start inclusive, stop exclusive), and the table `candle_contiguous_ids` of the exchanges whose
    trade ids run 1, 2, 3... (the mappings' `contiguous_ids`, unless `contiguous` names them)."""
    names = contiguous_exchanges(mappings) if contiguous is None else contiguous
    con.execute("CREATE OR REPLACE TEMP TABLE candle_contiguous_ids (exchange VARCHAR)")
    if names:
        con.executemany("INSERT INTO candle_contiguous_ids VALUES (?)", [[n] for n in names])
    con.execute(MACRO)


def contiguous_exchanges(mappings: str | None = None) -> list[str]:
    """The exchanges whose mapping says `contiguous_ids: true` (a mapping that does not load counts as not)."""
    from schemahub.errors import SchemahubError
    from schemahub.sources.spec import available_exchanges, load_exchange

    out = []
    for name in available_exchanges(mappings):
        try:
            if load_exchange(name, mappings).source.trades.pagination.contiguous_ids:
                out.append(name)
        except (SchemahubError, ValueError):
            continue
    return out


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


def overflow_message(con, interval: str, *, exchange: str | None = None, product_id: str | None = None,
                     start: str | None = None, stop: str | None = None) -> str | None:
    """After DuckDB stopped a candles query on an overflow: one line naming the bar that holds a minute (or a trade)
    worth too much for an exact DECIMAL(38,24) sum (found with floats, only to name it), or None if none does."""
    step = interval_us(interval)
    terms, params = [], []
    for cond, value in (("exchange = ?", exchange), ("product_id = ?", product_id),
                        ("trade_time >= CAST(? AS TIMESTAMPTZ)", start), ("trade_time < CAST(? AS TIMESTAMPTZ)", stop)):
        if value is not None:
            terms.append(cond)
            params.append(value)
    import duckdb

    try:
        row = con.cursor().execute(
            "SELECT exchange, product_id, epoch_us(trade_time) // 60000000 * 60000000 AS m, "
            "sum(CAST(price AS DOUBLE) * CAST(size AS DOUBLE)) AS q FROM trades"
            + (" WHERE " + " AND ".join(terms) if terms else "")
            + " GROUP BY ALL HAVING abs(q) >= 1e14 ORDER BY q DESC LIMIT 1", params).fetchone()
    except duckdb.Error:  # a lake whose table is registered on the first connection only (S3)
        return None
    if row is None:
        return None
    ex, pid, minute, q = row
    bar = minute // step * step

    def iso(us: int) -> str:
        from datetime import datetime, timezone

        return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    return (f"candles: quote_volume of {ex} {pid} {interval} bar {iso(bar)}: the minute {iso(minute)} is worth about "
            f"{q:.3g} quote units, more than an exact sum holds (1e14 a minute): query "
            "sum(price * size) for it per second")
