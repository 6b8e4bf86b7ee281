"""What the status page shows, as JSON-ready dicts: stats with freshness and quarantine, coverage, candles.

Every call opens its own DuckDB connection (schemahub.query.connect), so the
`trades` view is built afresh from the store's current files: new data is seen
on the next request, and no connection is shared between server threads.
"""

from __future__ import annotations

import threading
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from schemahub import layout
from schemahub.errors import UsageError
from schemahub.query import connect, stats
from schemahub.store.base import ObjectStore

#: A product is fresh while its last trade is at most this old (seconds), stale once older than STALE_S;
#: in between it is lagging. The defaults suit a pipeline run every few minutes (`schemahub serve --fresh/--stale`).
FRESH_S = 15 * 60
STALE_S = 2 * 3600

#: Candle widths the page and /api/candles accept, and how many candles one answer may hold.
INTERVALS = {"1m": timedelta(minutes=1), "5m": timedelta(minutes=5), "15m": timedelta(minutes=15),
             "1h": timedelta(hours=1), "4h": timedelta(hours=4), "1d": timedelta(days=1)}
DEFAULT_CANDLES = 120
MAX_CANDLES = 20_000  # two weeks of 1m bars


def freshness(age_s: float | None, fresh_s: float = FRESH_S, stale_s: float = STALE_S) -> str:
    """'fresh', 'lagging', 'stale', or 'empty' (no rows in the table yet)."""
    if age_s is None:
        return "empty"
    if age_s <= fresh_s:
        return "fresh"
    return "lagging" if age_s <= stale_s else "stale"


class QuarantineCounter:
    """Quarantined rows per (exchange, product): one line per row in the files under quarantine/.

    A quarantine file is rewritten whole when its raw object is transformed
    again, so its count is kept per (key, size) and re-read only when that changes.
    """

    def __init__(self) -> None:
        self._cache: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def counts(self, store: ObjectStore) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        seen = set()
        for info in store.list(layout.QUARANTINE):
            raw = layout.parse_quarantine_key(info.key)
            if raw is None:
                continue
            seen.add(info.key)
            with self._lock:
                cached = self._cache.get(info.key)
            if cached is None or cached[0] != info.size:
                data = store.get(info.key).data
                n = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
                cached = (info.size, n)
                with self._lock:
                    self._cache[info.key] = cached
            out[(raw.exchange, raw.product_id)] = out.get((raw.exchange, raw.product_id), 0) + cached[1]
        with self._lock:
            for key in set(self._cache) - seen:
                del self._cache[key]
        return out


def _iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    return ts.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _dec(value: Decimal | None) -> str | None:
    """Exact decimal text without padding zeros ('65000.12', '3')."""
    if value is None:
        return None
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def stats_payload(store: ObjectStore, now: datetime, *, fresh_s: float = FRESH_S, stale_s: float = STALE_S,
                  quarantine: QuarantineCounter | None = None) -> dict:
    """/api/stats: one entry per exchange and product, and the totals the page shows at the top."""
    qcounts = (quarantine or QuarantineCounter()).counts(store)
    products = []
    seen = set()
    for r in stats(store, now=now):
        key = (r["exchange"], r["product_id"])
        seen.add(key)
        table_bytes = r.get("curated_bytes", 0) + r.get("compacted_bytes", 0)
        age = r.get("freshness_s")
        products.append({
            "exchange": r["exchange"], "product_id": r["product_id"], "rows": r["rows"],
            "first_trade": _iso(r.get("first_trade")), "last_trade": _iso(r.get("last_trade")),
            "freshness_s": age, "state": freshness(age, fresh_s, stale_s),
            "raw_bytes": r.get("raw_bytes", 0), "curated_bytes": r.get("curated_bytes", 0),
            "compacted_bytes": r.get("compacted_bytes", 0), "table_bytes": table_bytes,
            "bytes_per_trade": r.get("bytes_per_trade"), "quarantined": qcounts.get(key, 0),
        })
    for (ex, pid), n in sorted(qcounts.items()):
        if (ex, pid) not in seen:  # every row of a product refused: it still shows, with its count
            products.append({"exchange": ex, "product_id": pid, "rows": 0, "first_trade": None, "last_trade": None,
                             "freshness_s": None, "state": "empty", "raw_bytes": 0, "curated_bytes": 0,
                             "compacted_bytes": 0, "table_bytes": 0, "bytes_per_trade": None, "quarantined": n})
    products.sort(key=lambda p: (p["exchange"], p["product_id"]))

    exchanges: dict[str, dict] = {}
    for p in products:
        e = exchanges.setdefault(p["exchange"], {"exchange": p["exchange"], "products": 0, "rows": 0,
                                                 "freshness_s": None})
        e["products"] += 1
        e["rows"] += p["rows"]
        if p["freshness_s"] is not None and (e["freshness_s"] is None or p["freshness_s"] < e["freshness_s"]):
            e["freshness_s"] = p["freshness_s"]
    for e in exchanges.values():  # an exchange is as fresh as its most recent trade on any product
        e["state"] = freshness(e["freshness_s"], fresh_s, stale_s)

    def by_state(items) -> dict[str, int]:
        out = {"fresh": 0, "lagging": 0, "stale": 0, "empty": 0}
        for it in items:
            out[it["state"]] += 1
        return out

    totals = {
        "rows": sum(p["rows"] for p in products),
        "raw_bytes": sum(p["raw_bytes"] for p in products),
        "table_bytes": sum(p["table_bytes"] for p in products),
        "quarantined": sum(p["quarantined"] for p in products),
        "products": len(products), "products_by_state": by_state(products),
        "exchanges": len(exchanges), "exchanges_by_state": by_state(exchanges.values()),
    }
    return {"storage": store.uri, "generated_at": _iso(now), "thresholds": {"fresh_s": fresh_s, "stale_s": stale_s},
            "totals": totals, "exchanges": sorted(exchanges.values(), key=lambda e: e["exchange"]),
            "products": products}


def coverage_payload(store: ObjectStore) -> dict:
    """/api/coverage: rows per product and UTC day; a day without rows between a product's first and last is a hole."""
    con = connect(store)
    try:
        rows = con.execute("SELECT exchange, product_id, date, count(*) FROM trades GROUP BY ALL ORDER BY ALL"
                           ).fetchall()
    finally:
        con.close()
    per: dict[tuple[str, str], dict[date, int]] = {}
    for ex, pid, day, n in rows:
        per.setdefault((ex, pid), {})[day] = n
    products = []
    for (ex, pid), days in per.items():
        first, last = min(days), max(days)
        holes = [first + timedelta(days=k) for k in range((last - first).days + 1)
                 if first + timedelta(days=k) not in days]
        products.append({"exchange": ex, "product_id": pid, "first_day": first.isoformat(),
                         "last_day": last.isoformat(), "days": [[d.isoformat(), n] for d, n in sorted(days.items())],
                         "holes": [d.isoformat() for d in holes]})
    all_days = [d for days in per.values() for d in days]
    return {"first_day": min(all_days).isoformat() if all_days else None,
            "last_day": max(all_days).isoformat() if all_days else None, "products": products}


def parse_time(text: str | None, name: str) -> datetime | None:
    """An ISO-8601 date or time (UTC unless it says otherwise), or None for an empty value."""
    if not text:
        return None
    try:
        ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{name}={text!r} is not an ISO-8601 date or time "
                         "(e.g. 2026-12-01 or 2026-12-01T12:00:00Z)") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


# OHLCV over the `trades` view. open/close are the first/last trade by time, ties broken by the exchange's
# trade order (numeric ids: shorter id first, then text order). TODO: switch to schemahub.candles once it is
# merged (issue #11 section 3 defines candles there, with `complete`); this is the page's interim SQL.
_CANDLES_SQL = """
SELECT time_bucket(INTERVAL '{width}', trade_time) AS interval_start,
       first(price ORDER BY trade_time, length(trade_id), trade_id) AS open,
       max(price) AS high, min(price) AS low,
       last(price ORDER BY trade_time, length(trade_id), trade_id) AS close,
       sum(size) AS volume, sum(price * size) AS quote_volume, count(*) AS trades,
       coalesce(sum(size) FILTER (WHERE side = 'buy'), 0) AS buy_volume,
       coalesce(sum(size) FILTER (WHERE side = 'sell'), 0) AS sell_volume
FROM trades
WHERE exchange = $exchange AND product_id = $product AND trade_time >= $start AND trade_time < $end
GROUP BY 1 ORDER BY 1
"""
_WIDTH_SQL = {"1m": "1 minute", "5m": "5 minutes", "15m": "15 minutes", "1h": "1 hour", "4h": "4 hours", "1d": "1 day"}


def _floor(ts: datetime, width: timedelta) -> datetime:
    epoch = datetime(2000, 1, 3, tzinfo=timezone.utc)  # DuckDB's time_bucket origin: a Monday midnight
    return epoch + ((ts - epoch) // width) * width


def candles_payload(store: ObjectStore, *, exchange: str | None, product: str | None, interval: str | None = "1m",
                    start: str | None = None, end: str | None = None) -> dict:
    """/api/candles: OHLCV bars of one product; without start, up to DEFAULT_CANDLES intervals up to its last trade.

    Prices and volumes are exact decimal strings; interval_start is the bar's UTC start.
    """
    if not exchange or not product:
        raise UsageError("candles need exchange= and product= (e.g. /api/candles?exchange=coinbase&product=BTC-USD)")
    interval = interval or "1m"
    if interval not in INTERVALS:
        raise UsageError(f"interval={interval!r} is not one of {', '.join(INTERVALS)}")
    width = INTERVALS[interval]
    t_start, t_end = parse_time(start, "start"), parse_time(end, "end")
    if t_start and t_end and t_end <= t_start:
        raise UsageError(f"end={end!r} is not after start={start!r}")
    con = connect(store)
    try:
        pid = con.execute("SELECT any_value(product_id) FROM trades WHERE exchange = ? AND (product_id = upper(?) "
                          "OR upper(symbol) = upper(?))", [exchange, product, product]).fetchone()[0] or product.upper()
        first, last = con.execute("SELECT min(trade_time), max(trade_time) FROM trades WHERE exchange = ? "
                                  "AND product_id = ?", [exchange, pid]).fetchone()
        if t_end is None:
            t_end = _floor(last, width) + width if last is not None else datetime.now(timezone.utc)
        if t_start is None:  # the last DEFAULT_CANDLES intervals, or fewer when the data starts later
            t_start = _floor(t_end - DEFAULT_CANDLES * width, width)
            if first is not None and first < t_end:
                t_start = max(t_start, _floor(first, width))
        count = -(-(t_end - t_start) // width)
        if count > MAX_CANDLES:
            raise UsageError(f"start..end spans {count:,} {interval} candles, more than {MAX_CANDLES:,}: "
                             "narrow the range or pick a wider interval")
        rows = con.execute(_CANDLES_SQL.format(width=_WIDTH_SQL[interval]),
                           {"exchange": exchange, "product": pid, "start": t_start, "end": t_end}).fetchall()
    finally:
        con.close()
    cols = ["interval_start", "open", "high", "low", "close", "volume", "quote_volume", "trades", "buy_volume",
            "sell_volume"]
    bars = []
    for r in rows:
        bar = dict(zip(cols, r, strict=True))
        bar["interval_start"] = _iso(bar["interval_start"])
        for c in ("open", "high", "low", "close", "volume", "quote_volume", "buy_volume", "sell_volume"):
            bar[c] = _dec(bar[c])
        bars.append(bar)
    return {"exchange": exchange, "product_id": pid, "interval": interval, "start": _iso(t_start), "end": _iso(t_end),
            "last_trade": _iso(last), "candles": bars}
