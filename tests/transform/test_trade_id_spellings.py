"""Trade-id spellings: `99`, `099`, `99.0`, ` 99`, `+99`, `9.9e1` for one numeric trade id.

Coinbase, Binance, OKX and Kraken number each product's trades with integers, printed in canonical decimal
(API_NOTES; every recorded fixture). Another spelling of an id is a misprint: read as a number it would
merge with another trade ("099" is 99), read as text it would be a second row for one trade. The table
keeps values exactly as printed and one row per trade, so only the canonical decimal integer is an id;
any other spelling goes to quarantine with field, value and reason, never to the table. Ground truth is
written by hand from the lines.
"""

from __future__ import annotations

import json

import pytest

from schemahub.layout import quarantine_key
from schemahub.query import connect
from schemahub.transform import Transformer
from tests.transform.helpers import put_raw


def _coinbase(i: int, tid: str) -> bytes:
    return (f'{{"time":"2026-11-29T10:00:{i:02d}.000001Z","trade_id":{tid},"price":"100.5","size":"0.01",'
            f'"side":"buy"}}').encode()


def _binance(i: int, tid: str) -> bytes:
    return (f'{{"id":{tid},"price":"100.5","qty":"0.01","quoteQty":"1","time":{1795000000000 + i},'
            '"isBuyerMaker":true,"isBestMatch":true}').encode()


def _okx(i: int, tid: str) -> bytes:
    return (f'{{"instId":"BTC-USDT","side":"buy","sz":"0.01","px":"100.5","tradeId":{tid},'
            f'"ts":"{1795000000000 + i}"}}').encode()


def _kraken(i: int, tid: str) -> bytes:
    return f'["100.5","0.01",{1795000000 + i}.1234,"b","l","",{tid}]'.encode()


EXCHANGES = {"coinbase": (_coinbase, "BTC-USD"), "binance": (_binance, "BTC-USDT"),
             "okx": (_okx, "BTC-USDT"), "kraken": (_kraken, "BTC-USD")}
# Spellings of trade 99 (and of 100, which has no canonical line) as they would sit in the raw line.
NUMBERS = ["99.0", "9.9e1", "990e-1", "99.00"]
STRINGS = ['"099"', '" 99"', '"99 "', '"+99"', '"99.0"', '"9.9e1"', '"0100"']


@pytest.mark.parametrize("exchange", sorted(EXCHANGES))
def test_only_canonical_decimal_ids_reach_the_table_the_others_are_quarantined_as_printed(tmp_path, exchange):
    from schemahub.store.local import LocalStore

    store = LocalStore(str(tmp_path / "store"))
    line, product = EXCHANGES[exchange]
    canonical = ['97', '98', '99'] if exchange != "okx" else ['"97"', '"98"', '"99"']
    spellings = STRINGS + ([] if exchange == "okx" else NUMBERS)
    lines = [line(i, t) for i, t in enumerate(canonical + spellings)]
    for raw in lines:
        json.loads(raw)  # every line is valid JSON: the spelling is the exchange's, not a broken line
    key = put_raw(store, lines, exchange=exchange, product=product, start=96)
    res = Transformer(store).run()
    rows = connect(store).execute("SELECT trade_id FROM trades").fetchall()
    assert sorted(r[0] for r in rows) == ["97", "98", "99"]  # one trade, one row, the id exactly as printed
    q = [json.loads(x) for x in store.get(quarantine_key(key)).data.splitlines()]
    assert res.quarantined == len(spellings) == len(q)
    assert [r["line"] for r in q] == list(range(2 + len(canonical), 2 + len(lines)))  # line 1 is the header
    for r, spelled in zip(q, spellings):
        assert r["field"] == "trade_id" and "canonical decimal integer" in r["reason"], r
        assert r["value"] == spelled.strip('"'), (r["value"], spelled)


# ------------------------------------------------------------------ landing: ids compared by the page checks

LANDING_READ_AS_99 = ['"099"', '" 99"', '"+99"', '"99.0"', "99.0", "9.9e1", '"0099 "']
LANDING_REFUSED = ['"9.9e1"', "99.5", "true", '"99.5"', '"\\u0669\\u0669"', '"abc"', "null"]


@pytest.mark.parametrize("exchange", sorted(EXCHANGES))
def test_landing_reads_exact_integer_spellings_and_refuses_any_other_value_naming_it(exchange):
    """The page checks compare ids as integers. Another exact spelling of an integer ('099', 99.0) is read as
    that integer: the exchange prints it so on every request, so a refusal would stop the product there for
    good (tests/hostile/test_trade_id_misprint.py); the transform quarantines the line (above). A value that
    is no exact integer (int(99.5) == 99, int(True) == 1) would let a misprint pass as another trade's id (or
    hide a hole): a page holding one is retried (a glitch), never landed as is."""
    from schemahub.sources.spec import load_exchange
    from schemahub.errors import Retryable
    from schemahub.sources.build import build_source

    line, _ = EXCHANGES[exchange]
    src = build_source(load_exchange(exchange), http=None)
    canonical = ['"97"', '"98"'] if exchange == "okx" else ["97", "98"]
    good = [json.loads(line(i, t)) for i, t in enumerate(canonical)]
    assert src.record_ids(good) == [97, 98]
    for spelled in LANDING_READ_AS_99:
        assert src.record_ids(good + [json.loads(line(2, spelled))]) == [97, 98, 99], spelled
    for spelled in LANDING_REFUSED:
        with pytest.raises(Retryable) as e:
            src.record_ids(good + [json.loads(line(2, spelled))])
        msg = str(e.value)
        assert "is not an integer" in msg and repr(json.loads(spelled)) in msg, msg
