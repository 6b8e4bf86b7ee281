"""Values no real trade has, and values that do not convert, are quarantined row by row; the run goes on.

Ground truth by hand: Bitcoin's first block is 2009-01-03, so no crypto trade is older; a raw object
cannot hold a trade made more than a day after it was fetched (fetched_at, from its header, so the
result does not depend on when the transform runs).
"""

from __future__ import annotations

import json

import pytest

from schemahub.layout import quarantine_key
from schemahub.transform import Transformer
from tests.transform.helpers import curated_rows, put_raw

FETCHED = "2026-11-29T12:00:00.123456Z"


def _cb(i, *, price="100.5", size="0.01", time=None):
    return json.dumps({"time": time or f"2026-11-29T10:00:{i % 60:02d}.{i:06d}Z", "trade_id": i, "price": price,
                       "size": size, "side": "buy"}, separators=(",", ":")).encode()


def _okx(i, *, px="100.5", sz="0.01", ts=None):
    return json.dumps({"instId": "BTC-USDT", "side": "buy", "sz": sz, "px": px, "tradeId": str(i),
                       "ts": ts or str(1795000000000 + i)}, separators=(",", ":")).encode()


def _q(store, key):
    return [(r["line"], r["field"], r["value"], r["reason"]) for r in
            map(json.loads, store.get(quarantine_key(key)).data.splitlines())]


def test_prices_sizes_and_times_no_trade_has_are_quarantined_with_field_value_and_reason(store):
    lines = [_cb(1),
             _cb(2, price="0"), _cb(3, price="-5.1"), _cb(4, price="0.000000000000"),
             _cb(5, size="-0.1"), _cb(6, size="0"),
             _cb(7, time="2008-12-31T23:59:59Z"), _cb(8, time="1970-01-01T00:00:00Z"),
             _cb(9, time="2026-11-30T12:00:01Z"),   # > a day after fetched_at
             _cb(10, time="2026-11-30T11:00:00Z"),  # < a day after fetched_at: fine (clock skew, late page)
             _cb(11)]
    key = put_raw(store, lines, fetched=FETCHED)
    res = Transformer(store).run()
    assert (res.rows, res.quarantined) == (3, 8)
    assert sorted(int(r["trade_id"]) for r in curated_rows(store)) == [1, 10, 11]
    got = _q(store, key)
    assert [(line, f, v) for line, f, v, _ in got] == [
        (3, "price", "0"), (4, "price", "-5.1"), (5, "price", "0.000000000000"), (6, "size", "-0.1"), (7, "size", "0"),
        (8, "trade_time", "2008-12-31T23:59:59Z"), (9, "trade_time", "1970-01-01T00:00:00Z"),
        (10, "trade_time", "2026-11-30T12:00:01Z")]
    reasons = [r for *_, r in got]
    assert reasons[:3] == ["not positive (a price must be > 0)"] * 3
    assert reasons[3:5] == ["negative size", "zero size (a trade of nothing)"]
    assert reasons[5] == reasons[6] == "before 2009-01-03 (older than any crypto trade)"
    assert reasons[7].startswith("more than a day after the object was fetched")


@pytest.mark.parametrize("value", ["2026-02-30T00:00:00Z", "0000-01-01T00:00:00Z", "2023-02-29T00:00:00Z",
                                   "2026-11-29T24:00:00Z", "2026-13-01T00:00:00Z"])
def test_an_impossible_trade_time_quarantines_its_row_and_never_stops_the_run(store, value):
    bad = put_raw(store, [_cb(1), _cb(2, time=value), _cb(3)], start=0)
    later = put_raw(store, [_cb(4), _cb(5)], start=3)
    res = Transformer(store).run()
    assert (res.objects, res.rows, res.quarantined) == (2, 4, 1)
    [(line, field, v, _)] = _q(store, bad)
    assert (line, field, v) == (3, "trade_time", value)
    assert {r["raw_key"] for r in curated_rows(store)} == {bad, later}


@pytest.mark.parametrize("ts", ["0", "17950000000001", "179500000000012", "9999999999999999999"])
def test_okx_times_from_1970_or_far_future_or_overflowing_are_quarantined(store, ts):
    key = put_raw(store, [_okx(1), _okx(2, ts=ts), _okx(3)], exchange="okx", product="BTC-USDT")
    res = Transformer(store).run()
    assert (res.rows, res.quarantined) == (2, 1)
    [(line, field, v, _)] = _q(store, key)
    assert (line, field, v) == (3, "trade_time", ts)


def test_okx_non_positive_prices_and_negative_sizes_are_quarantined(store):
    key = put_raw(store, [_okx(1), _okx(2, px="0"), _okx(3, px="-1"), _okx(4, sz="-2"), _okx(5)],
                  exchange="okx", product="BTC-USDT")
    res = Transformer(store).run()
    assert (res.rows, res.quarantined) == (2, 3)
    assert [(f, v) for _, f, v, _ in _q(store, key)] == [("price", "0"), ("price", "-1"), ("size", "-2")]
