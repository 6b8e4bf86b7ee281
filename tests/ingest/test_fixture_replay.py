"""The real recorded Coinbase pages, replayed over HTTP, land verbatim and exactly once."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from schemahub.landing import IngestOptions, Lander, iter_raw
from schemahub.sim import CoinbaseSim, FixedBook
from schemahub.sources.base import Product
from schemahub.sources.jsonsplit import split_records
from schemahub.store.local import LocalStore
from tests.conftest import coinbase_fixture_pages

BTC = Product("BTC-USD", "BTC-USD", "BTC", "USD")


def _recorded_trades():
    """trade_id -> exact bytes, taken straight from the recorded bodies."""
    trades: dict[int, bytes] = {}
    for _run, _entry, body, _headers in coinbase_fixture_pages():
        text = body.decode()
        _, records, spans = split_records(text)
        for rec, (a, b) in zip(records, spans):
            trades[rec["trade_id"]] = text[a:b].encode()
    return trades


def test_recorded_pages_split_into_exact_elements():
    pages = coinbase_fixture_pages()
    assert len(pages) == 31  # run 2 repeats pages 1-14 of run 1
    for _run, entry, body, _ in pages:
        assert len(body) == entry["body_bytes"]
        _, records, spans = split_records(body.decode())
        assert len(records) == entry["n_trades"]
        text = body.decode()
        # Re-joining the element texts rebuilds the body byte for byte.
        assert ("[" + ",".join(text[a:b] for a, b in spans) + "]").encode() == body
        if records:
            assert json.loads(body) == records


def test_recorded_run_replays_verbatim_through_the_connector(tmp_path, make_source):
    # GIVEN the exchange as it was during run 1 (head 8409425), answering each
    # recorded request with its recorded bytes and headers, and other requests
    # with slices of the same real trades.
    trades = _recorded_trades()
    assert len(trades) == 1500 and min(trades) == 8408015 and max(trades) == 8409514
    recorded = {}
    for run, entry, body, headers in coinbase_fixture_pages():
        if run == 1 and entry["status"] == 200 and headers:
            path = entry["request"].split(":443", 1)[1]
            recorded[path] = (200, headers, body)
    book = FixedBook("BTC-USD", trades, head=8409425)
    store = LocalStore(str(tmp_path / "data"))
    with CoinbaseSim([book], recorded=recorded) as sim:
        # Page size 100 makes our windows the very requests the 2017 client made.
        src = make_source(sim.url, page_size=100)
        lander = Lander(store, src)
        since = datetime(2016, 5, 12, 15, 0, 1, tzinfo=timezone.utc)

        # WHEN the first run lands from the first recorded trade's time
        r1 = lander.run(BTC, IngestOptions(since=since))
        served_recorded = [p for p in sim.requests if p in recorded]

        # THEN run 1's 15 recorded responses were used as they are
        assert r1.status == "ok", r1.message
        assert len(set(served_recorded)) == 15
        assert r1.trades == 1411 and r1.hi == 8409425

        # WHEN more trades appear (run 2 saw up to 8409514) and we run again
        book.set_head(8409514)
        r2 = lander.run(BTC, IngestOptions())
        assert r2.status == "ok" and r2.trades == 89 and r2.hi == 8409514

    # THEN every recorded trade is in exactly one raw object, byte for byte.
    landed: dict[int, bytes] = {}
    for key, header, lines in iter_raw(store, "coinbase", "BTC-USD"):
        assert header["exchange"] == "coinbase" and int(header["count"]) == len(lines)
        for line in lines:
            tid = json.loads(line)["trade_id"]
            assert tid not in landed, f"trade {tid} landed twice (again in {key})"
            assert int(header["cursor_start"]) < tid <= int(header["cursor_end"])
            landed[tid] = line
    assert landed == trades


def test_ccxt_2024_sample_with_string_trade_id_is_accepted(tmp_path, make_source):
    from tests.conftest import FIXTURES

    body = (FIXTURES / "coinbase_exchange" / "ccxt_fetchTrades_BTC-USDT.body.json").read_bytes()
    _, records, spans = split_records(body.decode())
    text = body.decode()
    trades = {int(records[0]["trade_id"]): text[spans[0][0]:spans[0][1]].encode()}
    book = FixedBook("BTC-USDT", trades)
    store = LocalStore(str(tmp_path / "data"))
    with CoinbaseSim([book]) as sim:
        res = Lander(store, make_source(sim.url)).run(
            Product("BTC-USDT", "BTC-USDT", "BTC", "USDT"),
            IngestOptions(since=datetime(2024, 3, 13, tzinfo=timezone.utc)),
        )
    assert res.status == "ok" and res.trades == 1
    [(_, _, lines)] = list(iter_raw(store, "coinbase", "BTC-USDT"))
    # The sample is pretty-printed: its line breaks (whitespace between tokens)
    # are dropped so the trade stays on one line; every other byte is kept.
    expected = trades[18502034].replace(b"\n", b"")
    assert lines == [expected]
    assert json.loads(lines[0]) == records[0]
    assert b'"price": "73271.63000000"' in lines[0]
