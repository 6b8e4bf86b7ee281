"""Kraken: a hole is confirmed only by a request of another shape (from just before the hole), never by the same
request answered the same way twice, as a cache or a flaky edge would (found by a hostile review)."""

from __future__ import annotations

import time

import pytest

from schemahub.landing import Checkpoints, IngestOptions, Lander
from schemahub.sim import FaultPlan
from schemahub.store.local import LocalStore
from tests.contract.harness import assert_exactly_once, book, sim, source, steady_state


@pytest.mark.parametrize("seed", [4, 7])
@pytest.mark.parametrize("cap", [None, 37])
def test_transient_holes_served_twice_are_not_taken_for_gaps(tmp_path, cap, seed):
    # GIVEN a Kraken whose pages leave out a run of ids 30% of the time, at the same place for the same request
    b = book("kraken", initial=3_000)
    store = LocalStore(str(tmp_path))
    with sim("kraken", [b], faults=FaultPlan(page_rates={"hole": 0.3}, page_cap=cap, seed=seed)) as s:
        src = source("kraken", s.url)
        p = next(p for p in src.list_products() if p.product_id == "BTC-USD")
        steady_state(store, s, b, b.first_id - 1 + 100)
        # WHEN a run lands up to the head
        res = Lander(store, src).run(p, IngestOptions(), deadline=time.monotonic() + 30)
        # THEN every trade the exchange has is landed exactly once, and no gap was "confirmed"
        cp = Checkpoints(store).load("kraken", b.product_id)
        assert res.status == "ok" and res.missing_ids == 0, res
        assert s.faults.served.get("hole", 0) > 0
        assert_exactly_once(store, s, b, cp.lo, cp.hi)
