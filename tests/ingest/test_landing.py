"""Landing semantics: first run, incremental runs, backfill, crash repair, budgets, leases, dry runs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from schemahub.clock import SYSTEM_CLOCK
from schemahub.errors import SchemahubError
from schemahub.landing import (
    Checkpoint,
    Checkpoints,
    IngestOptions,
    Lander,
    Lease,
)
from schemahub.layout import checkpoint_key, raw_key
from schemahub.rawobject import encode as encode_raw
from schemahub.rawobject import make_header, read_header
from schemahub.sim import Book, CoinbaseSim, FaultPlan
from schemahub.sources.base import Product
from tests.contract import harness

P = Product("BTC-USD", "BTC-USD", "BTC", "USD")


def _once(store, book: Book, lo: int, hi: int) -> None:
    harness.assert_exactly_once(store, CoinbaseSim([]), book, lo, hi)


def _book(**kw) -> Book:
    kw.setdefault("first_id", 5_000_001)
    kw.setdefault("initial", 3_500)
    kw.setdefault("interval_us", 1_000_000)
    return Book("BTC-USD", **kw)


def _since_of(book: Book, tid: int) -> datetime:
    return datetime.fromtimestamp(book.time_us(tid) / 1e6, tz=timezone.utc)


@pytest.fixture
def sim():
    book = _book()
    with CoinbaseSim([book]) as s:
        s.book = book
        yield s


def test_first_run_starts_at_since_and_lands_up_to_head(store, sim, make_source):
    book = sim.book
    first = book.first_id + 1234
    res = Lander(store, make_source(sim.url)).run(P, IngestOptions(since=_since_of(book, first)))
    assert res.status == "ok" and not res.more_to_do
    assert (res.lo, res.hi) == (first - 1, book.head())
    assert res.trades == book.head() - first + 1
    _once(store, book, first - 1, book.head())


def test_first_run_without_since_uses_the_mapping_lookback(store, make_source):
    # 2 trades/s for 30 h: the 24 h lookback must start ~24 h before now.
    book = _book(initial=216_000, interval_us=500_000)
    with CoinbaseSim([book]) as s:
        lander = Lander(store, make_source(s.url))
        t0 = datetime.now(timezone.utc) - timedelta(hours=24)
        res = lander.run(P, IngestOptions(dry_run=True))
        t1 = datetime.now(timezone.utc) - timedelta(hours=24)
    start = res.plan["start_cursor"]
    assert _since_of(book, start) < t1 and t0 <= _since_of(book, start + 1)


def test_incremental_run_lands_only_new_trades(store, sim, make_source):
    book, lander = sim.book, Lander(store, make_source(sim.url))
    first = book.first_id + 3000
    lander.run(P, IngestOptions(since=_since_of(book, first)))
    book.initial += 2345  # new trades arrive
    res = lander.run(P, IngestOptions())
    assert res.trades == 2345 and res.hi == book.head()
    _once(store, book, first - 1, book.head())


def test_backfill_to_an_earlier_since_fills_below_lo_without_overlap(store, sim, make_source):
    book, lander = sim.book, Lander(store, make_source(sim.url))
    first = book.first_id + 2500
    lander.run(P, IngestOptions(since=_since_of(book, first)))
    older = book.first_id + 100
    res = lander.run(P, IngestOptions(since=_since_of(book, older)))
    assert res.status == "ok" and res.lo == older - 1
    _once(store, book, older - 1, book.head())
    cp = Checkpoints(store).load("coinbase", "BTC-USD")
    assert cp.backfill_target is None and cp.lo == older - 1


def test_rerun_after_crash_between_raw_write_and_checkpoint_adopts_the_object(store, sim, make_source):
    book, lander = sim.book, Lander(store, make_source(sim.url, page_size=200))
    first = book.first_id + 1000
    lander.run(P, IngestOptions(since=_since_of(book, first)))
    cps = Checkpoints(store)
    done = cps.load("coinbase", "BTC-USD")
    # Roll the checkpoint back to the start of the last object, as if the run died right after writing it.
    last = list(store.list("raw/coinbase/BTC-USD/"))[-1].key
    prev_start = int(last.rsplit("/", 1)[1].split(".")[0])
    assert prev_start > first - 1
    store.put(checkpoint_key("coinbase", "BTC-USD"),
              Checkpoint("coinbase", "BTC-USD", done.lo, prev_start).to_json(), if_match=done.etag)
    res = lander.run(P, IngestOptions())
    assert res.adopted == 1 and res.trades == 0 and res.hi == book.head()
    _once(store, book, first - 1, book.head())


def test_max_seconds_stops_at_a_page_boundary_and_reports_more_to_do(store, sim, make_source):
    book = sim.book
    src = make_source(sim.url, page_size=100)
    fetch = src.fetch

    def slow_pages(*a, **kw):
        # The deadline is strict for every wait (tests/hostile/test_deadline_strict.py), so the start-cursor
        # search for `since` (two dozen probes) runs at full speed; the pages then come at 4/s at most.
        if src.http.rate.rate != 4.0:
            from schemahub.sources.http import RateLimiter

            src.http.rate = RateLimiter(4.0, 1, src.http.clock)
        return fetch(*a, **kw)

    src.fetch = slow_pages
    first = book.first_id
    import time

    res = Lander(store, src).run(P, IngestOptions(since=_since_of(book, first)), deadline=time.monotonic() + 1.5)
    assert res.status == "ok" and res.more_to_do and 0 < res.hi < book.head()
    # Whatever landed is a clean prefix.
    _once(store, book, first - 1, res.hi)
    res2 = Lander(store, make_source(sim.url)).run(P, IngestOptions())
    assert not res2.more_to_do
    _once(store, book, first - 1, book.head())


def test_dry_run_writes_nothing_and_plans(store, sim, make_source):
    res = Lander(store, make_source(sim.url)).run(P, IngestOptions(since=_since_of(sim.book, sim.book.first_id + 10), dry_run=True))
    assert res.status == "planned" and res.plan["to_land"] == sim.book.head() - (sim.book.first_id + 9)
    assert list(store.list("")) == []


def test_resume_does_not_start_new_products(store, sim, make_source):
    res = Lander(store, make_source(sim.url)).run(P, IngestOptions(resume=True))
    assert res.status == "skipped" and "checkpoint" in res.message
    assert list(store.list("raw/")) == []


def test_a_held_lease_makes_the_second_run_skip_and_say_so(store, sim, make_source):
    holder = Lease(store, "coinbase", "BTC-USD", 60, SYSTEM_CLOCK)
    holder.acquire()
    res = Lander(store, make_source(sim.url)).run(P, IngestOptions(since=_since_of(sim.book, sim.book.first_id)))
    assert res.status == "skipped" and "held by" in res.message
    assert list(store.list("raw/")) == []
    holder.release()
    res = Lander(store, make_source(sim.url)).run(P, IngestOptions(since=_since_of(sim.book, sim.book.first_id)))
    assert res.status == "ok"


def test_retry_budget_exhaustion_fails_loudly_and_advances_nothing_more(store, sim, make_source):
    book, first = sim.book, sim.book.first_id + 500
    src = make_source(sim.url, attempts=3)
    lander = Lander(store, src)
    lander.run(P, IngestOptions(since=_since_of(book, first)))
    before = Checkpoints(store).load("coinbase", "BTC-USD")
    book.initial += 3000
    sim.faults.rates = {"500": 1.0}
    res = lander.run(P, IngestOptions())
    assert res.status == "failed" and "gave up" in res.message and "HTTP 500" in res.message
    assert Checkpoints(store).load("coinbase", "BTC-USD").hi == before.hi
    sim.faults.rates = {}
    assert lander.run(P, IngestOptions()).status == "ok"
    _once(store, book, first - 1, book.head())


def test_checkpoint_never_moves_backward(store):
    cps = Checkpoints(store)
    cp = cps.create(Checkpoint("coinbase", "BTC-USD", 100, 200))
    from dataclasses import replace

    with pytest.raises(SchemahubError, match="backward"):
        cps.update(cp, lambda c: replace(c, hi=150))
    assert cps.load("coinbase", "BTC-USD").hi == 200


def test_missing_checkpoint_with_existing_raw_objects_refuses_to_guess(store, sim, make_source):
    store.put(raw_key("coinbase", "BTC-USD", 42), encode_raw(_header(42, 50, [1]), [b"{}"]))
    res = Lander(store, make_source(sim.url)).run(P, IngestOptions())
    assert res.status == "failed" and "missing" in res.message


def test_raw_object_is_deterministic_and_its_header_is_cheap_to_read():
    header = _header(1, 3, [2, 3])
    a = encode_raw(header, [b'{"a":1}', b'{"a":2}'])
    assert a == encode_raw(header, [b'{"a":1}', b'{"a":2}'])
    h = read_header(a, "k")
    assert (h.start, h.end, h.count, h.min_id, h.max_id, h.doc) == (1, 3, 2, 2, 3, header)


@pytest.mark.parametrize("fault", ["429", "429_plain", "500", "502_html", "200_html", "truncated", "truncated_json", "drop", "slow"])
def test_each_transient_fault_is_retried_and_lands_exactly_once(tmp_path, make_source, fault):
    from schemahub.store.local import LocalStore

    book = _book(initial=2500)
    plan = FaultPlan(script=__import__("collections").deque([fault, fault]), retry_after_s=0, slow_s=0.6)
    with CoinbaseSim([book], faults=plan) as s:
        store = LocalStore(str(tmp_path))
        res = Lander(store, make_source(s.url, timeout=0.3)).run(P, IngestOptions(since=_since_of(book, book.first_id)))
    assert res.status == "ok", res.message
    assert plan.served[fault] == 2
    _once(store, book, book.first_id - 1, book.head())


def test_retry_after_is_honoured(tmp_path, make_source):
    import time

    from schemahub.store.local import LocalStore

    book = _book(initial=10)
    plan = FaultPlan(script=__import__("collections").deque(["429"]), retry_after_s=1)
    with CoinbaseSim([book], faults=plan) as s:
        src = make_source(s.url)
        t0 = time.monotonic()
        src.head("BTC-USD")
        assert time.monotonic() - t0 >= 1.0
        assert src.http.stats.rate_limited == 1
    assert LocalStore(str(tmp_path))


def test_client_rate_limit_keeps_under_the_exchange_limit(tmp_path, make_source):
    # The simulator enforces 10/s with bursts of 15; our limiter at the mapping's
    # budget never trips it.
    from schemahub.ingest import make_source as real_make_source

    book = _book(initial=40)
    with CoinbaseSim([book], rate_limit=(10, 15)) as s:
        src = real_make_source("coinbase", base_url=s.url)
        for _ in range(25):
            src.head("BTC-USD")
        assert src.http.stats.rate_limited == 0 and src.http.stats.retries == 0


def test_an_object_landed_by_another_run_mid_walk_is_followed_not_duplicated(tmp_path, sim, make_source):
    # GIVEN a run whose first create-only put finds that another run (after a
    # lease expiry) just landed a shorter object at the same key
    from schemahub.store.local import LocalStore

    book = sim.book
    first = book.first_id
    store = LocalStore(str(tmp_path))

    class Racing(LocalStore):
        raced = False

        def put(self, key, data, **kw):
            if key.startswith("raw/") and not Racing.raced:
                Racing.raced = True
                other = [book.trade_bytes(i) for i in range(first, first + 50)]
                header = _header(first - 1, first + 49, list(range(first, first + 50)))
                super().put(key, encode_raw(header, other), if_none_match=True)
            return super().put(key, data, **kw)

    racing = Racing(str(tmp_path))
    # WHEN we land
    res = Lander(racing, make_source(sim.url, page_size=200)).run(P, IngestOptions(since=_since_of(book, first)))
    # THEN we follow the other run's object and land every trade exactly once
    assert Racing.raced and res.status == "ok" and res.hi == book.head()
    _once(store, book, first - 1, book.head())


def _header(start: int, end: int, ids: list[int]) -> dict:
    return make_header(exchange="coinbase", product_id="BTC-USD", symbol="BTC-USD", start=start, end=end,
                       count=len(ids), min_id=min(ids), max_id=max(ids), fetched_at="2026-11-29T00:00:00Z", requests=[])
