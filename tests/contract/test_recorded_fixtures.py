"""The contract over real recordings: every recorded trade of every supported exchange maps exactly.

One parametrized test for all exchanges. What a trade *should* become is
read here from the recorded JSON by each exchange's documented rules
(API_NOTES.md), independently of the mapping engine: decimals via Decimal,
times by integer arithmetic from the text, the side by the exchange's
convention. The engine's output must equal it row for row.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from schemahub.sources.jsonsplit import split_records
from schemahub.store.local import LocalStore
from schemahub.transform import Transformer
from tests.conftest import FIXTURES
from tests.transform.helpers import curated_rows, put_raw
from tests.transform.test_fixture_mapping import _recorded_lines

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def _rfc3339(text: str) -> datetime:
    base, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(base + "+00:00") + timedelta(microseconds=int((frac + "000000")[:6]))


def _float_s(value: Decimal) -> datetime:
    return _us(int(value * 10**6))  # truncated below 1 µs


# exchange -> how the wire reads: (trade id, price, size, taker side, time) from one parsed record
WIRE = {
    "coinbase": lambda w: (str(w["trade_id"]), w["price"], w["size"], {"buy": "sell", "sell": "buy"}[w["side"]],
                           _rfc3339(w["time"])),  # side is the maker's
    "binance": lambda w: (str(w["id"]), w["price"], w["qty"], "sell" if w["isBuyerMaker"] else "buy",
                          _us(w["time"] * 1000 if w["time"] < 10**14 else w["time"])),
    "kraken": lambda w: (str(w[6]), w[0], w[1], {"b": "buy", "s": "sell"}[w[3]], _float_s(w[2])),
    "okx": lambda w: (w["tradeId"], w["px"], w["sz"], w["side"], _us(int(w["ts"]) * 1000)),
}

CASES = [  # (exchange, product, fixture file, records path)
    ("coinbase", "BTC-USDT", "coinbase_exchange/ccxt_fetchTrades_BTC-USDT.body.json", ()),
    ("binance", "BTC-USDT", "binance/nautilus_api_v3_historicalTrades_BTCUSDT.json", ()),
    ("binance", "BTC-USDT", "binance/nautilus_api_v3_trades_BTCUSDT.json", ()),
    ("binance", "BTC-USDT", "binance/docexample_api_v3_trades.json", ()),
    ("kraken", "BTC-USDT", "kraken/nautilus_http_trades_XBTUSDT.json", ("result", "*")),
    ("kraken", "BTC-USDT", "kraken/ccxt_fetchTrades_XBTUSDT.body.json", ("result", "*")),
    ("okx", "BTC-USDT", "okx/nautilus_api_v5_market_trades_BTC-USDT.json", ("data",)),
]


def _recorded(path, records_path) -> list[bytes]:
    text = (FIXTURES / path).read_text()
    _, _, spans = split_records(text, tuple(records_path))
    return [text[a:b].replace("\n", "").replace("\r", "").encode() for a, b in spans]  # as landing stores them


@pytest.mark.parametrize("exchange,product,path,records_path", CASES + [("coinbase", "BTC-USD", "coinbase-2016-pages", ())],
                         ids=[c[2].split("/")[-1] for c in CASES] + ["coinbase-2016-pages"])
def test_every_recorded_trade_maps_exactly(tmp_path, exchange, product, path, records_path):
    lines = _recorded_lines() if path == "coinbase-2016-pages" else _recorded(path, records_path)
    store = LocalStore(str(tmp_path))
    put_raw(store, lines, exchange=exchange, product=product)
    res = Transformer(store).run()
    assert res.quarantined == 0 and res.rows == len(lines) > 0
    got = {r["trade_id"]: r for r in curated_rows(store)}
    assert len(got) == len(lines)
    for line in lines:
        tid, price, size, side, t = WIRE[exchange](json.loads(line, parse_float=Decimal))
        row = got[tid]
        assert row["price"] == Decimal(str(price)) and row["size"] == Decimal(str(size)), (path, tid)
        assert row["side"] == side, (path, tid)
        assert row["trade_time"] == t, (path, tid)
        assert (row["exchange"], row["product_id"]) == (exchange, product)
    assert {"buy", "sell"} >= {r["side"] for r in got.values()}
    if len(lines) >= 10:
        assert {r["side"] for r in got.values()} == {"buy", "sell"}  # both sides occur in every real sample this size
