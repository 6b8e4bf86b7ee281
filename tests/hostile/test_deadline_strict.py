"""The run's deadline (--max-seconds, the Lambda's again_until) is strict for every kind of wait, always, not
only during a 429 penalty: no limiter spacing, retry backoff, Retry-After or weight pause sleeps past it, and no
request is sent (or kept waiting on) after it. Waits go through a FakeClock: what a wait would have cost is
read from clock.slept, and the scripted server records what was sent."""

from __future__ import annotations

import random
import time

import pytest

from schemahub.clock import FakeClock
from schemahub.errors import DeadlineReached
from schemahub.sources.http import HttpClient, RateLimiter, WeightBudget
from tests.hostile.scripted import Answer, ScriptedServer

OK = Answer(200, body=b'[{"trade_id":1}]')


@pytest.fixture
def srv():
    with ScriptedServer(default=OK) as s:
        yield s


@pytest.fixture
def clock():
    return FakeClock(start=time.time())


def _client(clock, rate: tuple[float, int] = (1000.0, 10), **kw) -> HttpClient:
    kw.setdefault("max_attempts", 8)
    return HttpClient(name="x", rate=RateLimiter(*rate, clock), clock=clock, rng=random.Random(7), **kw)


def _slept_past(clock, start: float, deadline: float) -> bool:
    return clock.monotonic() > deadline + 1e-9  # a FakeClock moves only by sleeping


def test_the_limiters_spacing_never_sleeps_past_the_deadline_without_any_penalty(srv, clock):
    # GIVEN one request per 10 s and its one token spent; no 429 anywhere
    http = _client(clock, (0.1, 1))
    http.get(srv.url + "/trades")
    start = clock.monotonic()
    # WHEN the run has 3 s left
    with pytest.raises(DeadlineReached):
        http.get(srv.url + "/trades", deadline=start + 3.0)
    # THEN it did not sleep the 10 s the limiter would have asked, and sent nothing more
    assert not _slept_past(clock, start, start + 3.0), clock.slept
    assert len(srv.seen) == 1


def test_no_request_is_sent_once_the_deadline_has_passed(srv, clock):
    http = _client(clock)
    with pytest.raises(DeadlineReached):
        http.get(srv.url + "/trades", deadline=clock.monotonic() - 0.001)
    assert srv.seen == []


def test_retry_backoff_never_sleeps_past_the_deadline(srv, clock):
    srv.script("/trades", Answer(503, body=b"busy"), OK)
    http = _client(clock, base_delay_s=5.0, max_delay_s=5.0)
    start = clock.monotonic()
    with pytest.raises(DeadlineReached):
        http.get(srv.url + "/trades", deadline=start + 1.0)
    assert not _slept_past(clock, start, start + 1.0), clock.slept


def test_a_retry_after_never_sleeps_past_the_deadline(srv, clock):
    srv.script("/trades", Answer(429, {"Retry-After": "30"}, b"slow down"), OK)
    http = _client(clock)
    start = clock.monotonic()
    with pytest.raises(DeadlineReached):
        http.get(srv.url + "/trades", deadline=start + 10.0)
    assert not _slept_past(clock, start, start + 10.0), clock.slept


def test_a_weight_pause_never_sleeps_past_the_deadline(srv, clock):
    srv.script("/trades", Answer(200, {"X-W": "1200"}, b"[]"))
    http = _client(clock, weight=WeightBudget("X-W", 1200, 60.0, clock=clock))
    http.get(srv.url + "/trades")  # the budget is spent: the next request waits for the window to turn
    start = clock.monotonic()
    with pytest.raises(DeadlineReached):
        http.get(srv.url + "/trades", deadline=start + 0.01)
    assert not _slept_past(clock, start, start + 0.01), clock.slept
    assert len(srv.seen) == 1
