"""Kraken's cursor is a time, so a run's first page carries no id before it: a repeat or a hole at the start of
that page is only visible against the last trade the previous run landed (found by a hostile review)."""

from __future__ import annotations

import time
from collections import deque

import pytest

from schemahub.landing import Checkpoints, IngestOptions, Lander
from schemahub.sim import FaultPlan
from schemahub.store.local import LocalStore
from tests.contract.harness import assert_exactly_once, book, since_of, sim, source


def _first_run(store, s, b):
    src = source("kraken", s.url)
    p = next(p for p in src.list_products() if p.product_id == b.product_id)
    r1 = Lander(store, src).run(p, IngestOptions(since=since_of(b, b.first_id)), deadline=time.monotonic() + 30)
    assert r1.status == "ok", r1
    return p


@pytest.mark.parametrize("fault", ["dup_across", "below"])
def test_a_repeat_at_the_start_of_the_next_run_is_not_landed_twice(tmp_path, fault):
    # GIVEN a first run that landed everything, and new trades since
    b = book("kraken", initial=1_000, live_per_s=50.0)
    store = LocalStore(str(tmp_path))
    with sim("kraken", [b], faults=FaultPlan()) as s:
        p = _first_run(store, s, b)
        time.sleep(1.0)
        # WHEN the next run (a new process) gets a first page that repeats trades already landed
        s.faults.page_script = deque([fault])
        r2 = Lander(store, source("kraken", s.url)).run(p, IngestOptions(), deadline=time.monotonic() + 30)
        # THEN every trade is in raw exactly once, and the repeat is reported
        cp = Checkpoints(store).load("kraken", b.product_id)
        assert_exactly_once(store, s, b, cp.lo, cp.hi)
        assert r2.status == "ok" and r2.ids_backwards > 0, r2


def test_a_hole_at_the_start_of_the_next_run_is_asked_again(tmp_path):
    b = book("kraken", initial=1_000, live_per_s=50.0)
    store = LocalStore(str(tmp_path))
    with sim("kraken", [b], faults=FaultPlan()) as s:
        p = _first_run(store, s, b)
        time.sleep(1.5)
        orig, calls = s.hostile, {"n": 0}

        def hostile(book_, ids, *, newest_first):  # the next run's first answer leaves out its first 5 trades, once
            out, kind = orig(book_, ids, newest_first=newest_first)
            calls["n"] += 1
            return (out[5:] if calls["n"] == 1 else out), kind

        s.hostile = hostile
        r2 = Lander(store, source("kraken", s.url)).run(p, IngestOptions(), deadline=time.monotonic() + 30)
        cp = Checkpoints(store).load("kraken", b.product_id)
        assert r2.status == "ok", r2
        assert_exactly_once(store, s, b, cp.lo, cp.hi)
