"""What the status page shows, as JSON-ready dicts: stats with freshness and quarantine, coverage, candles.

Every call opens its own DuckDB connection (schemahub.query.connect), so the
`trades` view is built afresh from the store's current files: new data is seen
on the next request, and no connection is shared between server threads.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import duckdb

from schemahub import candles
from schemahub.api import quarantined_rows
from schemahub.errors import QueryError, UsageError
from schemahub.query import connect, stats
from schemahub.store.base import ObjectStore

#: A product is fresh while its last trade is at most this old (seconds), stale once older than STALE_S;
#: in between it is lagging. The defaults suit a pipeline run every few minutes (`schemahub serve --fresh/--stale`).
FRESH_S = 15 * 60
STALE_S = 2 * 3600

#: Candles per answer: without start, the last DEFAULT_CANDLES intervals; never more than MAX_CANDLES.
DEFAULT_CANDLES = 120
MAX_CANDLES = 20_000  # two weeks of 1m bars


def freshness(age_s: float | None, fresh_s: float = FRESH_S, stale_s: float = STALE_S) -> str:
    """'fresh', 'lagging', 'stale', or 'empty' (no rows in the table yet)."""
    if age_s is None:
        return "empty"
    if age_s <= fresh_s:
        return "fresh"
    return "lagging" if age_s <= stale_s else "stale"


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


def stats_payload(store: ObjectStore, now: datetime, *, fresh_s: float = FRESH_S, stale_s: float = STALE_S) -> dict:
    """/api/stats: one entry per exchange and product, and the totals the page shows at the top."""
    from schemahub.audit import coverage

    qcounts = quarantined_rows(store)
    audited = coverage(store)  # the latest audit reports (audit/), per product
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
            "audit": audited.get(key),  # {coverage, days, ok, missing, audited_at}, or None if never audited
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


def _floor(ts: datetime, width: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)  # schemahub.candles aligns intervals to the Unix epoch
    return epoch + ((ts - epoch) // width) * width


_DECIMALS = ("open", "high", "low", "close", "volume", "quote_volume", "buy_volume", "sell_volume")


def candles_payload(store: ObjectStore, *, exchange: str | None, product: str | None, interval: str | None = "1m",
                    start: str | None = None, end: str | None = None) -> dict:
    """/api/candles: schemahub.candles bars of one product; without start, up to DEFAULT_CANDLES intervals up to its
    last trade. Prices and volumes are exact decimal strings; interval_start is the bar's UTC start."""
    if not exchange or not product:
        raise UsageError("candles need exchange= and product= (e.g. /api/candles?exchange=coinbase&product=BTC-USD)")
    interval = interval or "1m"
    if interval not in candles.INTERVALS:
        raise UsageError(f"interval={interval!r} is not one of {', '.join(candles.INTERVALS)}")
    width = timedelta(microseconds=candles.INTERVALS[interval])
    t_start, t_end = parse_time(start, "start"), parse_time(end, "end")
    if t_start and t_end and t_end <= t_start:
        raise UsageError(f"end={end!r} is not after start={start!r}")
    con = connect(store)
    try:
        pid = con.execute("SELECT any_value(product_id) FROM trades WHERE exchange = ? AND (product_id = upper(?) "
                          "OR upper(symbol) = upper(?))", [exchange, product, product]).fetchone()[0] or product.upper()
        first, last = con.execute("SELECT min(trade_time), max(trade_time) FROM trades WHERE exchange = ? "
                                  "AND product_id = ?", [exchange, pid]).fetchone()
        if first is None:  # a typo must not read as "no trades yet"; a product whose rows all sit in quarantine
            # still charts (empty), as the page lists it
            held = {(e, p) for e, p in con.execute("SELECT DISTINCT exchange, product_id FROM trades").fetchall()}
            if (exchange, pid) not in held | set(quarantined_rows(store)):
                there = ", ".join(f"{e} {p}" for e, p in sorted(held)) or "none yet"
                raise UsageError(f"no trades for exchange={exchange!r} product={product!r} under {store.uri} "
                                 f"(there: {there}); product is the unified id or the exchange's symbol")
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
        candles.register(con)
        try:
            cur = con.execute(candles.candles_sql(interval, exchange=exchange, product_id=pid, start=_iso(t_start),
                                                  stop=_iso(t_end)))
            cols = [d[0] for d in cur.description]
            rows = cur.fetchall()
        except duckdb.Error as e:  # a bar beyond quote_volume's type: one line naming it (schemahub.candles)
            said = candles.overflow_message(con, interval, exchange=exchange, product_id=pid, start=_iso(t_start),
                                            stop=_iso(t_end)) if "Overflow" in str(e) else None
            raise QueryError(said or f"candles failed: {str(e).splitlines()[0]}") from None
    finally:
        con.close()
    bars = []
    for r in rows:
        bar = dict(zip(cols, r, strict=True))
        del bar["exchange"], bar["product_id"]
        bar["interval_start"] = _iso(bar["interval_start"])
        for c in _DECIMALS:
            bar[c] = _dec(bar[c])
        bars.append(bar)
    return {"exchange": exchange, "product_id": pid, "interval": interval, "start": _iso(t_start), "end": _iso(t_end),
            "last_trade": _iso(last), "candles": bars}
