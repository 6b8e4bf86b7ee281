"""Transform behaviour: quarantine, determinism, day split, incremental runs, rebuild and dry run."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from schemahub.layout import marker_key, quarantine_key
from schemahub.store.local import LocalStore
from schemahub.transform import Transformer
from tests.transform.helpers import curated_rows, put_raw


def _line(i, *, price="100.50000000", size="0.01000000", side="buy", time=None, tid=None, drop=None):
    d = {"time": time or f"2026-11-29T10:00:{i % 60:02d}.{i:06d}Z", "trade_id": i if tid is None else tid,
         "price": price, "size": size, "side": side}
    for k in drop or ():
        d.pop(k)
    return json.dumps(d, separators=(",", ":")).encode()


def test_bad_rows_go_to_quarantine_with_reasons_and_good_rows_land(store):
    good = [_line(i) for i in range(1, 21)]
    bad = [
        (_line(101, price="abc"), "price", "not a plain decimal number"),
        (_line(102, price="1e5"), "price", "not a plain decimal number"),
        (_line(103, size="0.0000000000001"), "size", "more than 12 decimals (never rounded)"),
        (_line(104, drop=["trade_id"]), "trade_id", "missing"),
        (_line(105, drop=["time"]), "trade_time", "missing"),
        (_line(106, side="hold"), "side", "unknown value"),
        (_line(107, time="yesterday"), "trade_time", "not a rfc3339 time"),
        (_line(108).replace(b'"price":"100.50000000"', b'"price":null'), "price", "missing"),
    ]
    lines = good[:10] + [b for b, _, _ in bad] + good[10:]
    key = put_raw(store, lines)
    res = Transformer(store).run()
    assert (res.rows, res.quarantined) == (20, len(bad))
    assert sorted(int(r["trade_id"]) for r in curated_rows(store)) == list(range(1, 21))
    q = [json.loads(x) for x in store.get(quarantine_key(key)).data.splitlines()]
    assert [(r["field"], r["reason"]) for r in q] == [(f, r) for _, f, r in bad]
    assert [r["line"] for r in q] == list(range(12, 12 + len(bad)))  # header is line 1
    assert [r["raw"].encode() for r in q] == [b for b, _, _ in bad]
    assert all(r["raw_key"] == key for r in q)


def test_same_raw_object_transforms_to_byte_identical_files(tmp_path):
    store = LocalStore(str(tmp_path))
    put_raw(store, [_line(i) for i in range(1, 500)])
    first = Transformer(store).run()
    files = {o.key: store.get(o.key).data for o in store.list("curated/")}
    again = Transformer(store).run(rebuild=True)
    assert first.rows == again.rows == 499
    assert {o.key: store.get(o.key).data for o in store.list("curated/")} == files


def test_an_object_spanning_two_utc_days_writes_one_file_per_day(store):
    lines = [_line(1, time="2026-11-28T23:59:59.999999Z"), _line(2, time="2026-11-29T00:00:00Z"), _line(3, time="2026-11-29T00:00:01Z")]
    put_raw(store, lines)
    res = Transformer(store).run()
    keys = sorted(o.key for o in store.list("curated/"))
    assert res.files == 2 and [k.split("/")[3] for k in keys] == ["date=2026-11-28", "date=2026-11-29"]
    rows = curated_rows(store)
    assert sorted(str(r["date"]) for r in rows) == ["2026-11-28", "2026-11-29", "2026-11-29"]


def test_incremental_runs_process_only_new_objects_and_dry_run_writes_nothing(store):
    put_raw(store, [_line(i) for i in range(1, 11)], start=0)
    t = Transformer(store)
    assert len(t.run(dry_run=True).pending) == 1 and list(store.list("curated/")) == []
    assert t.run().objects == 1
    assert t.run().objects == 0
    put_raw(store, [_line(i) for i in range(11, 21)], start=10)
    r = t.run()
    assert r.objects == 1 and r.rows == 10
    assert t.run(rebuild=True).objects == 2
    assert len(curated_rows(store)) == 20


def test_crash_after_outputs_before_marker_reprocesses_without_duplicates(tmp_path):
    store = LocalStore(str(tmp_path))
    key = put_raw(store, [_line(i) for i in range(1, 50)])
    Transformer(store).run()
    store.delete(marker_key(key))  # as if the run died before writing its marker
    assert Transformer(store).run().objects == 1
    assert len(curated_rows(store)) == 49


def test_curated_rows_keep_exact_decimals_and_sum_without_casts(store):
    from schemahub.query import connect

    put_raw(store, [_line(1, price="65000.12345678", size="0.00000001"), _line(2, price="0.000000000001", size="99999999.99999999")])
    Transformer(store).run()
    total = connect(store).execute("SELECT sum(price * size), typeof(sum(price * size)) FROM trades").fetchone()
    assert total[0] == Decimal("65000.12345678") * Decimal("0.00000001") + Decimal("0.000000000001") * Decimal("99999999.99999999")
    assert total[1] == "DECIMAL(38,24)"


@pytest.mark.parametrize("fmt,text,micros", [
    ("epoch_ms", "1634943040123", 1634943040123000),
    ("epoch_us", "1735689600010866", 1735689600010866),
    ("epoch_ns", "1762820035982277754", 1762820035982277),
    ("epoch_s", "1710327617", 1710327617000000),
    ("float_s", "1762820035.9822777", 1762820035982277),
    ("float_s", "1616666442.304882029", 1616666442304882),
    ("rfc3339", "2016-05-12T15:04:30.98209Z", 1463065470982090),
    ("rfc3339", "2016-05-12T15:04:30.982090123Z", 1463065470982090),
])
def test_time_formats_convert_exactly(fmt, text, micros):
    import pyarrow as pa

    from schemahub.mapping import _time_micros

    out, bad = _time_micros(pa.array([text]), fmt)
    assert out.to_pylist() == [micros] and bad.to_pylist() == [False]


def test_nested_keys_and_number_values_convert_identically_on_both_extraction_paths():
    import pyarrow as pa

    from schemahub.mapping import TableMapping, compile_mapping

    m = compile_mapping(TableMapping.model_validate({"columns": {
        "trade_id": {"path": "id", "type": "string"}, "price": {"path": "px.value", "type": "decimal"},
        "size": {"path": "qty", "type": "decimal"},
        "side": {"path": "taker.side", "type": "enum", "map": {"B": "buy", "S": "sell"}},
        "trade_time": {"path": "ts", "type": "time", "format": "float_s"}}}))
    lines = [b'{"id":1,"px":{"ccy":"USD","value":"100.5"},"qty":2.12345678,"taker":{"side":"B"},"ts":1762820035.9822777}',
             b'{"id":2,"px":{"value":"101.25","ccy":"USD"},"qty":3,"taker":{"side":"S"},"ts":1762820036.5}']
    arr = pa.array([x.decode() for x in lines])
    fast, bad_fast = m.apply(arr, b"\n".join(lines))   # Arrow JSON reader where exact
    slow, bad_slow = m.apply(arr, None)                # regex on the source text only
    for cols in (fast, slow):
        assert cols["price"].to_pylist() == [Decimal("100.5"), Decimal("101.25")]
        assert cols["size"].to_pylist() == [Decimal("2.12345678"), Decimal("3")]  # JSON numbers, never through float
        assert cols["side"].to_pylist() == ["buy", "sell"]
        assert [t.timestamp() * 0 + t.microsecond for t in cols["trade_time"].to_pylist()] == [982277, 500000]
    assert bad_fast.reason.null_count == bad_slow.reason.null_count == 2
