"""The progress lines a person sees, driven by a FakeClock and synthetic events (no network, no sleeps)."""

from __future__ import annotations

import io

from schemahub.clock import FakeClock
from schemahub.progress import CountProgress, Display, IngestProgress


def _model():
    clock = FakeClock()
    return clock, IngestProgress({"binance": ["BTC-USDT", "ETH-USDT"], "kraken": ["BTC-USD"]}, clock, window_s=10)


def test_a_line_per_exchange_names_the_product_in_flight_and_the_trades():
    clock, p = _model()
    p.started("binance", "BTC-USDT")
    p("binance", "BTC-USDT", 1000, 1000, 11_000)
    [b, k] = p.lines()
    assert b.startswith("binance: BTC-USDT (0 of 2 done), 1,000 trades")
    assert k.startswith("kraken: starting (0 of 1 done), 0 trades")


def test_the_rate_is_a_moving_window_not_an_average_since_the_start():
    clock, p = _model()
    p.started("binance", "BTC-USDT")
    for _ in range(10):  # 10 s at 1,000 trades/s (a page arrives at the end of each second)
        clock.advance(1)
        p("binance", "BTC-USDT", 1000, 0, 10**9)
    for _ in range(20):  # then 20 s at 100 trades/s: the average since the start would be 400/s
        clock.advance(1)
        p("binance", "BTC-USDT", 100, 0, 10**9)
    assert 90 <= p.rate("binance") <= 110
    assert "100 trades/s" in p.lines()[0]


def test_eta_per_exchange_from_the_trades_left_and_the_current_rate():
    clock, p = _model()
    p.started("binance", "BTC-USDT")
    p.started("binance", "ETH-USDT")
    for _ in range(10):
        clock.advance(1)
        p("binance", "BTC-USDT", 500, 0, 10**9)
        p("binance", "ETH-USDT", 500, 0, 10**9)
    # 1,000 trades/s; 60,000 + 70,000 left
    p("binance", "BTC-USDT", 0, 40_000, 100_000)
    p("binance", "ETH-USDT", 0, 30_000, 100_000)
    line = p.lines()[0]
    assert "BTC-USDT+ETH-USDT" in line and "1,000 trades/s" in line
    assert "ETA 2 min 10 s" in line  # 130,000 / 1,000


def test_eta_says_more_while_products_have_not_started_and_none_for_a_time_cursor_at_first():
    clock, p = _model()
    p.started("binance", "BTC-USDT")
    clock.advance(1)
    p("binance", "BTC-USDT", 100, 0, 1100)  # 100/s, 1,100 left: 11 s, and ETH-USDT not started
    assert "ETA > 11 s" in p.lines()[0]
    p.started("kraken", "BTC-USD")
    clock.advance(1)
    p("kraken", "BTC-USD", 1000, 1_796_000_000_000_000_000, 1_796_000_100_000_000_000, False)  # a time cursor
    assert "ETA" not in p.lines()[1] and "1,000 trades" in p.lines()[1]  # no trade count; one page: no speed yet


def test_a_wait_says_what_for_and_until_when_and_ends_with_the_next_answer():
    clock, p = _model()
    p.started("binance", "BTC-USDT")
    p("binance", "BTC-USDT", 1000, 0, 10**9)
    p.waiting("binance", "weight budget", 55)
    clock.advance(14)
    assert p.lines()[0].endswith("weight budget, resuming in 41 s")
    p.waiting("binance", "Retry-After 30 s", 30)
    assert p.lines()[0].endswith("Retry-After 30 s, resuming in 30 s")
    p.waiting("binance", "rate limit", 0.3)  # pacing requests: no countdown
    assert p.lines()[0].endswith(", rate limit")
    p("binance", "BTC-USDT", 1000, 0, 10**9)
    assert "rate limit" not in p.lines()[0]


def test_a_finished_exchange_says_done():
    clock, p = _model()
    for pid in ("BTC-USDT", "ETH-USDT"):
        p.started("binance", pid)
        p("binance", pid, 700, 700, 700)
        p.finished("binance", pid)
    assert p.lines()[0] == "binance: done, 2 products, 1,400 trades"


def test_off_a_terminal_lines_are_plain_and_on_one_they_are_redrawn_in_place():
    _, p = _model()
    out = io.StringIO()
    d = Display(p, stream=out, tty=False)
    d.draw()
    assert "\x1b" not in out.getvalue() and out.getvalue().startswith("progress: binance: starting")
    out = io.StringIO()
    d = Display(p, stream=out, tty=True)
    d.draw()
    d.draw()
    assert out.getvalue().count("\x1b[2F") == 1  # the second frame moves up over the first's two lines


def test_transform_and_compact_count_objects():
    c = CountProgress("transform")
    c(120, 450)
    assert c.lines() == ["transform: 120 of 450 objects"]


def test_transform_and_compact_report_objects_done_of_the_total(tmp_path):
    from datetime import datetime, timedelta, timezone

    from schemahub.compact import compact
    from schemahub.ingest import make_source
    from schemahub.landing import IngestOptions, Lander
    from schemahub.sim import Book, CoinbaseSim
    from schemahub.sources.base import Product
    from schemahub.store.local import LocalStore
    from schemahub.transform import Transformer

    store = LocalStore(str(tmp_path))
    with CoinbaseSim([Book("BTC-USD", initial=25_000, interval_us=10_000_000)]) as sim:  # 3 objects over 3 days
        src = make_source("coinbase", base_url=sim.url, rate=1000)
        since = datetime.now(timezone.utc) - timedelta(days=4)
        res = Lander(store, src).run(Product("BTC-USD", "BTC-USD", "BTC", "USD"), IngestOptions(since=since))
    assert res.objects == 3, res
    seen = []
    Transformer(store).run(progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 3), (1, 3), (2, 3)]
    days = []
    compact(store, progress=lambda done, total: days.append((done, total)))
    assert days and days[0] == (0, days[0][1]) and days[0][1] >= 3


def test_after_ctrl_c_exchanges_that_end_are_stopped_not_done_and_a_message_does_not_break_the_frame():
    clock, p = _model()
    p.started("kraken", "BTC-USD")
    for pid in ("BTC-USDT", "ETH-USDT"):
        p.started("binance", pid)
        p.finished("binance", pid)
    p.stopping = True
    p.finished("kraken", "BTC-USD")
    assert p.lines() == ["binance: done, 2 products, 0 trades", "kraken: stopped, 1 product, 0 trades"]
    out = io.StringIO()
    d = Display(p, stream=out, tty=True)
    d.draw()
    d.say("\nschemahub: stopping\n")
    d.draw()
    assert "\x1b[" not in out.getvalue().split("schemahub: stopping")[1].split("\x1b[2K")[0]  # drawn below, not over it


def test_a_time_cursor_gets_an_eta_from_how_fast_it_moves_towards_the_head():
    clock, p = _model()
    p.started("kraken", "BTC-USD")
    head = 10_000 * 10**9  # the cursor is a time in ns: the head is the run's start
    cursor = 1_000 * 10**9
    for _ in range(5):  # each second the cursor moves 100 s of trades
        p("kraken", "BTC-USD", 1000, cursor, head, False)
        clock.advance(1)
        cursor += 100 * 10**9
    # 9,000 s - 400 s of trades left at 100 s per second: 86 s
    assert "ETA 1 min 26 s" in p.lines()[1], p.lines()[1]
