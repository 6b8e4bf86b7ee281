"""Malformed table mappings fail at load time naming file, line and key."""

from __future__ import annotations

import shutil

import pytest

from schemahub.errors import ConfigError
from schemahub.sources.spec import load_exchange
from tests.conftest import ROOT

CASES = [
    ("unknown type", "trade_id: {path: trade_id, type: string}", "trade_id: {path: trade_id, type: text}", r"table.columns.trade_id"),
    ("typo in key", "price: {path: price, type: decimal}", "price: {pth: price, type: decimal}", r"table.columns.price.*(unknown key|pth)"),
    ("price not decimal", "price: {path: price, type: decimal}", "price: {path: price, type: string}", r"price must be of type decimal"),
    ("time without format", "trade_time: {path: time, type: time, format: rfc3339}", "trade_time: {path: time, type: time}", r"table.columns.trade_time.*format.*Field required"),
    ("bad time format", "format: rfc3339}", "format: iso}", r"table.columns.trade_time.*format"),
    ("side bad target", "map: {buy: sell, sell: buy}", "map: {buy: taker, sell: buy}", r"side must be an enum or const"),
    ("empty enum map", "map: {buy: sell, sell: buy}", "map: {}", r"table.columns.side.*map"),
    ("missing column", "    size: {path: size, type: decimal}\n", "", r"columns must map size"),
    ("unknown column", "    size: {path: size, type: decimal}\n", "    size: {path: size, type: decimal}\n    colour: {type: const, value: red}\n", r"unknown column\(s\) colour"),
    ("too deeply nested", "price: {path: price, type: decimal}", "price: {path: a.b.c, type: decimal}", r"nested at most one level"),
    ("negative index", "price: {path: price, type: decimal}", "price: {path: -1, type: decimal}", r"array index"),
    ("const without value", "trade_id: {path: trade_id, type: string}", "trade_id: {type: const}", r"table.columns.trade_id.*value"),
    ("no table", "table:\n", "tables:\n", r"tables: unknown key"),
]


@pytest.mark.parametrize("name,old,new,pattern", CASES, ids=[c[0] for c in CASES])
def test_malformed_table_mapping(tmp_path, name, old, new, pattern):
    shutil.copytree(ROOT / "mappings", tmp_path / "m")
    f = tmp_path / "m" / "exchanges" / "coinbase.yaml"
    text = f.read_text()
    assert old in text, old
    f.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=r"coinbase\.yaml:\d+: ") as e:
        load_exchange("coinbase", str(tmp_path / "m"))
    import re

    assert re.search(pattern, str(e.value)), str(e.value)
