"""Bounded waits and sizes against a hostile HTTP peer (issue #9, item 6; the HTTP side of item 7).

Every wait the client makes is bounded: a Retry-After is capped and never slept
past the run's deadline, a penalty on the shared rate limiter never holds other
products past theirs, a whole request (not only each read) has a deadline, a ban
lasts at most Binance's documented maximum of 3 days, and a response body has a
size cap. Waits go through a FakeClock, so a day-long Retry-After costs no real
time; only the slow-drip tests need real seconds (about one each).
"""

from __future__ import annotations

import random
import socket
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from schemahub.clock import SYSTEM_CLOCK, FakeClock
from schemahub.errors import DeadlineReached, ExchangeBanned, RetryBudgetExhausted, SchemahubError, SourceError
from schemahub.landing import IngestOptions, active_ban, record_ban
from schemahub.sources.http import HttpClient, RateLimiter, WeightBudget
from schemahub.store.local import LocalStore
from tests.hostile.scripted import Answer, ScriptedServer

DAY = 86_400.0
BINANCE_MAX_BAN_S = 3 * DAY  # API_NOTES.md: "an IP ban that lasts from 2 minutes to 3 days"
OK = Answer(200, body=b'[{"trade_id":1}]')


def _client(clock=SYSTEM_CLOCK, **kw) -> HttpClient:
    kw.setdefault("max_attempts", 8)
    return HttpClient(name="hostilex", rate=RateLimiter(1000.0, 10, clock), clock=clock, rng=random.Random(7), **kw)


def _too_many(retry_after: str) -> Answer:
    return Answer(429, {"Retry-After": retry_after}, b'{"message":"slow down"}')


def _one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text and "object at 0x" not in text, text
    return text


@pytest.fixture
def srv():
    with ScriptedServer() as s:
        yield s


@pytest.fixture
def clock():
    return FakeClock(start=time.time())


# ---------------------------------------------------------------- Retry-After

def test_a_day_long_retry_after_is_not_slept_the_product_stops_naming_the_cap(srv, clock):
    # GIVEN an exchange that answers 429 with Retry-After: 86400 (one day), then would serve the page
    srv.script("/trades", _too_many("86400"), OK)
    http = _client(clock)
    # WHEN a run without --max-seconds asks for the page
    with pytest.raises(RetryBudgetExhausted) as e:
        http.get(srv.url + "/trades")
    # THEN it waits no day (nothing at all: the wait is longer than the cap), sends nothing more, and says why
    assert sum(clock.slept) <= http.max_retry_after_s
    assert len(srv.seen) == 1
    msg = _one_line(e.value)
    assert "hostilex" in msg and srv.url + "/trades" in msg and "86400" in msg and "max_retry_after_s" in msg


def test_a_day_long_retry_after_stops_the_other_products_without_a_request(srv, clock):
    # GIVEN one product told to wait a day (the exchange's Retry-After holds for the whole IP)
    srv.script("/a", _too_many("86400"), OK)
    srv.script("/b", OK)
    http = _client(clock)
    with pytest.raises(RetryBudgetExhausted):
        http.get(srv.url + "/a")
    # WHEN another product of the same exchange asks, with no deadline
    with pytest.raises(RetryBudgetExhausted) as e:
        http.get(srv.url + "/b")
    # THEN it neither sleeps the day nor sends a request
    assert sum(clock.slept) <= http.max_retry_after_s
    assert srv.requests_to("/b") == []
    assert srv.url + "/b" in _one_line(e.value)


def test_unusable_retry_after_values_fall_back_to_backoff_and_never_crash(srv, clock):
    # GIVEN Retry-After values that are not delay-seconds (RFC 9110: 1*DIGIT) nor an HTTP-date:
    # Python's float() would read inf, 1e20, nan, -5 and 1_000 (1000 s) as numbers
    hostile = ["inf", "1e20", "nan", "-5", "1_000", "soon"]
    srv.script("/trades", *[_too_many(v) for v in hostile], OK)
    http = _client(clock, max_attempts=len(hostile) + 1, max_delay_s=30.0)
    # WHEN the client retries through them
    resp = http.get(srv.url + "/trades")
    # THEN each retry waited only its own jittered backoff (at most max_delay_s), and the page came
    assert resp.status == 200 and len(srv.seen) == len(hostile) + 1
    waits = [s for s in clock.slept if s > 0]
    assert waits and max(waits) <= 30.0, clock.slept


@pytest.mark.parametrize("value", ["inf", "1e20"])
def test_infinite_or_huge_float_retry_after_does_not_overflow_the_real_clock(srv, value):
    # GIVEN the system clock (time.sleep(inf) raises OverflowError) and one hostile 429
    srv.script("/trades", _too_many(value), OK)
    http = _client(SYSTEM_CLOCK, base_delay_s=0.01, max_delay_s=0.05)
    # WHEN / THEN the page comes after a short backoff
    assert http.get(srv.url + "/trades").status == 200


def test_an_http_date_retry_after_is_honoured(srv, clock):
    # GIVEN a Retry-After in its HTTP-date form, 30 s after the (fake) wall clock
    when = datetime.fromtimestamp(clock.time(), timezone.utc) + timedelta(seconds=30)
    srv.script("/trades", _too_many(format_datetime(when, usegmt=True)), OK)
    http = _client(clock)
    # WHEN the client retries
    assert http.get(srv.url + "/trades").status == 200
    # THEN it waited those 30 s (the date has a one-second resolution) before asking again
    assert 29.0 <= sum(clock.slept) <= 31.0, clock.slept


def test_a_retry_after_longer_than_the_deadline_is_not_slept_and_the_penalty_spares_other_products(srv, clock):
    # GIVEN a run with 10 s left, and product A told to wait 60 s (within the cap)
    srv.script("/a", _too_many("60"))
    srv.script("/b", OK)
    http = _client(clock)
    deadline = clock.monotonic() + 10
    with pytest.raises(DeadlineReached):
        http.get(srv.url + "/a", deadline=deadline)
    # WHEN product B (same exchange, same shared limiter) asks before its deadline
    with pytest.raises(DeadlineReached) as e:
        http.get(srv.url + "/b", deadline=deadline)
    # THEN the limiter's penalty does not hold B past the deadline: B stops at once, sending nothing
    assert clock.monotonic() <= deadline
    assert srv.requests_to("/b") == []
    assert "hostilex" in _one_line(e.value)


def test_rate_limiter_and_weight_budget_never_sleep_past_a_deadline():
    # GIVEN a limiter penalized for 60 s and a weight budget paused until its window turns
    clock = FakeClock(start=1_767_225_600.0 + 1)  # 1 s into a minute window: 59 s to wait
    rate = RateLimiter(10.0, 5, clock)
    rate.penalize(60.0)
    weight = WeightBudget("X-USED", limit=100, window_s=60.0, clock=clock)
    weight.observe({"X-USED": "95"})
    deadline = clock.monotonic() + 5
    # WHEN / THEN each raises DeadlineReached instead of sleeping past the deadline
    with pytest.raises(DeadlineReached):
        rate.acquire(deadline=deadline)
    with pytest.raises(DeadlineReached):
        weight.wait(deadline=deadline)
    assert clock.monotonic() <= deadline


def test_one_products_429_does_not_stall_the_others_past_max_seconds(tmp_path):
    # GIVEN two Coinbase products and a run with 10 s (--max-seconds 10), and the first request told to wait 60 s
    from collections import deque

    from schemahub.ingest import ingest, make_source
    from schemahub.sim import Book, CoinbaseSim, FaultPlan
    from schemahub.sources.base import Product

    clock = FakeClock(start=time.time())
    books = [Book(p, first_id=1, initial=1500, interval_us=1_000_000) for p in ("BTC-USD", "ETH-USD")]
    products = [Product(p, p, *p.split("-")) for p in ("BTC-USD", "ETH-USD")]
    since = datetime.fromtimestamp(books[0].start_us / 1e6, timezone.utc)
    with CoinbaseSim(books, faults=FaultPlan(script=deque(["429"]), retry_after_s=60)) as sim:
        source = make_source("coinbase", base_url=sim.url, clock=clock)
        deadline = clock.monotonic() + 10
        # WHEN the run lands them one after the other
        results = ingest(LocalStore(str(tmp_path)), source, products, IngestOptions(since=since),
                         workers=1, deadline=deadline, clock=clock)
    # THEN neither product is held past the run's deadline: both stop with more to do
    assert clock.monotonic() <= deadline, f"held {clock.monotonic() - deadline:.0f}s past the deadline"
    assert [r.more_to_do for r in results] == [True, True], [r.message for r in results]


def test_max_retry_after_s_is_set_in_the_exchange_yaml():
    from schemahub.ingest import source_from_spec
    from schemahub.sources.spec import load_exchange

    spec = load_exchange("coinbase")
    assert source_from_spec(spec).http.max_retry_after_s == 120.0  # the documented default
    retry = spec.source.retry.model_copy(update={"max_retry_after_s": 5.0})
    spec = spec.model_copy(update={"source": spec.source.model_copy(update={"retry": retry})})
    assert source_from_spec(spec).http.max_retry_after_s == 5.0


# ---------------------------------------------------------------- bans

@pytest.mark.parametrize("value, lasts", [
    ("100000000000", BINANCE_MAX_BAN_S),  # ~3,170 years: "until the year 5195"
    ("1e20", 300.0),  # not delay-seconds: the default ban
    ("inf", 300.0),
    ("nan", 300.0),  # was a 0-second ban
    ("-5", 300.0),
    ("<date+3600>", 3600.0),
])
def test_a_ban_lasts_what_the_exchange_says_at_most_3_days_and_never_0_for_garbage(tmp_path, srv, clock, value, lasts):
    # GIVEN a Binance-style 418 ban with a hostile Retry-After
    if value == "<date+3600>":
        value = format_datetime(datetime.fromtimestamp(clock.time() + 3600, timezone.utc), usegmt=True)
    srv.script("/trades", Answer(418, {"Retry-After": value}, b'{"code":-1003,"msg":"IP banned"}'))
    http = _client(clock)
    # WHEN the client meets it and the run records the ban in the store
    with pytest.raises(ExchangeBanned) as e:
        http.get(srv.url + "/trades")
    _one_line(e.value)
    store = LocalStore(str(tmp_path))
    record_ban(store, "hostilex", e.value, clock)
    # THEN the ban is remembered for `lasts` seconds, no longer (Binance bans last 2 minutes to 3 days)
    at = clock.time()
    assert active_ban(store, "hostilex", FakeClock(start=at + lasts - 1)) is not None
    assert active_ban(store, "hostilex", FakeClock(start=at + lasts + 1)) is None
    assert len(srv.seen) == 1


# ---------------------------------------------------------------- slow drips and silence

def test_a_dripping_body_is_cut_off_at_the_run_deadline(srv):
    # GIVEN a server that drips its 40-byte body one byte every 0.1 s (each read well within the read timeout)
    srv.script("/trades", Answer(200, body=b"[" + b" " * 38 + b"]", drip_s=0.1))
    http = _client(SYSTEM_CLOCK, timeout_s=10.0)
    # WHEN a run with one second left asks
    with pytest.raises(DeadlineReached) as e:
        http.get(srv.url + "/trades", deadline=time.monotonic() + 1.0)
    # THEN the client stops reading before the server has sent it all
    assert not srv.seen[0].finished
    assert srv.url + "/trades" in _one_line(e.value)


def test_a_dripping_body_is_cut_off_at_the_request_deadline_without_a_run_deadline(srv):
    # GIVEN the same drip, and a client whose whole request may take 3 x timeout_s (0.3 s here)
    srv.script("/trades", Answer(200, body=b"[" + b" " * 38 + b"]", drip_s=0.1))
    http = _client(SYSTEM_CLOCK, timeout_s=0.3, max_attempts=1)
    # WHEN a run without --max-seconds asks
    with pytest.raises(RetryBudgetExhausted) as e:
        http.get(srv.url + "/trades")
    # THEN the request is abandoned (a transient failure, retried while the budget lasts), naming the URL
    assert not srv.seen[0].finished
    msg = _one_line(e.value)
    assert srv.url + "/trades" in msg and "127.0.0.1" in msg


def test_a_silent_server_is_not_waited_for_past_the_run_deadline(srv):
    # GIVEN a server that takes 3 s to answer at all, and a client with a 10 s read timeout
    srv.script("/trades", Answer(200, body=b"[]", delay_s=3.0))
    http = _client(SYSTEM_CLOCK, timeout_s=10.0)
    # WHEN a run with 0.5 s left asks
    with pytest.raises(DeadlineReached):
        http.get(srv.url + "/trades", deadline=time.monotonic() + 0.5)
    # THEN the client gave up before the answer was sent
    assert not srv.seen[0].finished


def _slow_headers() -> Answer:
    # Status line and headers one byte every 20 ms: about 3 s in all, each read far inside any read timeout.
    return Answer(200, {"X-Pad": "x" * 100}, body=b"[]", header_drip_s=0.02)


def _hung_up_during_headers(seen) -> None:
    assert seen.done.wait(10)  # the server's writes fail soon after the client hangs up
    assert seen.aborted and 0 < seen.head_sent < seen.head_total // 2, (seen.head_sent, seen.head_total)


def test_headers_dripped_byte_by_byte_are_cut_off_at_the_run_deadline(srv):
    # GIVEN a server that drips its status line and headers (each byte well within the 10 s read timeout)
    srv.script("/trades", _slow_headers())
    http = _client(SYSTEM_CLOCK, timeout_s=10.0)
    # WHEN a run with half a second left asks
    with pytest.raises(DeadlineReached) as e:
        http.get(srv.url + "/trades", deadline=time.monotonic() + 0.5)
    # THEN the client hung up before the server had sent even half its headers
    _hung_up_during_headers(srv.seen[0])
    assert srv.url + "/trades" in _one_line(e.value)


def test_headers_dripped_byte_by_byte_are_cut_off_at_the_request_deadline(srv):
    # GIVEN the same drip, and a client whose whole request may take 3 x timeout_s (0.6 s), connect and headers too
    srv.script("/trades", _slow_headers())
    http = _client(SYSTEM_CLOCK, timeout_s=0.2, max_attempts=1)
    # WHEN a run without --max-seconds asks
    with pytest.raises(RetryBudgetExhausted) as e:
        http.get(srv.url + "/trades")
    # THEN the request is abandoned as a transient failure naming the host, during the headers
    _hung_up_during_headers(srv.seen[0])
    assert "127.0.0.1" in _one_line(e.value)


# ---------------------------------------------------------------- oversized bodies

def test_an_oversized_streamed_body_is_refused_without_buffering_it(srv):
    # GIVEN a 96 MiB body without a Content-Length (chunked), three times the default 32 MiB cap
    srv.script("/trades", Answer(200, body=b'[{"trade_id":1},', stream_bytes=96 << 20, length="chunked"))
    http = _client(SYSTEM_CLOCK)
    # WHEN the client reads it
    tracemalloc.start()
    try:
        with pytest.raises(SourceError) as e:
            http.get(srv.url + "/trades")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # THEN it stops at the cap (never holding much more than the cap in memory), asks once, and names URL and cap
    assert peak < 40 << 20, f"peak {peak >> 20} MiB"
    assert len(srv.seen) == 1 and not srv.seen[0].finished
    msg = _one_line(e.value)
    assert srv.url + "/trades" in msg and "32 MiB" in msg


def test_a_declared_oversized_body_is_refused_before_reading(srv):
    # GIVEN a server announcing a 300 MiB body (it sends 1 MiB, then hangs up)
    srv.script("/trades", Answer(200, body=b"[", stream_bytes=1 << 20, content_length=300 << 20, hang_up_after=1 << 20))
    http = _client(SYSTEM_CLOCK)
    # WHEN / THEN the client refuses it from the header alone: one request, no retries of a hopeless download
    with pytest.raises(SourceError) as e:
        http.get(srv.url + "/trades")
    assert len(srv.seen) == 1
    msg = _one_line(e.value)
    assert "300 MiB" in msg and srv.url + "/trades" in msg


# ---------------------------------------------------------------- errors name the host

def test_a_refused_connection_names_the_host_in_one_line(clock):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    http = _client(clock, max_attempts=2)
    with pytest.raises(RetryBudgetExhausted) as e:
        http.get(f"http://127.0.0.1:{port}/trades")
    msg = _one_line(e.value)
    # one line: the exchange, the URL, what failed where (host and port), and what to do
    assert msg.startswith("hostilex: ") and f"http://127.0.0.1:{port}/trades" in msg
    assert f"connection refused by 127.0.0.1:{port}" in msg and "check" in msg


def test_a_dns_failure_names_the_host_in_one_line(clock, monkeypatch):
    def no_dns(host, *a, **kw):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    http = _client(clock, max_attempts=2)
    with pytest.raises(SchemahubError) as e:
        http.get("http://api.exchange.invalid/trades")
    msg = _one_line(e.value)
    assert msg.startswith("hostilex: ") and "http://api.exchange.invalid/trades" in msg
    assert "DNS lookup of api.exchange.invalid failed" in msg and "check" in msg


def test_a_server_that_closes_after_each_answer_is_read_whole_without_a_retry():
    # HTTP/1.0 (BaseHTTPRequestHandler's default): the server closes after each response, and http.client hands
    # the socket to the response. The deadline-bounded reader must keep the descriptor alive until it is done
    # (it once raced urllib3's close: "Bad file descriptor", then a retry, 3 runs in 4).
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from schemahub.sources.http import HttpClient, RateLimiter

    body = b'[{"id":1}]' * 2000

    class H(BaseHTTPRequestHandler):
        hits = 0

        def do_GET(self):
            type(self).hits += 1
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        http = HttpClient(name="x", rate=RateLimiter(10_000, 100), max_attempts=3, base_delay_s=0.001)
        for _ in range(40):
            assert http.get(f"http://127.0.0.1:{srv.server_port}/t").body == body
        assert H.hits == 40 and http.stats.retries == 0
    finally:
        srv.shutdown()
