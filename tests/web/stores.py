"""Stores for the status-page tests, filled by real ingests from the simulators, and the trades they must show."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

from schemahub.ingest import ingest, make_source
from schemahub.landing import IngestOptions
from schemahub.sim import ExchangeSim, FixedBook
from schemahub.sources.base import Product
from schemahub.store.base import ObjectStore
from schemahub.transform import Transformer


def land(store: ObjectStore, sim: ExchangeSim, product_ids: list[str], *, since: datetime | None = None) -> None:
    """One ingest of these products from the simulator, then transform: what `schemahub run` does."""
    source = make_source(sim.exchange, base_url=sim.url, rate=2000)
    products = [Product(pid, sim.symbol(pid), *pid.split("-")) for pid in product_ids]
    results = ingest(store, source, products, IngestOptions(since=since), workers=len(products))
    assert all(r.status == "ok" for r in results), [(r.product_id, r.status, r.message) for r in results]
    Transformer(store).run()


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


# ADA-USD on Coinbase, written by hand: trades on 2026-11-28 and 2026-11-30, none on 2026-11-29 (a hole), ids dense.
# Trades 99 and 100 share a time: the exchange's order (id 99, then 100) decides the close; 102's price is not a
# number and goes to quarantine. Coinbase prints the MAKER side: taker = the other side.
ADA = [  # id, time, price, size, maker side
    (98, "2026-11-28T12:00:05Z", "0.50", "10", "sell"),
    (99, "2026-11-28T12:00:30Z", "0.52", "5", "buy"),
    (100, "2026-11-28T12:00:30Z", "0.51", "1", "buy"),
    (101, "2026-11-28T12:01:10Z", "0.49", "2", "sell"),
    (102, "2026-11-28T12:01:20Z", "abc", "1", "sell"),
    (103, "2026-11-30T08:00:00Z", "0.55", "3", "sell"),
    (104, "2026-11-30T08:00:59.999999Z", "0.56", "4", "buy"),
]
ADA_SINCE = utc("2026-11-28T00:00:00Z")
ADA_ROWS = 6
ADA_QUARANTINED = 1
ADA_FIRST, ADA_LAST = "2026-11-28T12:00:05Z", "2026-11-30T08:00:59.999999Z"
ADA_DAYS = [["2026-11-28", 4], ["2026-11-30", 2]]
ADA_HOLES = ["2026-11-29"]
# 1-minute bars by hand (taker buy volume = the maker-sell trades). A bar is complete when the landed data runs from
# before it to its end: the bars holding the first and the last trade are not; nor is 12:01, which lacks trade 102
# (quarantined: the table's ids skip from 101 to 103, and 102's time, 12:01:20, is in that bar).
ADA_1M = [
    {"interval_start": "2026-11-28T12:00:00Z", "open": "0.5", "high": "0.52", "low": "0.5", "close": "0.51",
     "volume": "16", "quote_volume": "8.11", "trades": 3, "buy_volume": "10", "sell_volume": "6", "complete": False},
    {"interval_start": "2026-11-28T12:01:00Z", "open": "0.49", "high": "0.49", "low": "0.49", "close": "0.49",
     "volume": "2", "quote_volume": "0.98", "trades": 1, "buy_volume": "2", "sell_volume": "0", "complete": False},
    {"interval_start": "2026-11-30T08:00:00Z", "open": "0.55", "high": "0.56", "low": "0.55", "close": "0.56",
     "volume": "7", "quote_volume": "3.89", "trades": 2, "buy_volume": "3", "sell_volume": "4", "complete": False},
]
ADA_1H = [
    {"interval_start": "2026-11-28T12:00:00Z", "open": "0.5", "high": "0.52", "low": "0.49", "close": "0.49",
     "volume": "18", "quote_volume": "9.09", "trades": 4, "buy_volume": "12", "sell_volume": "6", "complete": False},
    {"interval_start": "2026-11-30T08:00:00Z", "open": "0.55", "high": "0.56", "low": "0.55", "close": "0.56",
     "volume": "7", "quote_volume": "3.89", "trades": 2, "buy_volume": "3", "sell_volume": "4", "complete": False},
]


def ada_book() -> FixedBook:
    trades, times = {}, {}
    for i, ts, price, size, side in ADA:
        trades[i] = json.dumps({"time": ts, "trade_id": i, "price": price, "size": size, "side": side},
                               separators=(",", ":")).encode()
        t = utc(ts)
        times[i] = int(t.timestamp()) * 1_000_000 + t.microsecond
    return FixedBook("ADA-USD", trades, times=times)


def iso_us(us: int) -> str:
    """A sim time (µs) as the JSON prints it."""
    t = datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc).replace(microsecond=us % 1_000_000)
    return t.isoformat().replace("+00:00", "Z")


def dec(text: str) -> Decimal:
    return Decimal(text)
