"""The README's "Query cookbook" runs, and gives the answers computed by hand; its "Troubleshooting" quotes real messages.

The store holds hand-written trades on two exchanges, landed through their simulators and transformed, as `schemahub
run` does (tests/web/stores.py `land`). Every expected value below was worked out by hand from the trade lists, never
from the code under test:

- ties: Coinbase ids 99 and 100 share a time at the end of 12:00 (close = id 100's price: ids are numbers, while text
  order would put "100" first and give id 99's), Binance ids 999 and 1000 share 12:00:00 (open = id 999's price,
  where text order would give id 1000's);
- Coinbase prints the maker side, so its taker side is the other one; Binance's isBuyerMaker=true means the taker sold;
- Binance never served id 1002 (a hole the exchange confirms), which the gap check must find.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from decimal import Decimal

import pytest

import schemahub
from schemahub.sim import BinanceSim, CoinbaseSim, FixedBook
from schemahub.store import open_store
from tests.conftest import ROOT
from tests.web.stores import land, utc

README = ROOT / "README.md"
DAY = "2026-11-30"
M0, M1 = utc("2026-11-30T12:00:00Z"), utc("2026-11-30T12:01:00Z")

# id, time, price, size, maker side (Coinbase prints the maker's side: the taker did the opposite)
COINBASE = [
    (97, "2026-11-30T12:00:05Z", "100.10", "1", "sell"),      # taker buy
    (98, "2026-11-30T12:00:40Z", "100.30", "0.5", "sell"),    # taker buy
    (99, "2026-11-30T12:00:59.5Z", "100.00", "2", "buy"),     # taker sell
    (100, "2026-11-30T12:00:59.5Z", "100.20", "1.5", "sell"),  # taker buy; same time as 99, after it: the close
    (101, "2026-11-30T12:01:10Z", "100.40", "0.25", "sell"),  # taker buy
    (102, "2026-11-30T12:01:50Z", "100.50", "0.75", "buy"),   # taker sell
]
# id, time, price, qty, isBuyerMaker (true: the taker sold); id 1002 is never served
BINANCE = [
    (999, "2026-11-30T12:00:00Z", "100.60", "1", False),     # the open: same time as 1000, before it
    (1000, "2026-11-30T12:00:00Z", "100.50", "2", True),
    (1001, "2026-11-30T12:00:30Z", "100.80", "1", False),
    (1003, "2026-11-30T12:01:00Z", "100.70", "3", True),
    (1004, "2026-11-30T12:01:40Z", "100.90", "1", False),
]

D = Decimal
# By hand. (exchange, product, minute) -> open, high, low, close, volume, trades
OHLCV = {
    ("binance", "BTC-USDT", M0): (D("100.60"), D("100.80"), D("100.50"), D("100.80"), D("4"), 3),
    ("binance", "BTC-USDT", M1): (D("100.70"), D("100.90"), D("100.70"), D("100.90"), D("4"), 2),
    ("coinbase", "BTC-USD", M0): (D("100.10"), D("100.30"), D("100.00"), D("100.20"), D("5"), 4),
    ("coinbase", "BTC-USD", M1): (D("100.40"), D("100.50"), D("100.40"), D("100.50"), D("1"), 2),
}
# quote volume: 100.60 + 2*100.50 + 100.80 = 402.40; 3*100.70 + 100.90 = 403.00;
# 100.10 + 0.5*100.30 + 2*100.00 + 1.5*100.20 = 500.55; 0.25*100.40 + 0.75*100.50 = 100.475
VWAP = {  # -> quote volume, volume, vwap
    ("binance", "BTC-USDT", M0): (D("402.40"), D("4"), D("100.60")),
    ("binance", "BTC-USDT", M1): (D("403.00"), D("4"), D("100.75")),
    ("coinbase", "BTC-USD", M0): (D("500.55"), D("5"), D("100.11")),
    ("coinbase", "BTC-USD", M1): (D("100.475"), D("1"), D("100.475")),
}
IMBALANCE = {  # -> taker bought, taker sold, imbalance
    ("binance", "BTC-USDT", M0): (D("2"), D("2"), D("0")),
    ("binance", "BTC-USDT", M1): (D("1"), D("3"), D("-0.5")),
    ("coinbase", "BTC-USD", M0): (D("3"), D("2"), D("0.2")),
    ("coinbase", "BTC-USD", M1): (D("0.25"), D("0.75"), D("-0.5")),
}
SPREAD = [  # minute, markets, low, high, spread, cheapest, dearest (last prices: Coinbase 100.20 / 100.50)
    (M0, 2, D("100.20"), D("100.80"), D("0.60"), "coinbase BTC-USD", "binance BTC-USDT"),
    (M1, 2, D("100.50"), D("100.90"), D("0.40"), "coinbase BTC-USD", "binance BTC-USDT"),
]
GAPS = [("binance", "BTC-USDT", 1001, 1003, 1)]
CANDLES = [  # Coinbase BTC-USD: the first bar holds the first trade and the last one the last: neither complete
    {"interval_start": M0, "open": D("100.10"), "high": D("100.30"), "low": D("100.00"), "close": D("100.20"),
     "volume": D("5"), "quote_volume": D("500.55"), "trades": 4, "buy_volume": D("3"), "sell_volume": D("2"),
     "complete": False},
    {"interval_start": M1, "open": D("100.40"), "high": D("100.50"), "low": D("100.40"), "close": D("100.50"),
     "volume": D("1"), "quote_volume": D("100.475"), "trades": 2, "buy_volume": D("0.25"), "sell_volume": D("0.75"),
     "complete": False},
]


def _us(ts: str) -> int:
    t = utc(ts)
    return int(t.timestamp()) * 1_000_000 + t.microsecond


def coinbase_book() -> FixedBook:
    trades = {i: json.dumps({"time": t, "trade_id": i, "price": p, "size": s, "side": side},
                            separators=(",", ":")).encode() for i, t, p, s, side in COINBASE}
    return FixedBook("BTC-USD", trades, times={i: _us(t) for i, t, *_ in COINBASE})


def binance_book() -> FixedBook:
    trades = {i: json.dumps({"id": i, "price": p, "qty": q, "quoteQty": str(D(p) * D(q)), "time": _us(t) // 1000,
                             "isBuyerMaker": m, "isBestMatch": True}, separators=(",", ":")).encode()
              for i, t, p, q, m in BINANCE}
    times = {i: _us(t) for i, t, *_ in BINANCE}
    times[1002] = _us("2026-11-30T12:00:45Z")  # the simulator's search by time may probe the unserved id
    return FixedBook("BTC-USDT", trades, times=times)


# ------------------------------------------------------------------ the README

def section(title: str) -> str:
    text = README.read_text()
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, f"README.md has no '## {title}' section"
    return m.group(1)


def cookbook_blocks() -> list[tuple[str, str]]:
    """(title, sql) of every ```sql block in the cookbook; the title is its first line's `-- ` comment."""
    blocks = re.findall(r"^```sql\n(.*?)^```", section("Query cookbook"), re.S | re.M)
    out = []
    for sql in blocks:
        first = sql.splitlines()[0]
        assert first.startswith("-- "), f"a cookbook block must start with a '-- title' line: {first!r}"
        out.append((first[3:].split(":")[0].strip(), sql))
    return out


def _blocks_or_none():
    try:
        return cookbook_blocks()
    except AssertionError:
        return []


# ------------------------------------------------------------------ the store

@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cookbook") / "store")
    store = open_store(root)
    since = datetime(2026, 11, 30, 11, 0, tzinfo=timezone.utc)
    with CoinbaseSim([coinbase_book()]) as sim:
        land(store, sim, ["BTC-USD"], since=since)
    with BinanceSim([binance_book()]) as sim:
        land(store, sim, ["BTC-USDT"], since=since)
    return schemahub.open(root)


def rows(lake, sql: str) -> list[dict]:
    rel = lake.sql(sql)
    return [dict(zip(rel.columns, r)) for r in rel.fetchall()]


def by_market(got: list[dict], time_col: str = "minute") -> dict:
    return {(r["exchange"], r["product_id"], r[time_col]): r for r in got}


# ------------------------------------------------------------------ tests

def test_the_cookbook_has_a_block_for_every_recipe():
    titles = [t for t, _ in cookbook_blocks()]
    for needed in ("OHLCV", "OHLCV (Athena)", "VWAP", "Taker imbalance", "Cross-exchange spread", "Gap check",
                   "Candles macro"):
        assert needed in titles, (needed, titles)
    assert len(titles) == len(set(titles)), titles


@pytest.mark.parametrize(("title", "sql"), _blocks_or_none() or [("(no blocks)", "")], ids=lambda v: v[:40])
def test_every_cookbook_block_runs(lake, title, sql):
    assert sql, "the README's Query cookbook has no ```sql blocks"
    got = rows(lake, sql)
    assert got, f"{title}: no rows from the hand-made store"


def _sql(title: str) -> str:
    return dict(cookbook_blocks())[title]


@pytest.mark.parametrize("title", ["OHLCV", "OHLCV (Athena)"])
def test_ohlcv_matches_bars_by_hand_with_the_tie_rule(lake, title):
    got = by_market(rows(lake, _sql(title)))
    assert sorted(got) == sorted(OHLCV)
    for key, (o, h, lo, c, v, n) in OHLCV.items():
        r = got[key]
        assert (r["open"], r["high"], r["low"], r["close"], r["volume"], r["trades"]) == (o, h, lo, c, v, n), key


def test_vwap_sums_are_exact_and_the_ratio_is_right(lake):
    got = by_market(rows(lake, _sql("VWAP")))
    assert sorted(got) == sorted(VWAP)
    for key, (quote, volume, vwap) in VWAP.items():
        r = got[key]
        assert isinstance(r["quote_volume"], Decimal) and r["quote_volume"] == quote, key
        assert isinstance(r["volume"], Decimal) and r["volume"] == volume, key
        assert math.isclose(float(r["vwap"]), float(vwap), rel_tol=1e-12), (key, r["vwap"])


def test_taker_imbalance_by_hand(lake):
    got = by_market(rows(lake, _sql("Taker imbalance")))
    assert sorted(got) == sorted(IMBALANCE)
    for key, (bought, sold, imb) in IMBALANCE.items():
        r = got[key]
        assert (r["taker_bought"], r["taker_sold"]) == (bought, sold), key
        assert math.isclose(float(r["imbalance"]), float(imb), abs_tol=1e-12), (key, r["imbalance"])


def test_cross_exchange_spread_by_hand(lake):
    got = rows(lake, _sql("Cross-exchange spread"))
    assert [(r["minute"], r["markets"], r["low"], r["high"], r["spread"], r["cheapest"], r["dearest"])
            for r in got] == SPREAD


def test_gap_check_finds_the_planted_hole_and_nothing_else(lake):
    got = rows(lake, _sql("Gap check"))
    assert [(r["exchange"], r["product_id"], r["prev_id"], r["next_id"], r["missing"]) for r in got] == GAPS


def test_candles_macro_by_hand(lake):
    got = rows(lake, _sql("Candles macro"))
    assert [r["exchange"] for r in got] == ["coinbase"] * len(CANDLES)
    assert [{k: r[k] for k in CANDLES[0]} for r in got] == CANDLES


# ------------------------------------------------------------------ Troubleshooting: every quoted message is real

# For each message the README quotes, the fixed parts the code prints it with (the rest is names, numbers, times).
# A quoted line must contain every fixed part of one entry, and every fixed part must be in the code that prints it.
MESSAGES = {
    "no such folder": ["schemahub: error: ", ": no such folder; ", "did you mean demo-data (--storage demo-data)? ",
                       "`schemahub demo` writes ./demo-data, ",
                       "`schemahub ingest --storage PATH` writes PATH"],
    "cannot reach": [" product(s) failed: ", ": cannot reach ", " (DNS lookup failed)", " time(s): ",
                     "DNS lookup of ", "check the network and DNS, and the exchange's base URL (--base-url); a later run continues"],
    "no table yet": ["0 rows: no data under ", " yet: `schemahub run --storage ", "` lands some "],
    "geo-blocked": [" product(s) failed: ", "refuses requests from this IP's location",
                    "; deploy in a region it serves (see README)"],
    "banned, later run": [" banned this IP until ", "; sending nothing until then ("],
    "skipped for a ban": ["skipped, ", "nothing landed yet", " banned this IP until "],
    "ban": [": HTTP ", ": banned (Retry-After=", "stopping this exchange: "],
    "lease": ["skipped, ", "nothing landed yet", "lease ", " is held by ", "s more"],
    "checkpoint": [" product(s) failed: ", "rebuild it from the raw chain with `schemahub repair-checkpoint --exchange ",
                   " --dry-run` (then without --dry-run)"],
    "damaged": ["error: ", ": damaged, set aside (", "not a complete gzip object",
                "); restore it from a copy or delete it, then transform "],
    "quarantine": [" raw object(s): ", " rows into ", " quarantined"],
    "mapping": ["unknown key (check the spelling)"],
    "s3 denied": [": cannot ", ": access denied (", "grant this identity ", " on arn:aws:s3:::"],
}
# Messages quoted inline (in backticks) in the section, with their fixed parts.
INLINE = {
    "cannot reach 127.0.0.1:9 (connection refused)": ["cannot reach ", "connection refused"],
    "gave up on <url> after 8 attempts; last error: ...": ["gave up on ", " attempts; last error: "],
    "the credentials are unknown or expired: refresh them (AWS_PROFILE, AWS_ACCESS_KEY_ID)":
        ["the credentials are unknown or expired: refresh them (AWS_PROFILE, AWS_ACCESS_KEY_ID)"],
    "bucket 'x' does not exist: create it, or fix --storage (or SCHEMAHUB_STORAGE)":
        [" does not exist: create it, or fix --storage ", "(or SCHEMAHUB_STORAGE)"],
    "quarantined rows and their reasons: <storage>/quarantine/": ["quarantined rows and their reasons: ", "/quarantine/"],
    "checkpoints/coinbase/BTC-USD.json: wrote lo 12677286, hi 12678487": ["wrote", "lo ", ", hi "],
}


def _source_text() -> str:
    return "\n".join(p.read_text() for p in sorted((ROOT / "functions" / "schemahub").rglob("*.py")))


def _quoted_lines() -> list[str]:
    blocks = re.findall(r"^```text\n(.*?)^```", section("Troubleshooting"), re.S | re.M)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_troubleshooting_is_the_last_section_and_quotes_messages():
    text = README.read_text()
    assert re.findall(r"^## .*", text, re.M)[-2:] == ["## Troubleshooting", "## License"]
    assert len(_quoted_lines()) >= len(MESSAGES)


def test_every_message_quoted_in_troubleshooting_is_printed_by_the_code():
    code = _source_text()
    unmatched = []
    for line in _quoted_lines():
        entries = [name for name, parts in MESSAGES.items() if all(p in line for p in parts)]
        if not entries:
            unmatched.append(line)
    assert not unmatched, f"README quotes messages with no known fixed parts: {unmatched}"
    for name, parts in MESSAGES.items():
        assert any(all(p in line for p in parts) for line in _quoted_lines()), f"{name}: no longer quoted"
        for part in parts:
            assert part in code, f"{name}: {part!r} is quoted in the README but printed nowhere in functions/schemahub"
    body = section("Troubleshooting")
    for quoted, parts in INLINE.items():
        assert f"`{quoted}`" in body, quoted
        for part in parts:
            assert part in quoted and part in code, (quoted, part)
