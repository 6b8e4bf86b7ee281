"""No state from one raw object changes how another is read (the cached Arrow read schema)."""

from __future__ import annotations

import json
from decimal import Decimal

import pyarrow as pa

from schemahub.mapping import TableMapping, compile_mapping
from schemahub.transform import Transformer
from tests.transform.helpers import curated_rows, put_raw


def _line(i, *, drop=()):
    d = {"time": f"2026-11-29T10:00:{i % 60:02d}.{i:06d}Z", "trade_id": i, "price": "100.5", "size": "0.01",
         "side": "buy"}
    for k in drop:
        d.pop(k)
    return json.dumps(d, separators=(",", ":")).encode()


def test_an_object_lacking_a_column_does_not_change_how_later_objects_are_read(store):
    put_raw(store, [_line(i, drop=["side"]) for i in range(1, 6)], start=0)   # first object of the run
    put_raw(store, [_line(i) for i in range(6, 11)], start=5)
    res = Transformer(store).run()
    assert (res.rows, res.quarantined) == (5, 5)  # only the first object's rows lack a side
    assert sorted(int(r["trade_id"]) for r in curated_rows(store)) == list(range(6, 11))
    # A warm Lambda: the same Transformer, the same compiled mapping, the next object.
    put_raw(store, [_line(i) for i in range(11, 16)], start=10)
    t = Transformer(store)
    t.transform_object(put_raw(store, [_line(i, drop=["side"]) for i in range(16, 18)], start=15))
    r = t.transform_object(put_raw(store, [_line(i) for i in range(18, 21)], start=17))
    assert (r.rows, r.quarantined) == (3, 0)


def test_a_nested_path_reads_every_object_not_just_the_first():
    m = compile_mapping(TableMapping.model_validate({"columns": {
        "trade_id": {"path": "id", "type": "string"}, "price": {"path": "px.value", "type": "decimal"},
        "size": {"path": "qty", "type": "decimal"},
        "side": {"path": "taker.side", "type": "enum", "map": {"B": "buy", "S": "sell"}},
        "trade_time": {"path": "ts", "type": "time", "format": "epoch_ms"}}}))
    for n, extra in enumerate(["", ',"ccy":"USD"', ""]):
        lines = [f'{{"id":{n * 10 + i},"px":{{"value":"10{i}.5"{extra}}},"qty":"1","taker":{{"side":"B"}},'
                 f'"ts":{1795000000000 + i}}}'.encode() for i in range(3)]
        cols, bad = m.apply(pa.array([x.decode() for x in lines]), b"\n".join(lines) + b"\n")
        assert bad.reason.to_pylist() == [None] * 3, (n, bad.reason.to_pylist())
        assert cols["price"].to_pylist() == [Decimal("100.5"), Decimal("101.5"), Decimal("102.5")]
