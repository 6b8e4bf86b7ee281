"""One trade, one row: repeats inside an object and across objects, duplicate JSON keys, nested values.

Ground truth is written by hand from the raw lines: raw keeps every copy (it is the tape), the table
holds each (exchange, product_id, trade_id) once, from the first line of an object and the lowest raw key
across objects. A line two parsers could read two ways never reaches the table.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pyarrow as pa

from schemahub import rawobject
from schemahub.compact import compact
from schemahub.layout import marker_key, quarantine_key
from schemahub.mapping import TableMapping, compile_mapping
from schemahub.query import connect
from schemahub.transform import Transformer
from tests.transform.helpers import put_raw


def _cb(i, *, price="100.50000000", size="0.01000000", side="buy", time=None):
    return json.dumps({"time": time or f"2026-11-29T10:00:{i % 60:02d}.{i:06d}Z", "trade_id": i, "price": price,
                       "size": size, "side": side}, separators=(",", ":")).encode()


def _bn(i, *, price="100.5", qty="0.01"):
    return json.dumps({"id": i, "price": price, "qty": qty, "quoteQty": "1", "time": 1795000000000 + i,
                       "isBuyerMaker": True, "isBestMatch": True}, separators=(",", ":")).encode()


def _table(store):
    return connect(store).execute("SELECT exchange, product_id, trade_id, price, raw_key FROM trades "
                                  "ORDER BY exchange, product_id, trade_id::BIGINT").fetchall()


def _quarantine(store, key):
    return [json.loads(x) for x in store.get(quarantine_key(key)).data.splitlines()]


def test_a_trade_repeated_in_one_page_is_one_row_and_the_repeat_is_counted(store):
    cb = put_raw(store, [_cb(1), _cb(2), _cb(2), _cb(3), _cb(2)])
    bn = put_raw(store, [_bn(7), _bn(8), _bn(8), _bn(9)], exchange="binance", product="BTC-USDT", start=6)
    res = Transformer(store).run()
    rows = _table(store)
    assert [(r[0], r[2]) for r in rows] == [("binance", "7"), ("binance", "8"), ("binance", "9"),
                                            ("coinbase", "1"), ("coinbase", "2"), ("coinbase", "3")]
    assert (res.rows, res.duplicates, res.quarantined) == (3 + 3, 2 + 1, 0)
    assert json.loads(store.get(marker_key(cb)).data)["duplicates"] == 2  # for the audit (issue #12)
    assert json.loads(store.get(marker_key(bn)).data)["duplicates"] == 1
    _, lines = rawobject.decode(store.get(cb).data, cb)
    assert len(lines) == 5  # raw keeps the tape as sent


def test_a_repeat_with_other_values_is_quarantined_and_the_first_line_wins(store):
    key = put_raw(store, [_cb(1), _cb(2, price="100.00000000"), _cb(2, price="999.00000000"), _cb(3)])
    res = Transformer(store).run()
    assert [r[3] for r in _table(store) if r[2] == "2"] == [Decimal("100")]
    assert (res.rows, res.quarantined, res.duplicates) == (3, 1, 0)
    [q] = _quarantine(store, key)
    assert (q["field"], q["line"], q["value"]) == ("trade_id", 4, "2")
    assert "duplicate trade id" in q["reason"] and "line 3" in q["reason"]


def test_a_trade_held_by_two_raw_objects_is_one_row_from_the_lowest_raw_key_once_its_day_is_compacted(store):
    # Two objects that overlap (as an overlapping landing left them): trades 3 and 4 are in both.
    low = put_raw(store, [_cb(i) for i in (1, 2, 3, 4)], start=0)
    high = put_raw(store, [_cb(i) for i in (3, 4, 5, 6)], start=2)
    Transformer(store).run()
    res = compact(store, before=date(2026, 12, 1))  # the day is closed: one compacted copy
    rows = _table(store)
    assert [r[2] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    assert {r[2]: r[4] for r in rows} == {"1": low, "2": low, "3": low, "4": low, "5": high, "6": high}
    assert (res.partitions, res.duplicates) == (1, 2)
    manifest = json.loads(next(store.get(o.key).data for o in store.list("compacted/") if o.key.endswith(".json")))
    assert manifest["duplicates"] == 2  # counted, for the audit


def test_a_line_with_a_duplicate_key_goes_to_quarantine_on_every_read_path(store):
    dup = b'{"time":"2026-11-29T10:00:05Z","trade_id":5,"price":"1","price":"2","size":"0.1","side":"buy"}'
    key = put_raw(store, [_cb(1), dup, _cb(2)])
    res = Transformer(store).run()
    assert (res.rows, res.quarantined) == (2, 1)
    [q] = _quarantine(store, key)
    assert (q["field"], q["line"]) == ("price", 3) and "more than once" in q["reason"]
    assert [r[2] for r in _table(store)] == ["1", "2"]


def test_a_key_written_with_unicode_escapes_is_never_read_by_the_text_path(store):
    # A JSON parser reads "\u0070rice" as "price" (a duplicate); a regex does not: two readings.
    esc = b'{"time":"2026-11-29T10:00:05Z","trade_id":5,"price":"1","\\u0070rice":"2","size":"0.1","side":"buy"}'
    key = put_raw(store, [_cb(1), esc])
    res = Transformer(store).run()
    assert (res.rows, res.quarantined) == (1, 1)
    assert _quarantine(store, key)[0]["line"] == 3


def test_a_nested_value_holding_the_same_key_is_never_read_as_the_field(store):
    nested = b'{"x":{"price":"999999"},"time":"2026-11-29T10:00:07Z","trade_id":7,"price":"100.01","size":"1","side":"sell"}'
    only_nested = b'{"x":{"price":"999999"},"time":"2026-11-29T10:00:08Z","trade_id":8,"size":"1","side":"sell"}'
    floaty = b'{"time":"2026-11-29T10:00:09Z","trade_id":9,"price":100.5,"size":"1","side":"sell"}'  # forces the text path
    key = put_raw(store, [nested, only_nested, floaty])
    res = Transformer(store).run()
    assert (res.rows, res.quarantined) == (2, 1)
    assert {r[2]: r[3] for r in _table(store)} == {"7": Decimal("100.01"), "9": Decimal("100.5")}
    [q] = _quarantine(store, key)
    assert (q["field"], q["reason"], q["line"]) == ("price", "missing", 3)


def test_the_text_path_reads_top_level_values_only():
    m = compile_mapping(TableMapping.model_validate({"columns": {
        "trade_id": {"path": "id", "type": "string"}, "price": {"path": "price", "type": "decimal"},
        "size": {"path": "qty", "type": "decimal"}, "side": {"path": "s", "type": "enum", "map": {"B": "buy"}},
        "trade_time": {"path": "ts", "type": "time", "format": "epoch_ms"}}}))
    lines = [b'{"meta":{"price":"999999","qty":"5"},"id":1,"price":"100.01","qty":"2","s":"B","ts":1795000000000}',
             b'{"id":2,"deep":[{"price":"7"},[{"id":9}]],"price":"100.02","qty":"3","s":"B","ts":1795000000001}',
             b'{"id":3,"meta":{"price":"999999"},"qty":"4","s":"B","ts":1795000000002}',
             b'{"id":4,"price":{"v":"1"},"qty":"4","s":"B","ts":1795000000003}']
    cols, bad = m.apply(pa.array([x.decode() for x in lines]), None)  # the regex path alone
    assert cols["price"].to_pylist()[:2] == [Decimal("100.01"), Decimal("100.02")]
    assert cols["size"].to_pylist()[:2] == [Decimal("2"), Decimal("3")]
    assert cols["trade_id"].to_pylist() == ["1", "2", "3", "4"]
    assert bad.reason.to_pylist() == [None, None, "missing", "a nested value, not a scalar"]
