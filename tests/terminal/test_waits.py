"""Every wait of a run is told to the progress (what for, how long) and ends at once on Ctrl-C."""

from __future__ import annotations

import threading

import pytest

from schemahub.clock import FakeClock, StoppableClock
from schemahub.errors import Interrupted
from schemahub.sources.http import HttpClient, RateLimiter, WeightBudget


class _Pool:
    """The HTTP port answering from a list: (status, headers)."""

    def __init__(self, answers):
        self.answers = list(answers)

    def request(self, method, url, **kw):
        status, headers = self.answers.pop(0)
        return _Resp(status, headers)


class _Resp:
    def __init__(self, status, headers):
        self.status, self.headers, self._body = status, headers, [b"[]"]
        self.connection = None

    def read1(self, n):
        return self._body.pop() if self._body else b""

    def close(self):
        pass

    def release_conn(self):
        pass


def test_waits_are_reported_with_their_reason_and_length():
    clock = FakeClock(start=1_767_225_630.0)  # 30 s into a minute
    told = []
    http = HttpClient(name="binance", rate=RateLimiter(1, 1, clock), clock=clock, max_attempts=3,
                      weight=WeightBudget("X-MBX-USED-WEIGHT-1M", 6000, 60, 0.8, clock),
                      pool=_Pool([(200, {"X-MBX-USED-WEIGHT-1M": "5000"}), (429, {"Retry-After": "7"}), (200, {})]))
    http.on_wait = lambda reason, s: told.append((reason, round(s, 2)))
    http.get("http://x/a")  # the weight is over 80 %: the next request waits for the minute to turn
    http.get("http://x/b")  # the limiter (1/s) paces it, the 429 asks for 7 s
    reasons = [r for r, _ in told]
    assert ("weight budget", 29.05) in told  # after the limiter's 1 s, 29.05 s to the turn of the minute
    assert "Retry-After 7 s" in reasons
    assert reasons[0] == "rate limit"


def test_a_long_wait_ends_at_once_when_the_run_is_stopped():
    clock = StoppableClock()  # real time underneath
    weight = WeightBudget("X-MBX-USED-WEIGHT-1M", 6000, 3600, 0.8, clock)  # an hour-long window
    weight.observe({"X-MBX-USED-WEIGHT-1M": "6000"})
    raised = []

    def wait():
        try:
            weight.wait()
        except Interrupted as e:
            raised.append(e)

    t = threading.Thread(target=wait, daemon=True)
    t.start()
    t.join(0.2)
    assert t.is_alive()  # it is waiting
    clock.stop()
    t.join(10)  # far less than the hour the window has left
    assert not t.is_alive() and raised


def test_a_stopped_clock_refuses_to_sleep_again():
    clock = StoppableClock(FakeClock())
    clock.sleep(5)
    clock.stop()
    with pytest.raises(Interrupted):
        clock.sleep(0.1)
