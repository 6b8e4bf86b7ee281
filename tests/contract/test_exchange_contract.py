"""One contract, every exchange (as in the Meltano SDK's standard tests).

Each test runs the exchange's real mapping (mappings/exchanges/<ex>.yaml)
against its simulator, which speaks that exchange's API: paths, parameters,
cursors, headers, error bodies and rate-limit behaviour. Ground truth comes
from the simulator's books, never from the code under test.
"""

from __future__ import annotations

import time
from collections import deque
from datetime import datetime, timezone

import pytest

from schemahub.errors import ConfigError
from schemahub.ingest import ingest, resolve_products
from schemahub.landing import Checkpoints, IngestOptions, Lander, active_ban
from schemahub.sim import FaultPlan
from schemahub.sources.spec import load_exchange
from schemahub.store.local import LocalStore
from schemahub.transform import Transformer
from tests.contract.harness import (
    EXCHANGES,
    ID_KINDS,
    NATIVE,
    PRODUCT,
    SECOND,
    assert_exactly_once,
    book,
    paging_requests,
    raw_lines,
    sim,
    since_of,
    source,
    steady_state,
)
from tests.transform.helpers import curated_rows


def _product(src, exchange: str):
    return next(p for p in src.list_products() if p.product_id == PRODUCT[exchange])


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_listing_gives_unified_ids_native_symbols_and_both_resolve(exchange):
    books = [book(exchange), book(exchange, SECOND[exchange], first_id=9_000_000)]
    with sim(exchange, books) as s:
        src = source(exchange, s.url)
        listed = {p.product_id: p for p in src.list_products()}
        assert set(listed) == {PRODUCT[exchange], SECOND[exchange]}
        p = listed[PRODUCT[exchange]]
        assert p.symbol == NATIVE[exchange]
        assert f"{p.base}-{p.quote}" == p.product_id and p.base == "BTC"  # Kraken's XBT is BTC here
        # --product takes the unified id, and the exchange's own symbol too.
        assert resolve_products(src, [PRODUCT[exchange]], {}) == [p]
        assert resolve_products(src, [NATIVE[exchange].lower()], {}) == [p]
        with pytest.raises(ConfigError, match="no online product 'DOGE-XYZ'"):
            resolve_products(src, ["DOGE-XYZ"], {})


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_pages_have_no_gap_or_duplicate_across_boundaries_and_runs(tmp_path, exchange):
    b = book(exchange, initial=700)
    store = LocalStore(str(tmp_path))
    with sim(exchange, [b]) as s:
        # 7 trades a page, 3 pages an object: many page and object boundaries.
        src = source(exchange, s.url, page_size=7, pages_per_object=3)
        p = _product(src, exchange)
        since = since_of(b, b.first_id + 100)
        res = Lander(store, src).run(p, IngestOptions(since=since))
        assert res.status == "ok" and not res.more_to_do and res.pages >= 80, res
        b.initial += 45  # new trades arrive; the next run lands only those
        res2 = Lander(store, src).run(p, IngestOptions())
        assert res2.status == "ok" and res2.trades == 45, res2
    cp = Checkpoints(store).load(exchange, p.product_id)
    assert cp.hi == s.cursor_of(b, b.head())
    got = assert_exactly_once(store, s, b, cp.lo, cp.hi)
    # The first landed trade is the first the exchange dates at or after --since (at its own precision).
    first = min(got)
    assert s.truth(b, first)["time_us"] >= since.timestamp() * 1e6 - 1000
    assert s.truth(b, first - 1)["time_us"] < since.timestamp() * 1e6


class _CrashAfterRaw(LocalStore):
    """Dies like a killed process: after the n-th raw object is durable, before its checkpoint moves."""

    def __init__(self, root: str, n: int) -> None:
        super().__init__(root)
        self.n = n

    def put(self, key, data, **kw):
        if key.startswith("checkpoints/") and kw.get("if_match") and self.n <= 0:
            raise SystemExit("killed between the raw write and the checkpoint")
        etag = super().put(key, data, **kw)
        if key.startswith("raw/"):
            self.n -= 1
        return etag


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_a_run_killed_between_raw_write_and_checkpoint_is_resumed_exactly_once(tmp_path, exchange):
    b = book(exchange, initial=400)
    with sim(exchange, [b]) as s:
        src = source(exchange, s.url, page_size=10, pages_per_object=2)
        p = _product(src, exchange)
        since = since_of(b, b.first_id + 50)
        with pytest.raises(SystemExit):
            Lander(_CrashAfterRaw(str(tmp_path), 3), src).run(p, IngestOptions(since=since))
        store = LocalStore(str(tmp_path))
        res = Lander(store, source(exchange, s.url, page_size=10, pages_per_object=2)).run(p, IngestOptions(since=since))
    assert res.status == "ok" and res.adopted == 1, res  # the orphan object is adopted, not written twice
    cp = Checkpoints(store).load(exchange, p.product_id)
    assert cp.hi == s.cursor_of(b, b.head())
    assert_exactly_once(store, s, b, cp.lo, cp.hi)


# Each exchange's own way of saying "slow down" or "try again", served on a share of requests.
_FAULTS = {
    "coinbase": {"429": 0.1, "500": 0.05, "truncated_json": 0.05},
    "binance": {"429": 0.1, "502_html": 0.05, "truncated": 0.05},
    "kraken": {"kraken_rate": 0.1, "kraken_unavailable": 0.05, "kraken_busy": 0.05, "drop": 0.03},
    "okx": {"429_plain": 0.1, "okx_busy": 0.1, "200_html": 0.03},
}


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_rate_limits_and_transient_errors_are_retried_and_land_exactly_once(tmp_path, exchange):
    b = book(exchange, initial=500)
    faults = FaultPlan(rates=_FAULTS[exchange], seed=11, retry_after_s=0)
    with sim(exchange, [b], faults=faults, rate_limit=(60, 5)) as s:  # the server also limits, in its own words
        src = source(exchange, s.url, page_size=10)
        p = _product(src, exchange)
        store = LocalStore(str(tmp_path))
        res = Lander(store, src).run(p, IngestOptions(since=since_of(b, b.first_id)))
    assert res.status == "ok", res
    stats = src.http.stats
    assert stats.retries > 0 and sum(faults.served.values()) > 0, (stats, faults.served)
    cp = Checkpoints(store).load(exchange, p.product_id)
    assert cp.hi == s.cursor_of(b, b.head())
    assert_exactly_once(store, s, b, cp.lo, cp.hi)


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_landed_trades_map_to_exact_rows_in_the_exchange_time_unit(tmp_path, exchange):
    """Price, size, taker side and time of every row equal the simulator's truth (Binance in µs via its header)."""
    b = book(exchange, initial=300)
    store = LocalStore(str(tmp_path))
    with sim(exchange, [b]) as s:
        src = source(exchange, s.url, page_size=50)
        p = _product(src, exchange)
        Lander(store, src).run(p, IngestOptions(since=since_of(b, b.first_id)))
    res = Transformer(store).run()
    assert res.quarantined == 0 and res.rows > 250
    rows = {r["trade_id"]: r for r in curated_rows(store)}
    assert len(rows) == res.rows
    for tid, row in rows.items():
        want = s.truth(b, int(tid))
        assert (row["exchange"], row["product_id"], row["symbol"]) == (exchange, PRODUCT[exchange], NATIVE[exchange])
        assert row["price"] == want["price"] and row["size"] == want["size"], tid
        assert row["side"] == want["side"], tid
        assert row["trade_time"] == datetime.fromtimestamp(want["time_us"] // 10**6, tz=timezone.utc).replace(
            microsecond=want["time_us"] % 10**6), tid


def test_binance_without_the_microsecond_header_maps_milliseconds(tmp_path):
    b = book("binance", initial=120)
    store = LocalStore(str(tmp_path))
    with sim("binance", [b]) as s:
        src = source("binance", s.url, headers={})
        Lander(store, src).run(_product(src, "binance"), IngestOptions(since=since_of(b, b.first_id)))
    assert not any("X-MBX" in r for r in s.requests)
    Transformer(store).run()
    rows = curated_rows(store)
    assert len(rows) >= 119
    for row in rows:
        t_us = s.truth(b, int(row["trade_id"]))["time_us"] // 1000 * 1000
        assert int(row["trade_time"].timestamp() * 1e6) == t_us


def test_binance_418_ban_stops_the_exchange_cleanly_without_another_request(tmp_path):
    books = [book("binance"), book("binance", SECOND["binance"], first_id=9_000_000)]
    faults = FaultPlan()
    with sim("binance", books, faults=faults, ban_s=600) as s:
        url = s.url
        src = source("binance", url, page_size=50)
        products = src.list_products()
        faults.script.extend(["429", "418"])  # the second answer bans us
        before = len(s.requests)
        results = ingest(LocalStore(str(tmp_path)), src, products, IngestOptions(since=since_of(books[0], books[0].first_id)))
        sent = len(s.requests) - before
    assert [r.status for r in results] == ["failed", "skipped"], results
    assert "418" in results[0].message and "banned" in results[1].message
    assert sent == 2, f"{sent} requests: nothing may be sent after the 418"
    assert s.status_counts.get(418) == 1
    # The ban is remembered in the store: the next run (another process, another Lambda) sends nothing until it ends.
    store = LocalStore(str(tmp_path))
    again = ingest(store, source("binance", url), products, IngestOptions())  # (the simulator is down, too)
    assert [r.status for r in again] == ["skipped", "skipped"] and "banned this IP until" in again[0].message
    assert len(s.requests) - before == 2

    class Later:
        def time(self):
            return time.time() + 601  # the ban (Retry-After 600 s) has ended

        def monotonic(self):
            return time.monotonic()

        def sleep(self, t):
            time.sleep(t)

        def now(self):
            return datetime.now(timezone.utc)

    assert active_ban(store, "binance", Later()) is None


def test_binance_ignoring_retry_after_earns_a_ban_and_honouring_it_does_not(tmp_path):
    """The simulator bans clients that keep sending during a Retry-After; ours waits it out."""
    b = book("binance", initial=300)
    with sim("binance", [b], faults=FaultPlan(retry_after_s=1)) as s:
        src = source("binance", s.url, page_size=20, rate=1000)
        p = _product(src, "binance")
        s.faults.script.extend(["429"])
        res = Lander(LocalStore(str(tmp_path)), src).run(p, IngestOptions(since=since_of(b, b.first_id)))
        assert res.status == "ok" and s.status_counts.get(418) is None and src.http.stats.rate_limited == 1
        # A client that ignores Retry-After (no backoff, no penalty) is banned by the same simulator.
        s.faults.script.extend(["429"])
        import urllib3

        http = urllib3.PoolManager(retries=False)
        codes = [http.request("GET", f"{s.url}/api/v3/trades?symbol=BTCUSDT&limit=1").status for _ in range(8)]
    assert codes[0] == 429 and 418 in codes, codes


def test_binance_weight_header_pauses_before_the_budget_runs_out():
    from schemahub.sources.http import WeightBudget

    class Clock:
        t, slept = 1_000_050.0, []  # 30 s before a minute turns

        def time(self):
            return self.t

        def monotonic(self):
            return self.t

        def sleep(self, s):
            self.slept.append(s)
            self.t += s

    c = Clock()
    w = WeightBudget("X-MBX-USED-WEIGHT-1M", 6000, 60, 0.8, clock=c)
    w.observe({"X-MBX-USED-WEIGHT-1M": "4000"})
    assert w.wait() == 0.0
    w.observe({"X-MBX-USED-WEIGHT-1M": "4800"})  # 80%: wait for the next minute (30 s left in this one)
    assert abs(w.wait() - 30.05) < 1e-6 and c.t % 60 < 1


def test_kraken_error_in_a_200_body_that_is_not_transient_fails_the_product_with_its_message(tmp_path):
    b = book("kraken")
    with sim("kraken", [b]) as s:
        src = source("kraken", s.url)
        from schemahub.sources.base import Product

        res = Lander(LocalStore(str(tmp_path)), src).run(Product("DOGE-USD", "XDGUSD", "DOGE", "USD"), IngestOptions())
    assert res.status == "failed" and "EQuery:Unknown asset pair" in res.message


def test_kraken_refuses_a_backfill_it_cannot_bound(tmp_path):
    b = book("kraken", initial=300)
    store = LocalStore(str(tmp_path))
    with sim("kraken", [b]) as s:
        src = source("kraken", s.url, page_size=100)
        p = _product(src, "kraken")
        assert Lander(store, src).run(p, IngestOptions(since=since_of(b, b.first_id + 100))).status == "ok"
        before = Checkpoints(store).load("kraken", p.product_id)
        res = Lander(store, src).run(p, IngestOptions(since=since_of(b, b.first_id)))
    assert res.status == "failed" and "cannot bound a backfill" in res.message
    after = Checkpoints(store).load("kraken", p.product_id)
    assert (after.lo, after.hi, after.backfill_target) == (before.lo, before.hi, None)



@pytest.mark.parametrize("exchange", EXCHANGES)
def test_dry_run_plans_from_the_exchange_and_writes_nothing(tmp_path, exchange):
    b = book(exchange, initial=400)
    with sim(exchange, [b]) as s:
        src = source(exchange, s.url, page_size=50)
        p = _product(src, exchange)
        res = Lander(LocalStore(str(tmp_path)), src).run(p, IngestOptions(since=since_of(b, b.first_id + 100), dry_run=True))
    assert res.status == "planned" and res.plan["first_run"] is True
    assert not any(tmp_path.rglob("*.json*")), "a dry run wrote something"
    if exchange == "kraken":  # a time cursor: how many trades is unknown until they are fetched
        assert res.plan["to_land"] is None and res.plan["head_cursor"] > res.plan["start_cursor"]
    else:
        assert res.plan["to_land"] == b.head() - res.plan["start_cursor"] and 299 <= res.plan["to_land"] <= 301
        assert res.plan["pages"] == -(-res.plan["to_land"] // 50)
    # After a real run, a dry run with an earlier --since plans the backfill (or says why it cannot).
    store = LocalStore(str(tmp_path))
    with sim(exchange, [b]) as s:
        src = source(exchange, s.url, page_size=50)
        assert Lander(store, src).run(p, IngestOptions(since=since_of(b, b.first_id + 100))).status == "ok"
        plan = Lander(store, src).run(p, IngestOptions(since=since_of(b, b.first_id + 10), dry_run=True)).plan
    assert plan["first_run"] is False
    if exchange == "kraken":
        assert "cannot bound a backfill" in plan["backfill"]["refused"]
    else:
        assert 89 <= plan["backfill"]["to_land"] <= 91 and plan["pages"] == 2


def test_kraken_pairs_without_wsname_are_named_from_legacy_codes():
    legacy = {"XLTCZUSD": {"altname": "LTCUSD", "base": "XLTC", "quote": "ZUSD", "status": "online"},
              "XXDGZEUR": {"altname": "XDGEUR", "base": "XXDG", "quote": "ZEUR", "status": "online"},
              "XBTUSD.d": {"altname": "XBTUSD.d", "status": "online"},  # a listing with no pair: skipped
              "ADAXBT": {"altname": "ADAXBT", "wsname": "ADA/XBT", "base": "ADA", "quote": "XXBT", "status": "delisted"}}
    with sim("kraken", [book("kraken")], extra_products=[legacy]) as s:
        listed = {p.product_id: p.symbol for p in source("kraken", s.url).list_products()}
    assert listed == {"BTC-USD": "XBTUSD", "LTC-USD": "LTCUSD", "DOGE-EUR": "XDGEUR"}


# ------------------------------------------------------------------ hostile pages, every exchange
# The generic page checks (spec.PageChecks) against each exchange's simulator, with page faults served in that
# exchange's own shape (sim.PAGE_FAULTS). Ground truth is the simulator's book: every trade whose cursor is in the
# landed range, exactly once, and the range reaching the head; the counts of what was reported are exact.

def _hostile(tmp_path, exchange, faults, *, initial=600, page_size=100, after=0, missing=(), retry=None):
    b = book(exchange, initial=initial, missing=missing)
    store = LocalStore(str(tmp_path))
    with sim(exchange, [b], faults=faults) as s:
        src = source(exchange, s.url, page_size=page_size, retry=retry)
        p = _product(src, exchange)
        lo = steady_state(store, s, b, b.first_id - 1 + after)
        res = Lander(store, src).run(p, IngestOptions())
    return res, store, s, b, lo


def _all_landed(store, s, b, lo, res):
    assert res.status == "ok" and not res.more_to_do, res
    cp = Checkpoints(store).load(s.exchange, b.product_id)
    assert (cp.lo, cp.hi) == (lo, s.cursor_of(b, b.head())), (cp, res)
    return assert_exactly_once(store, s, b, cp.lo, cp.hi)


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_a_page_cap_below_the_limit_asked_for_still_lands_every_trade(tmp_path, exchange):
    res, store, s, b, lo = _hostile(tmp_path, exchange, FaultPlan(page_cap=30))
    _all_landed(store, s, b, lo, res)
    assert res.missing_ids == 0 and res.trades == 600


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_one_transient_empty_answer_is_asked_again_and_loses_nothing(tmp_path, exchange):
    res, store, s, b, lo = _hostile(tmp_path, exchange, FaultPlan(page_script=deque([None, None, "empty"])))
    _all_landed(store, s, b, lo, res)
    assert res.missing_ids == 0 and res.trades == 600 and s.faults.served == {"empty": 1}


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_empty_answers_forever_move_the_checkpoint_past_no_trade(tmp_path, exchange):
    res, store, s, b, lo = _hostile(tmp_path, exchange, FaultPlan(page_rates={"empty": 1.0}))
    cp = Checkpoints(store).load(exchange, b.product_id)
    assert (cp.lo, cp.hi) == (lo, lo) and res.trades == 0, (cp, res)
    assert not list(tmp_path.rglob("*.jsonl.gz")), "nothing may land"
    asked = paging_requests(s)
    n = load_exchange(exchange).source.trades.pagination.empty_retries
    assert len(asked) >= 1 + n, f"an empty answer must be asked again {n} times before it is believed: {asked}"
    if exchange == "kraken":
        # Kraken's head is the clock: "no trades after the cursor" is a possible answer; believed after re-asks.
        assert res.status == "ok", res
    else:
        assert res.status == "failed" and "no trades" in res.message, res


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_a_trade_printed_twice_in_a_page_reaches_raw_verbatim_with_a_truthful_header(tmp_path, exchange):
    res, store, s, b, lo = _hostile(tmp_path, exchange, FaultPlan(page_script=deque([None, "dup"])))
    assert res.status == "ok" and res.duplicates == 1, res
    objects = raw_lines(store, s, b.product_id)
    all_ids = [i for _, _, ids in objects for i in ids]
    twice = {i for i in all_ids if all_ids.count(i) == 2}
    assert len(twice) == 1 and len(all_ids) == 601 and set(all_ids) == set(s.expected_ids(b, lo, s.cursor_of(b, b.head())))
    for key, header, ids in objects:
        assert header["count"] == len(ids) and (header["min_id"], header["max_id"]) == (min(ids), max(ids)), key
    (dup,) = twice
    key, _, ids = next(o for o in objects if dup in o[2])
    assert ids.count(dup) == 2, "the duplicate is kept in one object, as the page had it"


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_trades_from_the_page_before_or_below_the_cursor_are_reported_and_not_landed_twice(tmp_path, exchange):
    # A page also carries the three trades below its cursor; a later one the last trade of its predecessor.
    # (Kraken's first page of a run is its own case: tests/hostile/test_paging.py.)
    res, store, s, b, lo = _hostile(tmp_path, exchange, FaultPlan(page_script=deque([None, "below", "dup_across"])),
                                    after=50)
    _all_landed(store, s, b, lo, res)
    assert res.ids_backwards == 4 and res.duplicates == 0, res
    assert any("backwards" in w or "outside" in w for w in res.warnings), res.warnings


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_ids_out_of_order_in_a_page_are_reported(tmp_path, exchange):
    res, store, s, b, lo = _hostile(tmp_path, exchange, FaultPlan(page_script=deque([None, "backwards"])))
    _all_landed(store, s, b, lo, res)
    assert res.ids_backwards == 1 and any("out of order" in w for w in res.warnings), res


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_ids_missing_from_the_middle_of_a_page_are_asked_for_again(tmp_path, exchange):
    res, store, s, b, lo = _hostile(tmp_path, exchange, FaultPlan(page_script=deque([None, "hole", None, "hole"])))
    _all_landed(store, s, b, lo, res)
    assert res.missing_ids == 0 and res.trades == 600 and s.faults.served == {"hole": 2}, res


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_ids_the_exchange_never_printed_are_gaps_only_once_it_confirms_them(tmp_path, exchange):
    b0 = book(exchange).first_id
    missing = {b0 + 150, b0 + 151, b0 + 152, b0 + 407}  # inside pages (all exchanges' ids are contiguous)
    res, store, s, b, lo = _hostile(tmp_path, exchange, FaultPlan(), missing=missing)
    got = _all_landed(store, s, b, lo, res)
    assert len(got) == 596 and not set(got) & missing
    assert res.missing_ids == 4, res
    assert sum("missing, confirmed" in w for w in res.warnings) == 2, res.warnings


@pytest.mark.parametrize("exchange", ID_KINDS)
def test_a_misprinted_head_is_confirmed_before_it_is_used_and_no_later_trade_is_skipped(tmp_path, exchange):
    import time as _time

    b = book(exchange, initial=600)
    store = LocalStore(str(tmp_path))
    with sim(exchange, [b], faults=FaultPlan(head_script=deque(["misprint"]))) as s:
        src = source(exchange, s.url, page_size=100)
        p = _product(src, exchange)
        lo = steady_state(store, s, b, b.first_id - 1)
        res = Lander(store, src).run(p, IngestOptions(), deadline=_time.monotonic() + 20)
        assert s.faults.served == {"head_misprint": 1}
        _all_landed(store, s, b, lo, res)
        assert any("asked again" in w for w in res.warnings), res.warnings
        b.initial += 50  # trades after it land on the next run
        res2 = Lander(store, src).run(p, IngestOptions(), deadline=_time.monotonic() + 20)
    assert res2.trades == 50, res2
    _all_landed(store, s, b, lo, res2)


def test_kraken_a_misprinted_cursor_is_asked_again_and_no_later_trade_is_skipped(tmp_path):
    b = book("kraken", initial=600)
    store = LocalStore(str(tmp_path))
    with sim("kraken", [b], faults=FaultPlan(page_script=deque([None, "misprint_cursor"]))) as s:
        src = source("kraken", s.url, page_size=100)
        p = _product(src, "kraken")
        lo = steady_state(store, s, b, b.first_id - 1)
        res = Lander(store, src).run(p, IngestOptions())
        _all_landed(store, s, b, lo, res)
        b.initial += 50
        res2 = Lander(store, src).run(p, IngestOptions())
    assert s.faults.served == {"misprint_cursor": 1}
    assert res2.trades == 50, res2
    _all_landed(store, s, b, lo, res2)
