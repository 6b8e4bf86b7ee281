"""Every real recorded Coinbase trade maps exactly: decimals equal the wire strings, taker side, µs time."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

import pytest

from schemahub.sources.jsonsplit import split_records
from schemahub.store.local import LocalStore
from schemahub.transform import Transformer
from tests.conftest import FIXTURES, coinbase_fixture_pages
from tests.transform.helpers import curated_rows, put_raw

TAKER = {"buy": "sell", "sell": "buy"}  # Coinbase prints the maker side


def _recorded_lines() -> list[bytes]:
    seen = {}
    for _run, _entry, body, _ in coinbase_fixture_pages():
        text = body.decode()
        _, records, spans = split_records(text)
        for rec, (a, b) in zip(records, spans):
            seen[rec["trade_id"]] = text[a:b].encode()
    return list(seen.values())


def _ccxt_line() -> bytes:
    body = (FIXTURES / "coinbase_exchange" / "ccxt_fetchTrades_BTC-USDT.body.json").read_text()
    _, _, [(a, b)] = split_records(body)
    return body[a:b].replace("\n", "").encode()  # as landing stores it


def _expect(line: bytes) -> dict:
    w = json.loads(line)
    return {"trade_id": str(w["trade_id"]), "price": Decimal(w["price"]), "size": Decimal(w["size"]),
            "side": TAKER[w["side"]], "trade_time": datetime.fromisoformat(w["time"].replace("Z", "+00:00"))}


@pytest.mark.parametrize("mix", ["recorded_2016", "ccxt_2024", "mixed_types_regex_path"])
def test_recorded_coinbase_trades_map_exactly(tmp_path, mix):
    lines = {"recorded_2016": _recorded_lines(), "ccxt_2024": [_ccxt_line()],
             # an integer trade_id in some rows and a string in another forces the regex path
             "mixed_types_regex_path": _recorded_lines()[:200] + [_ccxt_line()]}[mix]
    store = LocalStore(str(tmp_path))
    put_raw(store, lines)
    res = Transformer(store).run()
    assert res.quarantined == 0 and res.rows == len(lines)
    got = {r["trade_id"]: r for r in curated_rows(store)}
    assert len(got) == len(lines)
    for line in lines:
        want = _expect(line)
        row = got[want["trade_id"]]
        wire = json.loads(line)
        assert row["price"] == want["price"] and row["size"] == want["size"]
        assert row["price"] == Decimal(wire["price"])  # equal to the wire string as a decimal
        assert row["side"] == want["side"]
        assert row["trade_time"] == want["trade_time"]  # exact to the microsecond
        assert (row["exchange"], row["product_id"], row["base_asset"], row["quote_asset"]) == ("coinbase", "BTC-USD", "BTC", "USD")
    if mix == "recorded_2016":
        assert len(lines) == 1500
        # 2 trades carry 3 fraction digits, 14 carry 4: all land exactly.
        assert sum(1 for r in got.values() if r["trade_time"].microsecond % 1000 == 0) >= 2
