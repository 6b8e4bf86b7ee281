"""Archive CSV rows (raw objects whose header says "lines": "csv") map by column index to the same unified rows
as the REST path: exact decimals, taker side from isBuyerMaker, ms or µs by the digit count.

The sample (fixtures/, see make_sample.py) is the real recorded Binance REST rows printed as the archive prints
them. Expectations come from the recorded JSON by Binance's documented rules, from the REST mapping of the same
JSON, and from values written out by hand below.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from schemahub import rawobject
from schemahub.errors import ConfigError
from schemahub.layout import quarantine_key, raw_key
from schemahub.sources.spec import load_exchange
from schemahub.store.local import LocalStore
from schemahub.transform import Transformer
from tests.conftest import FIXTURES, ROOT
from tests.transform.helpers import curated_rows, put_raw

HERE = Path(__file__).resolve().parent / "fixtures"
RECORDED = [FIXTURES / "binance" / f for f in ("nautilus_api_v3_trades_BTCUSDT.json",
                                               "nautilus_api_v3_historicalTrades_BTCUSDT.json")]
FETCHED = "2026-12-01T06:00:00Z"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
KEYS = ("trade_id", "price", "size", "side", "trade_time")


def sample(unit: str) -> list[bytes]:
    return (HERE / f"BTCUSDT-trades-sample-{unit}.csv").read_bytes().splitlines()


def _ids(rows: list[bytes]) -> list[int]:
    out = []
    for r in rows:
        cell = r.split(b",")[0]
        if cell.isdigit():
            out.append(int(cell))
    return out


def put_csv(store, rows: list[bytes], *, start: int | None = None, min_id=None, max_id=None, exchange="binance",
            product="BTC-USDT", symbol="BTCUSDT") -> str:
    """A raw object of archive rows, as the archive landing writes one (header names the file, sha256, rows)."""
    ids = _ids(rows)
    lo = min(ids) if min_id is None and ids else min_id
    hi = max(ids) if max_id is None and ids else max_id
    start = (lo - 1) if start is None else start
    header = rawobject.make_header(
        exchange=exchange, product_id=product, symbol=symbol, start=start, end=hi, count=len(rows), min_id=lo,
        max_id=hi, fetched_at=FETCHED, requests=[], lines="csv",
        source={"file": f"{symbol}-trades-2021-10-22.zip", "sha256": "0" * 64, "rows": [1, len(rows)]})
    key = raw_key(exchange, product, start)
    store.put(key, rawobject.encode(header, rows))
    return key


def _by_id(store) -> dict[str, dict]:
    return {r["trade_id"]: {k: r[k] for k in KEYS} for r in curated_rows(store)}


def _quarantine(store, key) -> list[dict]:
    return [json.loads(x) for x in store.get(quarantine_key(key)).data.splitlines()]


def _wire_expect() -> dict[str, dict]:
    """The recorded JSON by Binance's documented rules: decimals from the strings, isBuyerMaker true = taker sold."""
    out = {}
    for f in RECORDED:
        for w in json.loads(f.read_text()):
            out[str(w["id"])] = {"trade_id": str(w["id"]), "price": Decimal(w["price"]), "size": Decimal(w["qty"]),
                                 "side": "sell" if w["isBuyerMaker"] else "buy",
                                 "trade_time": EPOCH + timedelta(milliseconds=w["time"])}
    return out


def _rest_rows(tmp_path) -> dict[str, dict]:
    """The same recorded trades through the REST mapping (JSON lines, as landing stores them)."""
    lines = []
    for f in RECORDED:
        lines += [json.dumps(w, separators=(",", ":")).encode() for w in json.loads(f.read_text())]
    store = LocalStore(str(tmp_path / "rest"))
    put_raw(store, lines, exchange="binance", product="BTC-USDT", start=1111468872)
    res = Transformer(store).run()
    assert res.ok and res.rows == 20 and res.quarantined == 0
    return _by_id(store)


@pytest.mark.parametrize("unit", ["ms", "us"])
def test_the_sample_maps_to_the_same_rows_as_the_recorded_rest_trades(tmp_path, unit):
    store = LocalStore(str(tmp_path / "csv"))
    put_csv(store, sample(unit))
    res = Transformer(store).run()
    assert res.ok and res.rows == 20 and res.quarantined == 0 and res.duplicates == 0
    got = _by_id(store)
    assert got == _wire_expect()
    assert got == _rest_rows(tmp_path)
    assert all(str(r["price"]).endswith(("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")) for r in got.values())
    row = curated_rows(store)[0]
    assert (row["exchange"], row["product_id"], row["symbol"], row["base_asset"], row["quote_asset"]) == (
        "binance", "BTC-USDT", "BTCUSDT", "BTC", "USDT")


def test_hand_checked_values(tmp_path):
    store = LocalStore(str(tmp_path))
    put_csv(store, sample("ms"))
    Transformer(store).run()
    got = _by_id(store)
    # 1111471896,60814.78000000,0.00034000,20.67702520,1634943219887,True,True
    assert got["1111471896"] == {"trade_id": "1111471896", "price": Decimal("60814.78"), "size": Decimal("0.00034"),
                                 "side": "sell",
                                 "trade_time": datetime(2021, 10, 22, 22, 53, 39, 887000, tzinfo=timezone.utc)}
    # 1111471905,60814.79000000,0.06902000,4197.43680580,1634943220769,False,True
    assert got["1111471905"] == {"trade_id": "1111471905", "price": Decimal("60814.79"), "size": Decimal("0.06902"),
                                 "side": "buy",
                                 "trade_time": datetime(2021, 10, 22, 22, 53, 40, 769000, tzinfo=timezone.utc)}
    # 1111468873,60650.00000000,0.02924000,...,1634942949263,True,True
    assert got["1111468873"]["trade_time"] == datetime(2021, 10, 22, 22, 49, 9, 263000, tzinfo=timezone.utc)
    assert got["1111468873"]["price"] == Decimal("60650")


def test_a_13_digit_time_is_ms_and_a_16_digit_time_is_us(tmp_path):
    rows = [b"1,100.5,0.1,10.05,1735689599999,True,True",         # 2024-12-31T23:59:59.999Z in ms
            b"2,100.5,0.1,10.05,1735689600000001,False,True",     # 2025-01-01T00:00:00.000001Z in µs
            b"3,100.5,0.1,10.05,17356896000000,False,True"]       # 14 digits: neither
    store = LocalStore(str(tmp_path))
    key = put_csv(store, rows)
    res = Transformer(store).run()
    assert res.rows == 2 and res.quarantined == 1
    got = _by_id(store)
    assert got["1"]["trade_time"] == datetime(2024, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc)
    assert got["2"]["trade_time"] == datetime(2025, 1, 1, 0, 0, 0, 1, tzinfo=timezone.utc)
    [q] = _quarantine(store, key)
    assert (q["line"], q["field"], q["value"]) == (4, "trade_time", "17356896000000")
    assert q["raw"] == rows[2].decode()


def test_true_means_the_taker_sold_false_that_he_bought(tmp_path):
    rows = [b"1,100,1,100,1634942949263,True,True", b"2,100,1,100,1634942949263,False,True",
            b"3,100,1,100,1634942949263,true,True"]  # the archive writes True/False: anything else is not read
    store = LocalStore(str(tmp_path))
    key = put_csv(store, rows)
    res = Transformer(store).run()
    got = _by_id(store)
    assert (got["1"]["side"], got["2"]["side"]) == ("sell", "buy")
    assert res.quarantined == 1
    [q] = _quarantine(store, key)
    assert (q["line"], q["field"], q["reason"], q["value"]) == (4, "side", "unknown value", "true")


def test_a_header_row_is_not_a_trade_and_not_an_error(tmp_path):
    head = b"id,price,qty,quoteQty,time,isBuyerMaker,isBestMatch"
    store = LocalStore(str(tmp_path))
    key = put_csv(store, [head, *sample("ms")])
    res = Transformer(store).run()
    assert res.ok and res.rows == 20 and res.quarantined == 0
    assert _by_id(store) == _wire_expect()
    assert not store.exists(quarantine_key(key))


def test_a_header_row_in_binance_futures_spelling_is_dropped_too(tmp_path):
    head = b"id,price,qty,quote_qty,time,is_buyer_maker,is_best_match"
    store = LocalStore(str(tmp_path))
    put_csv(store, [head, *sample("us")[:3]])
    res = Transformer(store).run()
    assert res.ok and res.rows == 3 and res.quarantined == 0


def test_a_row_with_the_wrong_number_of_columns_is_quarantined_with_its_line_and_the_rest_proceed(tmp_path):
    rows = sample("ms")
    rows[3] = b"1111468876,60650.00000000,0.00738000,447.59700000,1634942949873,True"          # 6 columns
    rows[7] = b"1111468880,60654.99000000,0.00623000,377.88058770,1634942949986,True,True,x"   # 8 columns
    rows[9] = b""                                                                               # an empty line
    store = LocalStore(str(tmp_path))
    key = put_csv(store, rows)
    res = Transformer(store).run()
    assert res.ok and res.rows == 17 and res.quarantined == 3
    got = _by_id(store)
    expect = _wire_expect()
    for tid in ("1111468876", "1111468880", "1111468882"):
        expect.pop(tid)
    assert got == expect
    q = {r["line"]: r for r in _quarantine(store, key)}
    assert sorted(q) == [5, 9, 11]  # line 1 is the header
    assert q[5]["raw"] == rows[3].decode() and "6 columns" in q[5]["reason"] and "7" in q[5]["reason"]
    assert q[9]["raw"] == rows[7].decode() and "8 columns" in q[9]["reason"]
    assert q[11]["raw"] == "" and "1 column" in q[11]["reason"]
    assert {r["field"] for r in q.values()} == {"line"}


@pytest.mark.parametrize("price,size", [("6.065e4", "0.02924000"), ("60650.00000000", "1e-5"), ("1E5", "1"),
                                        ("inf", "1"), ("nan", "1"), ("0x10", "1"), ("+60650", "1"),
                                        ('"60650.0"', "1"), (" 60650.0", "1")])
def test_values_pyarrow_would_read_as_numbers_but_the_archive_never_prints_are_quarantined(tmp_path, price, size):
    good = sample("ms")[:2]
    bad = f"1111468875,{price},{size},667.15011000,1634942949583,False,True".encode()
    store = LocalStore(str(tmp_path))
    key = put_csv(store, [*good, bad])
    res = Transformer(store).run()
    assert res.rows == 2 and res.quarantined == 1
    [q] = _quarantine(store, key)
    field = "price" if size in ("0.02924000", "1") else "size"
    assert q["field"] == field and q["value"] == (price if field == "price" else size)
    assert q["reason"] == "not a plain decimal number" and q["line"] == 4


def test_impossible_values_are_quarantined_as_on_the_rest_path(tmp_path):
    rows = [b"1,0.00000000,1,0,1634942949263,True,True",     # a price of zero
            b"2,100,0.00000000,0,1634942949263,True,True",   # a size of zero
            b"3,100,1,100,,True,True",                       # no time
            b"4,100,1,100,1134942949263,True,True",          # 2005: before any crypto trade
            b"5,100.0000000000001,1,100,1634942949263,True,True",  # 13 decimals: never rounded
            b"6,100,1,100,1634942949263,True,True"]
    store = LocalStore(str(tmp_path))
    key = put_csv(store, rows)
    res = Transformer(store).run()
    assert res.rows == 1 and res.quarantined == 5 and list(_by_id(store)) == ["6"]
    q = {r["line"]: (r["field"], r["reason"]) for r in _quarantine(store, key)}
    assert q[2] == ("price", "not positive (a price must be > 0)")
    assert q[3] == ("size", "zero size (a trade of nothing)")
    assert q[4] == ("trade_time", "missing")
    assert q[5][0] == "trade_time" and "2009" in q[5][1]
    assert q[6] == ("price", "more than 12 decimals (never rounded)")


def test_the_object_is_checked_against_its_header_as_on_the_rest_path(tmp_path):
    store = LocalStore(str(tmp_path))
    key = put_csv(store, sample("ms"), max_id=1111471999)  # the header claims ids the rows do not hold
    res = Transformer(store).run()
    assert key in res.damaged and "1111471905" in res.damaged[key] and "1111471999" in res.damaged[key]
    assert curated_rows(store) == []


def test_a_csv_object_of_an_exchange_without_an_archive_table_fails_clearly(tmp_path):
    store = LocalStore(str(tmp_path))
    key = put_csv(store, [b"1,100,1,100,1634942949263,True,True"], exchange="coinbase", product="BTC-USD",
                  symbol="BTC-USD")
    res = Transformer(store).run()
    assert key in res.failed and "archive" in res.failed[key] and "coinbase.yaml" in res.failed[key]
    assert curated_rows(store) == []


def test_the_same_exchange_reads_json_and_csv_objects_side_by_side(tmp_path):
    store = LocalStore(str(tmp_path))
    put_csv(store, sample("us")[:10])
    rest = [json.dumps(w, separators=(",", ":")).encode() for w in json.loads(RECORDED[1].read_text())]
    put_raw(store, rest, exchange="binance", product="BTC-USDT", start=1111471895)
    res = Transformer(store).run()
    assert res.ok and res.rows == 20 and res.quarantined == 0
    assert _by_id(store) == _wire_expect()


CONFIG_CASES = [
    ("index as a name", "trade_id: {column: 0, type: string}", "trade_id: {column: id, type: string}",
     r"archive\.table\.columns\.trade_id\.column"),
    ("negative index", "price: {column: 1, type: decimal}", "price: {column: -1, type: decimal}",
     r"archive\.table\.columns\.price\.column"),
    ("index past the row", "size: {column: 2, type: decimal}", "size: {column: 9, type: decimal}",
     r"archive\.table.*size.*column 9.*7 columns"),
    ("path instead of column", "price: {column: 1, type: decimal}", "price: {path: price, type: decimal}",
     r"archive\.table\.columns\.price"),
    ("boolean enum keys", '{"True": sell, "False": buy}', "{True: sell, False: buy}",
     r"archive\.table\.columns\.side\.map.*quotes"),
    ("price not decimal", "price: {column: 1, type: decimal}", "price: {column: 1, type: string}",
     r"archive\.table.*price must be of type decimal"),
    ("missing width", "    width: 7\n", "", r"archive\.table\.width"),
    ("unknown key", "    width: 7\n", "    width: 7\n    header: true\n", r"archive\.table\.header.*unknown key"),
]


@pytest.mark.parametrize("name,old,new,pattern", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_a_malformed_archive_table_fails_at_load_naming_file_line_and_key(tmp_path, name, old, new, pattern):
    import re

    shutil.copytree(ROOT / "mappings", tmp_path / "m")
    f = tmp_path / "m" / "exchanges" / "binance.yaml"
    text = f.read_text()
    archive = text.index("\narchive:")
    assert old in text[archive:], old
    f.write_text(text[:archive] + text[archive:].replace(old, new, 1))
    with pytest.raises(ConfigError, match=r"binance\.yaml:\d+: ") as e:
        load_exchange("binance", str(tmp_path / "m"))
    assert re.search(pattern, str(e.value)), str(e.value)


def test_the_shipped_binance_archive_table_loads():
    spec = load_exchange("binance")
    cols = spec.archive.table.columns
    assert spec.archive.table.width == 7
    assert (cols["trade_id"].column, cols["price"].column, cols["size"].column, cols["trade_time"].column,
            cols["side"].column) == (0, 1, 2, 4, 5)
    assert cols["side"].map == {"True": "sell", "False": "buy"}


def test_a_carriage_return_inside_a_row_is_quarantined_and_crlf_line_ends_are_read(tmp_path):
    rows = [r + b"\r" for r in sample("ms")[:4]]                                  # CRLF line ends
    rows[1] = b"1111468874,60650.01000000,0.00082000,49.73300820\r,1634942949287,False,True"
    store = LocalStore(str(tmp_path))
    key = put_csv(store, rows)
    res = Transformer(store).run()
    assert res.ok and res.rows == 3 and res.quarantined == 1
    [q] = _quarantine(store, key)
    assert q["line"] == 3 and q["field"] == "line" and "carriage return" in q["reason"]
    assert sorted(_by_id(store)) == ["1111468873", "1111468875", "1111468876"]


def test_a_line_that_is_not_utf8_text_sets_the_object_aside_naming_the_line(tmp_path):
    rows = sample("ms")[:3]
    rows[2] = b"1111468875,60650.01\xff000000,0.01100000,667.15011000,1634942949583,False,True"
    store = LocalStore(str(tmp_path))
    key = put_csv(store, rows)
    res = Transformer(store).run()
    assert key in res.damaged and "trade line 3" in res.damaged[key] and "UTF-8" in res.damaged[key]
