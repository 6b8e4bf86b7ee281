"""Candles over landed data with holes, and quote volumes near the limits of their type.

The expected bars are written out by hand below (not computed by the code under test): which 1-minute bars a hole
in the raw chain touches, and the exact Σ price·size of big-number bars.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal, localcontext

import pyarrow as pa
import pytest

import schemahub
from schemahub.errors import QueryError
from schemahub.layout import raw_key
from schemahub.rawobject import encode, make_header
from schemahub.store.local import LocalStore
from schemahub.transform import Transformer


def _line(tid: int, time: str, price: str, size: str = "1") -> bytes:
    return json.dumps({"time": time, "trade_id": tid, "price": price, "size": size, "side": "sell"},
                      separators=(",", ":")).encode()


def _put(store, product: str, lines: list[bytes], start: int, end: int) -> None:
    ids = [json.loads(x)["trade_id"] for x in lines]
    header = make_header(exchange="coinbase", product_id=product, symbol=product, start=start, end=end,
                         count=len(lines), min_id=min(ids), max_id=max(ids), fetched_at="2026-11-30T13:00:00.000000Z",
                         requests=[])
    store.put(raw_key("coinbase", product, start), encode(header, lines))


def _lake(tmp_path, objects: list[tuple[str, list[bytes], int, int]]) -> schemahub.Lake:
    store = LocalStore(str(tmp_path / "lake"))
    for product, lines, start, end in objects:
        _put(store, product, lines, start, end)
    res = Transformer(store).run()
    assert res.quarantined == 0 and res.rows == sum(len(o[1]) for o in objects)
    return schemahub.open(str(tmp_path / "lake"))


def _t(hms: str) -> str:
    return f"2026-11-30T{hms}Z"


def _minute(hm: str) -> datetime:
    return datetime.fromisoformat(f"2026-11-30T{hm}:00+00:00").astimezone(timezone.utc)


# Coinbase numbers each product's trades 1, 2, 3... (contiguous ids). The raw chain below covers (0, 5] and then
# (8, 16]: trades 6-8 were never landed (a hole in the chain, between 12:02:50 and 12:04:30), and the second object
# lacks trade 13 (between 12:07:10 and 12:07:50).
FIRST = [_line(1, _t("12:00:10"), "100"), _line(2, _t("12:00:40"), "101"), _line(3, _t("12:01:20"), "102"),
         _line(4, _t("12:02:10"), "103"), _line(5, _t("12:02:50"), "104")]
SECOND = [_line(9, _t("12:04:30"), "105"), _line(10, _t("12:05:10"), "106"), _line(11, _t("12:06:20"), "107"),
          _line(12, _t("12:07:10"), "108"), _line(14, _t("12:07:50"), "109"), _line(15, _t("12:08:30"), "110"),
          _line(16, _t("12:09:10"), "111")]
# 1-minute bars, by hand: (start, trades, complete).
#   12:00 holds the first landed trade: incomplete (there may be earlier trades in it, not landed yet).
#   12:02 ends at trade 5 and 12:04 starts at trade 9: trades 6-8 lie between 12:02:50 and 12:04:30, so they may
#         belong to either bar (or 12:03, which has no trades and so no row): both incomplete.
#   12:07 holds trades 12 and 14 but not 13: incomplete.
#   12:09 holds the last landed trade: incomplete.
HOLED_1M = [("12:00", 2, False), ("12:01", 1, True), ("12:02", 2, False), ("12:04", 1, False), ("12:05", 1, True),
            ("12:06", 1, True), ("12:07", 2, False), ("12:08", 1, True), ("12:09", 1, False)]


def test_bars_that_a_hole_in_the_landed_data_touches_are_incomplete(tmp_path):
    lake = _lake(tmp_path, [("BTC-USD", FIRST, 0, 5), ("BTC-USD", SECOND, 8, 16)])
    bars = lake.candles("1m", exchange="coinbase", product="BTC-USD").to_pylist()
    assert [(b["interval_start"], b["trades"], b["complete"]) for b in bars] == [
        (_minute(hm), n, c) for hm, n, c in HOLED_1M]
    # A window that starts after the hole still sees it (the neighbour before the window is landed data too).
    bars = lake.candles("1m", exchange="coinbase", product="BTC-USD", start=_t("12:04:00")).to_pylist()
    assert [(b["interval_start"], b["complete"]) for b in bars][:2] == [(_minute("12:04"), False),
                                                                        (_minute("12:05"), True)]
    # 5-minute bars: 12:00-12:05 holds the first trade and the chain hole; 12:05-12:10 the missing 13 and the last.
    assert [b["complete"] for b in lake.candles("5m", exchange="coinbase").to_pylist()] == [False, False]


def test_the_same_trades_without_holes_are_complete_inside(tmp_path):
    """Control: ids 1..16 all landed, chained (0, 5] (5, 16]: only the first and last bars are incomplete."""
    every = FIRST + [_line(i, _t(f"12:0{3 + (i - 6) // 3}:{10 * ((i - 6) % 3) + 5:02d}"), "104") for i in (6, 7, 8)]
    rest = sorted(SECOND + [_line(13, _t("12:07:30"), "108")], key=lambda x: json.loads(x)["trade_id"])
    lake = _lake(tmp_path, [("BTC-USD", every, 0, 8), ("BTC-USD", rest, 8, 16)])
    bars = lake.candles("1m", exchange="coinbase", product="BTC-USD").to_pylist()
    flags = [b["complete"] for b in bars]
    assert len(bars) == 10 and flags[0] is False and flags[-1] is False and all(flags[1:-1]), bars


# ------------------------------------------------------------------ quote volume: exact, and never wrapped

def test_quote_volume_is_exact_far_above_1e14(tmp_path):
    """A 1-hour BTC-IDR bar: prices around 1.5e9, 1e5 BTC in two minutes -> Σ price·size ~ 1.5e14, more than the
    14 integer digits a DECIMAL(38,24) holds; every decimal place of the inputs is kept."""
    trades = [_line(1, _t("12:00:01"), "1500000000.12345678", "60000.12345678"),
              _line(2, _t("12:01:02"), "1500000001.00000001", "40000.00000001"),
              _line(3, _t("12:02:03"), "0.000000000001", "0.00000001")]  # 20 places: the finest the column keeps
    lake = _lake(tmp_path, [("BTC-IDR", trades, 0, 3)])
    [bar] = lake.candles("1h", exchange="coinbase", product="BTC-IDR").to_pylist()
    with localcontext() as ctx:
        ctx.prec = 80
        want = (Decimal("1500000000.12345678") * Decimal("60000.12345678")
                + Decimal("1500000001.00000001") * Decimal("40000.00000001") + Decimal("1E-20"))
    assert want > Decimal("1.5e14") and bar["quote_volume"] == want
    assert str(want) == "150000185232592.42244158652796850001"  # every digit: nothing rounded
    assert lake.candles("1m", exchange="coinbase").schema.field("quote_volume").type == pa.decimal128(38, 20)
    # SQL over the table sees the same exact value through the macro.
    [(qv,)] = lake.sql("SELECT quote_volume FROM candles('1d', ex := 'coinbase')").fetchall()
    assert qv == want


def test_a_day_of_big_minutes_is_exact_far_beyond_1e14(tmp_path):
    """1,000 minutes with one trade worth 9.9e13 each: the 1d bar sums 9.9e16 exactly (the old DECIMAL(38,24) sum
    stopped at 1e14), and each 1m bar is 9.9e13."""
    trades = [_line(i, f"2026-11-30T{i // 60:02d}:{i % 60:02d}:30Z", "99000000000.000000000001", "1000")
              for i in range(1, 1001)]
    lake = _lake(tmp_path, [("BTC-IDR", trades, 0, 1000)])
    [day] = lake.candles("1d", exchange="coinbase", product="BTC-IDR").to_pylist()
    assert day["quote_volume"] == Decimal("99000000000000000.000001") and day["trades"] == 1000
    minutes = lake.candles("1m", exchange="coinbase", product="BTC-IDR").column("quote_volume").to_pylist()
    assert minutes == [Decimal("99000000000000.000000001")] * 1000


def test_a_minute_worth_more_than_an_exact_sum_holds_fails_naming_the_bar(tmp_path):
    """Two trades worth 9.9e13 in one minute (1.98e14): DuckDB's exact sum stops at 1e14. The error names the
    bar and the minute, never a wrapped, rounded or float value."""
    trades = [_line(1, _t("11:00:00"), "1", "1"), _line(2, _t("12:34:01"), "99000000000", "1000"),
              _line(3, _t("12:34:02"), "99000000000", "1000"), _line(4, _t("13:00:00"), "1", "1")]
    lake = _lake(tmp_path, [("BTC-IDR", trades, 0, 4)])
    for interval, bar in (("1m", "2026-11-30T12:34:00Z"), ("1h", "2026-11-30T12:00:00Z")):
        with pytest.raises(QueryError, match=rf"^candles: quote_volume of coinbase BTC-IDR {interval} bar {bar}: "
                                             r"the minute 2026-11-30T12:34:00Z is worth about 1.98e\+14 quote units"):
            lake.candles(interval, exchange="coinbase", product="BTC-IDR")
    assert lake.candles("1m", exchange="coinbase", end=_t("12:00:00")).num_rows == 1  # the rest still reads


def test_a_quote_volume_with_more_places_than_the_column_fails_naming_the_bar(tmp_path):
    """12-place price x 12-place size has 24 places: kept as 20 it would be rounded, so it is refused instead."""
    trades = [_line(1, _t("12:00:01"), "0.000000000003", "0.000000000007"), _line(2, _t("12:01:00"), "1", "1")]
    lake = _lake(tmp_path, [("PEPE-ETH", trades, 0, 2)])
    with pytest.raises(QueryError, match=r"quote_volume of coinbase PEPE-ETH 1m bar 2026-11-30T12:00:00Z has more "
                                         r"than 20 decimal places"):
        lake.candles("1m", exchange="coinbase")


def test_the_status_page_names_the_bar_too(tmp_path):
    from schemahub.web.status import candles_payload

    trades = [_line(1, _t("12:34:01"), "99000000000", "1000"), _line(2, _t("12:34:02"), "99000000000", "1000")]
    lake = _lake(tmp_path, [("BTC-IDR", trades, 0, 2)])
    with pytest.raises(QueryError, match=r"^candles: quote_volume of coinbase BTC-IDR 5m bar 2026-11-30T12:30:00Z: "):
        candles_payload(lake.store, exchange="coinbase", product="BTC-IDR", interval="5m")
