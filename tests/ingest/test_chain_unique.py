"""The raw chain stays unique in every case: empty ranges land an object, racing runs cannot overlap.

Ground truth is the scripted tape (which ids exist) and the chain read back with
the one raw reader; never the lander's own counters.
"""

from __future__ import annotations

import pytest

from schemahub.landing import Checkpoints, IngestOptions, Lander
from schemahub.sources.base import Product
from tests.contract import harness
from tests.ingest.scripted import P, FakeClock, ScriptedSource, chain, landed_ids, since


KRAKEN = Product("BTC-USD", harness.NATIVE["kraken"], "BTC", "USD")


def _linked(ch: list[tuple[int, int, int]], lo: int, hi: int) -> None:
    """The chain covers (lo, hi] with no gap and no overlap: each object starts where the previous ended."""
    assert ch, "no raw object"
    assert ch[0][0] == lo and ch[-1][1] == hi, ch
    for (_, end, _), (start, _, _) in zip(ch, ch[1:]):
        assert start == end, f"chain broken or overlapping at {end} -> {start}: {ch}"


def test_an_empty_range_lands_a_header_only_object_and_hi_moves_only_to_its_end(store):
    # GIVEN ids 101..200 never traded (a confirmed gap of a whole page)
    present = [*range(1, 101), *range(201, 301)]
    src = ScriptedSource(present, head=300)
    # WHEN a run lands (0, 300]
    res = Lander(store, src, clock=FakeClock()).run(P, IngestOptions(since=since(0)))
    # THEN the gap is an object with a header and no trades, and every step of the chain is an object
    assert res.status == "ok", res.message
    ch = chain(store)
    assert (100, 200, 0) in ch
    _linked(ch, 0, 300)
    cp = Checkpoints(store).load("coinbase", "BTC-USD")
    assert (cp.lo, cp.hi, cp.last) == (0, 300, 200)
    assert sorted(landed_ids(store)) == present


def test_an_idle_product_adds_no_object(store):
    # An empty range with end > start costs an object; a run that finds nothing new (end == start) costs none.
    src = ScriptedSource(range(1, 51), head=50)
    lander = Lander(store, src, clock=FakeClock())
    lander.run(P, IngestOptions(since=since(0)))
    before = chain(store)
    for _ in range(3):
        assert lander.run(P, IngestOptions()).status == "ok"
    assert chain(store) == before == [(0, 50, 50)]


def test_a_slower_run_after_a_lease_expiry_cannot_land_an_object_overlapping_an_empty_range(store):
    """The #9 race: an empty group moved hi with no object at key(old hi); a slower run then wrote key(old hi)
    over a longer range (on 890bd3a: 500 rows for 300 ids, every run ok)."""
    clock = FakeClock()
    present = [*range(1, 101), *range(201, 401)]  # 101..200: a gap one page wide
    Lander(store, ScriptedSource(range(1, 101), head=100), clock=clock).run(P, IngestOptions(since=since(0)))
    opts = IngestOptions(lease_ttl_s=60)
    results = {}

    def other_runs() -> None:
        # B's lease (60 s) expires while B waits on its second page; A takes over with --max-seconds and
        # gets through only the empty page, then A2 finishes the walk.
        clock.advance(120)
        a = ScriptedSource(present, head=400, pages_per_object=3)
        results["A"] = Lander(store, a, clock=clock).run(P, opts, deadline=clock.monotonic() + 0.5)
        results["A2"] = Lander(store, ScriptedSource(present, head=400, pages_per_object=3), clock=clock).run(P, opts)

    b = ScriptedSource(present, head=400, pages_per_object=3)  # B: one object of three pages, (100, 400]
    b.hooks[2] = other_runs
    results["B"] = Lander(store, b, clock=clock).run(P, opts)

    assert "A2" in results and results["A"].more_to_do
    assert all(r.status in ("ok", "skipped") for r in results.values()), {k: r.message for k, r in results.items()}
    ids = landed_ids(store)
    assert len(ids) == len(set(ids)), f"{len(ids)} rows for {len(set(ids))} ids"
    assert sorted(ids) == present
    cp = Checkpoints(store).load("coinbase", "BTC-USD")
    _linked(chain(store), 0, 400)
    assert cp.hi == 400


def test_a_stale_run_cannot_land_at_a_chain_start_that_an_empty_chain_moved_away_from(store):
    # GIVEN a source that cannot backfill (like Kraken) and a first run that landed nothing (offline)
    clock = FakeClock()
    present = range(1, 301)
    off = ScriptedSource(present, head=300, backfill=False)
    off.offline = True
    assert Lander(store, off, clock=clock).run(P, IngestOptions(since=since(200))).status == "failed"
    results = {}

    def earlier_run() -> None:
        # WHILE a stale run (lease expired) is fetching from 200, an operator's run asks for an earlier --since
        clock.advance(120)
        r = ScriptedSource(present, head=300, backfill=False, pages_per_object=10)
        results["R"] = Lander(store, r, clock=clock).run(P, IngestOptions(since=since(0), lease_ttl_s=60))

    w = ScriptedSource(present, head=300, backfill=False, pages_per_object=10)
    w.hooks[1] = earlier_run
    results["W"] = Lander(store, w, clock=clock).run(P, IngestOptions(lease_ttl_s=60))
    # THEN the earlier run moved the empty chain's start, and the stale run followed it instead of landing key(200)
    assert results["R"].status == "ok", results["R"].message
    assert results["W"].status in ("ok", "skipped"), results["W"].message
    ids = landed_ids(store)
    assert sorted(ids) == list(present), f"{len(ids)} rows for {len(set(ids))} ids"
    _linked(chain(store), 0, 300)


def test_a_first_run_that_lands_nothing_does_not_block_an_earlier_since_on_kraken(store):
    # GIVEN Kraken offline on the first run (the default 24 h lookback): nothing lands
    b = harness.book("kraken", initial=400)
    dead = harness.source("kraken", "http://127.0.0.1:9", retry={"max_attempts": 1, "base_delay_s": 0.01,
                                                                  "max_delay_s": 0.01})
    first = Lander(store, dead).run(KRAKEN, IngestOptions())
    assert first.status == "failed"
    # WHEN it is back and an operator asks for an earlier --since (before the lookback)
    with harness.sim("kraken", [b]) as s:
        early = harness.since_of(b, b.first_id) - __import__("datetime").timedelta(days=2)
        res = Lander(store, harness.source("kraken", s.url, page_size=100)).run(KRAKEN, IngestOptions(since=early))
        # THEN it lands from there, exactly once, with no "cannot bound a backfill"
        assert res.status == "ok", res.message
        cp = Checkpoints(store).load("kraken", "BTC-USD")
        harness.assert_exactly_once(store, s, b, cp.lo, cp.hi)
        assert len(harness.landed(store, s, "BTC-USD")) == 400


def test_kraken_still_refuses_an_earlier_since_once_trades_have_landed(store):
    b = harness.book("kraken", initial=300)
    with harness.sim("kraken", [b]) as s:
        lander = Lander(store, harness.source("kraken", s.url, page_size=100))
        assert lander.run(KRAKEN, IngestOptions(since=harness.since_of(b, b.first_id + 100))).status == "ok"
        res = lander.run(KRAKEN, IngestOptions(since=harness.since_of(b, b.first_id)))
    assert res.status == "failed" and "cannot bound a backfill" in res.message


def test_an_earlier_since_during_a_backfill_is_queued_not_dropped(store):
    # GIVEN a landed range (2000, 3000] and a backfill to 1000 cut short by the deadline
    clock = FakeClock()
    present = range(1, 3001)
    lander = Lander(store, ScriptedSource(present, head=3000, page_size=100), clock=clock)
    assert lander.run(P, IngestOptions(since=since(2000))).status == "ok"
    res = lander.run(P, IngestOptions(since=since(1000)), deadline=clock.monotonic() + 0.5)
    cp = Checkpoints(store).load("coinbase", "BTC-USD")
    assert cp.backfill_target == 1000 and cp.backfill_cursor < 2000, (res, cp)
    # WHEN a still earlier --since comes while that backfill is in progress
    res = lander.run(P, IngestOptions(since=since(500)), deadline=clock.monotonic() + 0.5)
    assert "queued" in res.message
    # THEN it is kept, and later runs land (500, 3000] exactly once
    for _ in range(40):
        res = lander.run(P, IngestOptions())
        cp = Checkpoints(store).load("coinbase", "BTC-USD")
        if cp.backfill_target is None:
            break
    assert (cp.lo, cp.hi, cp.backfill_target, cp.backfill_next) == (500, 3000, None, None)
    assert sorted(landed_ids(store)) == list(range(501, 3001))
    _linked(chain(store), 500, 3000)


@pytest.mark.parametrize("pages_per_object", [1, 3])
def test_gaps_everywhere_still_give_one_linked_chain(store, pages_per_object):
    # Ids exist only in every third page: most groups are partly or wholly empty.
    present = [i for i in range(1, 1501) if (i - 1) // 100 % 3 == 0]
    src = ScriptedSource(present, head=1500, pages_per_object=pages_per_object)
    assert Lander(store, src, clock=FakeClock()).run(P, IngestOptions(since=since(0))).status == "ok"
    _linked(chain(store), 0, 1500)
    assert sorted(landed_ids(store)) == present


