"""The transform's shortcuts for the usual object decide exactly what the row-by-row checks decide.

The usual object (every value plain, ids rising with time) takes cheaper paths: one regex pass over all of a
column's values joined by newlines, ids printed back from JSON integers, distinct ids read off the time order.
Each case here is an object that looks usual to a shortcut and is not: a value holding a newline (whose pieces
each look plain), a negative JSON integer id, a repeat hidden in newest-first pages, trades of one time whose
ids do not rise. Ground truth is written by hand from the lines.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pyarrow as pa

from schemahub.layout import quarantine_key
from schemahub.mapping import all_match
from schemahub.store.local import LocalStore
from schemahub.transform import Transformer
from tests.transform.helpers import curated_rows, put_raw


def _line(i, *, tid=None, price="100.50", size="0.01", time=None) -> bytes:
    doc = {"time": time or f"2026-11-29T10:00:{i % 60:02d}.{i:06d}Z", "trade_id": i if tid is None else tid,
           "price": price, "size": size, "side": "buy"}
    return json.dumps(doc, separators=(",", ":")).encode()


def _quarantine(store, key) -> list[dict]:
    return [json.loads(x) for x in store.get(quarantine_key(key)).data.splitlines()]


def test_the_joined_pass_sees_a_value_split_by_a_newline_as_plain_and_the_cast_still_refuses_it(tmp_path):
    # Each piece of "1\n2" is a plain decimal, so the joined pass alone would call the column plain.
    assert all_match(pa.array(["1", "1\n2", "3"]), r"[0-9]+") is True
    assert all_match(pa.array(["1", None]), r"[0-9]+") is False and all_match(pa.array([], pa.string()), "x") is False
    store = LocalStore(str(tmp_path))
    lines = [_line(1), _line(2, price="1\n2"), _line(3, size="0.5\n7"), _line(4, time="2026-11-29T10:00:04Z\n2026-11-29T10:00:05Z"),
             _line(5)]
    key = put_raw(store, lines)
    res = Transformer(store).run()
    assert (res.ok, res.rows, res.quarantined) == (True, 2, 3)
    got = {(q["line"], q["field"], q["reason"]) for q in _quarantine(store, key)}
    assert got == {(3, "price", "not a plain decimal number"), (4, "size", "not a plain decimal number"),
                   (5, "trade_time", "not a rfc3339 time")}
    assert sorted(r["trade_id"] for r in curated_rows(store)) == ["1", "5"]


def test_a_negative_json_integer_id_is_not_canonical_though_it_prints_back_the_same(tmp_path):
    store = LocalStore(str(tmp_path))
    key = put_raw(store, [_line(1), _line(2, tid=-2), _line(3)])
    res = Transformer(store).run()
    assert (res.rows, res.quarantined) == (2, 1)
    [q] = _quarantine(store, key)
    assert (q["line"], q["field"], q["value"]) == (3, "trade_id", "-2") and "canonical" in q["reason"]


def test_a_repeat_inside_newest_first_pages_is_still_one_row(tmp_path):
    # Coinbase's order: each page newest first, pages oldest first. Trade 5 is served twice, in two pages.
    store = LocalStore(str(tmp_path))
    pages = [[6, 5, 4], [5, 3, 2, 1]][::-1]
    lines = [_line(i) for page in pages for i in page]
    put_raw(store, lines)
    res = Transformer(store).run()
    assert (res.rows, res.duplicates, res.quarantined) == (6, 1, 0)
    rows = curated_rows(store)
    assert [r["trade_id"] for r in rows] == ["1", "2", "3", "4", "5", "6"]  # in time order


def test_trades_of_one_time_whose_ids_fall_keep_their_line_order_and_are_all_kept(tmp_path):
    # Equal times: the sort keeps line order (ids 3, 2, 1), so ids do not rise in time order; all are distinct.
    store = LocalStore(str(tmp_path))
    t = "2026-11-29T10:00:00.000001Z"
    put_raw(store, [_line(3, time=t), _line(2, time=t), _line(1, time=t), _line(4)])
    res = Transformer(store).run()
    assert (res.rows, res.duplicates, res.quarantined) == (4, 0, 0)
    assert [r["trade_id"] for r in curated_rows(store)] == ["3", "2", "1", "4"]


def test_a_repeat_with_other_values_among_trades_of_one_time_is_quarantined(tmp_path):
    store = LocalStore(str(tmp_path))
    t = "2026-11-29T10:00:00.000001Z"
    key = put_raw(store, [_line(2, time=t), _line(1, time=t), _line(2, time=t, price="101")])
    res = Transformer(store).run()
    assert (res.rows, res.duplicates, res.quarantined) == (2, 0, 1)
    [q] = _quarantine(store, key)
    assert (q["line"], q["field"]) == (4, "trade_id") and "line 2" in q["reason"]
    assert {r["trade_id"]: r["price"] for r in curated_rows(store)} == {"2": Decimal("100.50"), "1": Decimal("100.50")}


def test_a_first_line_nested_deeper_than_pythons_recursion_limit_is_read_not_a_crash_of_the_run(tmp_path):
    # A hostile exchange adds an unmapped key nested 2,000 deep to a trade. Arrow's reader takes it (the object
    # reads as before); json.loads of the first line raised RecursionError, which escaped Transformer.run and
    # stopped every object after this one.
    store = LocalStore(str(tmp_path))
    deep = json.loads(_line(1))
    first = json.dumps(deep, separators=(",", ":")).encode()[:-1] + b',"detail":' + b"[" * 2000 + b"]" * 2000 + b"}"
    put_raw(store, [first, _line(2), _line(3)])
    put_raw(store, [_line(4), _line(5)], start=4)
    res = Transformer(store).run()
    assert (res.ok, res.objects, res.rows, res.quarantined) == (True, 2, 5, 0), (res.failed, res.damaged)
    assert sorted(r["trade_id"] for r in curated_rows(store)) == ["1", "2", "3", "4", "5"]
