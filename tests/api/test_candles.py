"""Candles against bars computed by hand from REAL recorded trades, and the Python API's reads.

The lake is built the way production builds it: the recorded trades' exact bytes in raw objects, turned into the
table by the Transformer with the shipped mappings. The expected bars are computed here, independently, from the
recorded JSON: decimals with Python's Decimal (exact), times by integer arithmetic on the printed text, the taker
side by each exchange's documented rule (Coinbase prints the maker's side; Kraken's b/s is the taker's), and the
candle rules as written in schemahub.candles. Kraken's recording has 182 times shared by several trades, so the
tie rule (the exchange's trade order) decides real bars.
"""

from __future__ import annotations

import calendar
import csv
import io
import json
import os
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal, localcontext
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import schemahub
from schemahub.errors import UsageError
from schemahub.layout import raw_key
from schemahub.rawobject import encode, make_header
from schemahub.sources.jsonsplit import split_records
from schemahub.store.local import LocalStore
from schemahub.transform import Transformer
from tests.conftest import FIXTURES as _SHARED

# The recordings live beside the checkout (../shared, as for every fixture test); a worktree elsewhere names them.
FIXTURES = _SHARED if _SHARED.is_dir() else Path(os.environ.get("SCHEMAHUB_FIXTURES", _SHARED))
ROOT = Path(__file__).resolve().parents[2]
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
STEPS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400}  # seconds, from the issue


@dataclass(frozen=True)
class T:
    trade_id: int
    price: Decimal
    size: Decimal
    side: str
    us: int


# ------------------------------------------------------------------ the recorded trades, read by hand

def _rfc3339_us(text: str) -> int:
    """'2016-05-12T15:04:30.98209Z' -> µs since the epoch (fraction digits vary; padded, not rounded)."""
    whole, _, frac = text.rstrip("Z").partition(".")
    secs = calendar.timegm(datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").timetuple())
    return secs * 10**6 + int((frac + "000000")[:6])


def _coinbase():
    d = FIXTURES / "coinbase_exchange" / "coinbase-pro-node_2017-06-06"
    lines, trades = {}, {}
    for page in sorted(d.glob("run*_page*.body.json")):
        text = page.read_text()
        _, records, spans = split_records(text)
        for rec, (a, b) in zip(records, spans, strict=True):
            lines[rec["trade_id"]] = text[a:b].encode()
            trades[rec["trade_id"]] = T(rec["trade_id"], Decimal(rec["price"]), Decimal(rec["size"]),
                                        {"buy": "sell", "sell": "buy"}[rec["side"]], _rfc3339_us(rec["time"]))
    assert len(trades) == 1500
    return [lines[i] for i in sorted(lines)], [trades[i] for i in sorted(trades)]


def _kraken():
    path = FIXTURES / "kraken" / "nautilus_http_trades_XBTUSDT.json"
    text = path.read_text()
    _, _, spans = split_records(text, ("result", "*"))
    lines = [text[a:b].replace("\n", "").replace("\r", "").encode() for a, b in spans]
    rows = json.loads(text, parse_float=Decimal)["result"]["XBTUSDT"]  # the printed time text, exactly
    trades = [T(r[6], Decimal(r[0]), Decimal(r[1]), {"b": "buy", "s": "sell"}[r[3]], int(r[2] * 10**6))
              for r in rows]
    assert len(trades) == 1000
    return lines, trades


def _put(store, market: tuple[str, str, str], lines, trades, *, cursors):
    exchange, product, symbol = market
    header = make_header(exchange=exchange, product_id=product, symbol=symbol, start=cursors[0], end=cursors[1],
                         count=len(lines), min_id=min(t.trade_id for t in trades),
                         max_id=max(t.trade_id for t in trades), fetched_at="2026-11-30T12:00:00.000000Z",
                         requests=[], base=product.split("-")[0], quote=product.split("-")[1])
    store.put(raw_key(exchange, product, cursors[0]), encode(header, lines))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A lake holding the 1,500 recorded Coinbase BTC-USD trades (2016) and 1,000 Kraken XBTUSDT trades (2025)."""
    root = tmp_path_factory.mktemp("candles") / "lake"
    store = LocalStore(str(root))
    cb_lines, cb = _coinbase()
    _put(store, ("coinbase", "BTC-USD", "BTC-USD"), cb_lines, cb, cursors=(cb[0].trade_id - 1, cb[-1].trade_id))
    kr_lines, kr = _kraken()
    _put(store, ("kraken", "BTC-USDT", "XBTUSDT"), kr_lines, kr, cursors=(kr[0].us * 1000 - 1, kr[-1].us * 1000 + 999))
    res = Transformer(store).run()
    assert res.rows == 2500 and res.quarantined == 0
    return {"root": str(root), ("coinbase", "BTC-USD"): cb, ("kraken", "BTC-USDT"): kr}


# ------------------------------------------------------------------ the bars, by hand

def _bars(trades: list[T], step_s: int, order=lambda t: (t.us, t.trade_id)) -> list[dict]:
    step = step_s * 10**6
    lo, hi = min(t.us for t in trades), max(t.us for t in trades)
    # Ids run 1, 2, 3... on both exchanges: missing ids between two landed trades make every bar touching the
    # times between them incomplete (the recordings have none; tests/api/test_candles_holes.py has some).
    by_id = sorted(trades, key=lambda t: t.trade_id)
    holes = [(a.us, b.us) for a, b in zip(by_id, by_id[1:]) if b.trade_id > a.trade_id + 1]
    groups: dict[int, list[T]] = defaultdict(list)
    for t in trades:
        groups[t.us // step * step].append(t)
    out = []
    with localcontext() as ctx:
        ctx.prec = 80  # nothing rounds
        for start, group in sorted(groups.items()):
            ts = sorted(group, key=order)
            out.append({
                "interval_start": start, "open": ts[0].price, "close": ts[-1].price,
                "high": max(t.price for t in ts), "low": min(t.price for t in ts),
                "volume": sum((t.size for t in ts), Decimal(0)),
                "quote_volume": sum((t.price * t.size for t in ts), Decimal(0)),
                "trades": len(ts),
                "buy_volume": sum((t.size for t in ts if t.side == "buy"), Decimal(0)),
                "sell_volume": sum((t.size for t in ts if t.side == "sell"), Decimal(0)),
                "complete": lo < start and start + step <= hi
                and not any(a < start + step and b >= start for a, b in holes),
            })
    return out


def _us(ts: datetime) -> int:
    return (ts - EPOCH) // timedelta(microseconds=1)


def _got(table: pa.Table) -> list[dict]:
    rows = table.to_pylist()
    for r in rows:
        r["interval_start"] = _us(r["interval_start"])
    return rows


# ------------------------------------------------------------------ tests

@pytest.mark.parametrize("interval", list(STEPS))
@pytest.mark.parametrize(("exchange", "product", "typed"), [("coinbase", "BTC-USD", "BTC-USD"),
                                                            ("kraken", "BTC-USDT", "XBTUSDT")])
def test_candles_match_bars_computed_by_hand_from_recorded_trades(recorded, interval, exchange, product, typed):
    lake = schemahub.open(recorded["root"])
    got = lake.candles(interval, exchange=exchange, product=typed)
    assert got.schema.field("open").type == pa.decimal128(38, 12)
    assert got.schema.field("quote_volume").type == pa.decimal128(38, 20)
    assert got.schema.field("interval_start").type == pa.timestamp("us", tz="UTC")
    assert got.schema.names == ["exchange", "product_id", "interval_start", "open", "high", "low", "close", "volume",
                                "quote_volume", "trades", "buy_volume", "sell_volume", "complete"]
    rows = _got(got)
    assert {(r.pop("exchange"), r.pop("product_id")) for r in rows} == {(exchange, product)}
    want = _bars(recorded[(exchange, product)], STEPS[interval])
    assert rows == want
    assert sum(r["trades"] for r in rows) == len(recorded[(exchange, product)])


def test_the_tie_rule_decides_real_kraken_bars(recorded):
    """Several Kraken trades share a time; open/close among them go by trade id, and that changes real bars."""
    trades = recorded[("kraken", "BTC-USDT")]
    want = _bars(trades, 60)
    # The same bars with ties broken the other way round: some open or close differs, so a query that ignored
    # the tie rule (or got it backwards) could not pass the comparison below.
    reversed_ties = _bars(trades, 60, order=lambda t: (t.us, -t.trade_id))
    decided = [(a["interval_start"], a["open"], a["close"], b["open"], b["close"])
               for a, b in zip(want, reversed_ties, strict=True) if (a["open"], a["close"]) != (b["open"], b["close"])]
    assert len(decided) >= 3, decided
    got = _got(schemahub.open(recorded["root"]).candles("1m", exchange="kraken", product="BTC-USDT"))
    by_start = {r["interval_start"]: r for r in got}
    for start, o, c, _, _ in decided:
        assert (by_start[start]["open"], by_start[start]["close"]) == (o, c)


def test_first_and_last_landed_intervals_are_incomplete(recorded):
    """The recording starts at 15:00:01 and ends at 16:01:50: the bars holding those trades are not whole."""
    got = _got(schemahub.open(recorded["root"]).candles("1m", exchange="coinbase", product="BTC-USD"))
    flags = [r["complete"] for r in got]
    assert flags[0] is False and flags[-1] is False and all(flags[1:-1]) and len(flags) == 62
    [hour] = [r for r in _got(schemahub.open(recorded["root"]).candles("1d", exchange="coinbase")) if r["trades"]]
    assert hour["complete"] is False and hour["trades"] == 1500


def test_trade_order_is_numeric_where_ids_are_numbers(tmp_path):
    """Equal times: id 9 comes before id 10 (text order would say "10" < "9"), and 99 before 100."""
    def line(tid, t, price):
        return json.dumps({"time": t, "trade_id": tid, "price": price, "size": "1.00000000", "side": "sell"},
                          separators=(",", ":")).encode()

    lines = [line(8, "2026-11-30T12:00:59.000001Z", "100.00"), line(9, "2026-11-30T12:01:00Z", "101.00"),
             line(10, "2026-11-30T12:01:00Z", "102.00"), line(11, "2026-11-30T12:01:30Z", "103.00")]
    lines += [line(i, "2026-11-30T12:01:40Z", "104.00") for i in range(12, 99)]
    lines += [line(99, "2026-11-30T12:01:59.999999Z", "105.00"), line(100, "2026-11-30T12:01:59.999999Z", "106.00"),
              line(101, "2026-11-30T12:02:30Z", "107.00")]
    store = LocalStore(str(tmp_path / "lake"))
    trades = [T(json.loads(x)["trade_id"], Decimal(0), Decimal(0), "", 0) for x in lines]
    _put(store, ("coinbase", "BTC-USD", "BTC-USD"), lines, trades, cursors=(7, 101))
    assert Transformer(store).run().rows == len(lines)
    bars = schemahub.open(str(tmp_path / "lake")).candles("1m", exchange="coinbase", product="BTC-USD").to_pylist()
    assert [(b["open"], b["close"], b["trades"], b["complete"]) for b in bars] == [
        (Decimal("100"), Decimal("100"), 1, False),
        (Decimal("101"), Decimal("106"), 92, True),   # opens on id 9, closes on id 100
        (Decimal("107"), Decimal("107"), 1, False),
    ]
    assert all(b["buy_volume"] == b["volume"] and b["sell_volume"] == 0 for b in bars)  # maker sold: taker bought


def test_trades_window_is_start_inclusive_end_exclusive_and_exact(recorded):
    lake = schemahub.open(recorded["root"])
    cb = recorded[("coinbase", "BTC-USD")]
    a, b = cb[100], cb[200]
    start = (EPOCH + timedelta(microseconds=a.us)).isoformat().replace("+00:00", "Z")
    end = EPOCH + timedelta(microseconds=b.us)  # a datetime works as well as text
    got = lake.trades(exchange="coinbase", product="btc-usd", start=start, end=end)
    assert got.schema.field("price").type == pa.decimal128(38, 12)
    assert got.schema.field("trade_time").type == pa.timestamp("us", tz="UTC")
    assert got.column("trade_id").to_pylist() == [str(t.trade_id) for t in cb[100:200]]
    assert got.column("price").to_pylist() == [t.price for t in cb[100:200]]
    assert [_us(x) for x in got.column("trade_time").to_pylist()] == [t.us for t in cb[100:200]]
    # Dates are midnight UTC; the whole recording lies inside 2016-05-12.
    assert lake.trades(exchange="coinbase", start="2016-05-12", end="2016-05-13").num_rows == 1500
    assert lake.trades(exchange="coinbase", start="2016-05-13").num_rows == 0
    # The exchange's own symbol (from the table: it is not in the seed) finds the unified product.
    assert lake.trades(exchange="kraken", product="XBTUSDT").num_rows == 1000
    assert lake.trades().num_rows == 2500


def test_sql_macro_stats_and_errors(recorded):
    lake = schemahub.open(recorded["root"])
    via_sql = lake.sql("SELECT * FROM candles('1h', ex := 'kraken', product := 'BTC-USDT')").to_arrow_table()
    assert via_sql.cast(lake.candles("1h", exchange="kraken").schema).equals(lake.candles("1h", exchange="kraken"))
    stats = lake.stats()
    assert stats.num_rows == 2 and stats.column("rows").to_pylist() == [1500, 1000]
    assert stats.schema.field("first_trade").type == pa.timestamp("us", tz="UTC")
    with pytest.raises(UsageError, match="unknown interval '2m'"):
        lake.candles("2m")
    with pytest.raises(UsageError, match="no product 'DOGE-USD' on coinbase"):
        lake.trades(exchange="coinbase", product="DOGE-USD")
    with pytest.raises(UsageError, match="unknown exchange 'coinbse'"):
        lake.trades(exchange="coinbse")
    with pytest.raises(UsageError, match="not an ISO-8601"):
        lake.trades(start="yesterday")
    with pytest.raises(UsageError, match="is not before end"):
        lake.trades(start="2016-05-13", end="2016-05-12")
    with pytest.raises(UsageError, match="no such folder"):
        schemahub.open(recorded["root"] + "-typo")


def test_open_defaults_to_schemahub_storage(recorded, monkeypatch):
    monkeypatch.setenv("SCHEMAHUB_STORAGE", recorded["root"])
    assert schemahub.open().trades(exchange="kraken").num_rows == 1000


def _cli(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "functions"))
    return subprocess.run([sys.executable, "-m", "schemahub.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_candles_command_in_every_format(recorded, tmp_path):
    want = _bars(recorded[("kraken", "BTC-USDT")], 300)
    base = ["candles", "--storage", recorded["root"], "--exchange", "kraken", "--product", "XBTUSDT",
            "--interval", "5m"]
    r = _cli(*base, "--format", "csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == len(want)
    for row, w in zip(rows, want, strict=True):
        assert (Decimal(row["open"]), Decimal(row["close"]), Decimal(row["quote_volume"]), int(row["trades"])) == (
            w["open"], w["close"], w["quote_volume"], w["trades"])
        assert row["complete"] == str(w["complete"]).lower()
    r = _cli(*base, "--format", "json", "--start", "2025-11-10T18:00:00Z", "--end", "2025-11-10T19:00")
    got = json.loads(r.stdout)
    inside = [w for w in want if 1762797600 * 10**6 <= w["interval_start"] < 1762801200 * 10**6]
    assert [Decimal(g["volume"]) for g in got] == [w["volume"] for w in inside] and len(inside) >= 10
    out = tmp_path / "bars.parquet"
    r = _cli(*base, "--format", "parquet", "--output", str(out))
    assert r.returncode == 0, r.stderr
    assert pq.read_table(out).equals(schemahub.open(recorded["root"]).candles("5m", exchange="kraken"))
    r = _cli(*base, "--format", "table")
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["exchange", "product_id", "interval_start", "open"]
    assert lines[-1] == f"({len(want)} rows)"
    first = lines[2].split()
    # Decimals without their padding zeros, as the exchange printed them (105433.60000 -> 105433.6).
    assert first[4] == str(want[0]["open"].normalize()) and not first[4].endswith("0")
    r = _cli("candles", "--storage", recorded["root"], "--exchange", "kraken", "--product", "NOPE")
    assert r.returncode == 2 and "no product 'NOPE' on kraken" in r.stderr and "Traceback" not in r.stderr


def test_candles_output_file_takes_its_format_from_the_name_as_export_does(recorded, tmp_path):
    """`candles --output bars.parquet` without --format wrote the text table into bars.parquet (exit 0): a file no
    Parquet reader opens. The name decides, as for `export`; an unknown ending asks for --format."""
    base = ["candles", "--storage", recorded["root"], "--exchange", "kraken", "--product", "XBTUSDT", "--interval", "5m"]
    want = schemahub.open(recorded["root"]).candles("5m", exchange="kraken")
    r = _cli(*base, "--output", str(tmp_path / "bars.parquet"))
    assert r.returncode == 0, r.stderr
    assert pq.read_table(tmp_path / "bars.parquet").equals(want)
    r = _cli(*base, "--output", str(tmp_path / "bars.csv"))
    rows = list(csv.DictReader(io.StringIO((tmp_path / "bars.csv").read_text())))
    assert r.returncode == 0 and len(rows) == want.num_rows, r.stderr
    assert [Decimal(x["quote_volume"]) for x in rows] == want.column("quote_volume").to_pylist()
    r = _cli(*base, "--output", str(tmp_path / "bars.json"))
    assert r.returncode == 0 and len(json.loads((tmp_path / "bars.json").read_text())) == want.num_rows, r.stderr
    r = _cli(*base, "--output", str(tmp_path / "bars.txt"))
    assert r.returncode == 2 and "cannot tell the format from the name" in r.stderr, r.stderr
    assert not (tmp_path / "bars.txt").exists()
    r = _cli(*base, "--output", str(tmp_path / "bars.txt"), "--format", "table")  # asked for: the text table
    assert r.returncode == 0 and (tmp_path / "bars.txt").read_text().startswith("exchange  product_id"), r.stderr
