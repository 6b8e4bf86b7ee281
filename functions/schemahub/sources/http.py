"""HTTP behaviour shared by every exchange: keep-alive, timeouts, retries, rate limits.

Every wait and every size is bounded, whatever the peer sends:
- a Retry-After is honoured up to `max_retry_after_s` (default 120 s); a longer one
  stops the product (and, through the shared limiter, the exchange's other
  products) without another request; no wait ever runs past the run's deadline;
- a whole request, body included, has a deadline (`request_deadline_s`, default
  3 x timeout_s, never past the run's), not only each read: a server dripping
  one byte a second is cut off;
- a ban lasts at most MAX_BAN_S (Binance's documented maximum, 3 days);
- a response body has a cap (`max_body_bytes`, default 32 MiB): a larger one is
  refused, and never buffered beyond the cap.
"""

from __future__ import annotations

import logging
import math
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import urllib3

from schemahub.clock import SYSTEM_CLOCK, Clock
from schemahub.errors import (
    BodyTooLarge,
    DeadlineReached,
    ExchangeBanned,
    GeoBlocked,
    Interrupted,
    Retryable,
    RetryBudgetExhausted,
    SourceError,
    Unreachable,
)
from schemahub.sources import httpdeadline

log = logging.getLogger("schemahub.http")

DEFAULT_MAX_RETRY_AFTER_S = 120.0  # Binance's 429s ask for the rest of a 1-minute window; Coinbase's for seconds
DEFAULT_MAX_BODY_BYTES = 32 << 20  # a 1,000-trade page is ~100 KiB; a 512 MB Lambda must never hold hundreds of MB
REQUEST_DEADLINE_FACTOR = 3.0  # a whole request (connect, headers, body) may take this many timeout_s
MAX_BAN_S = 3 * 86_400.0  # Binance: "an IP ban that lasts from 2 minutes to 3 days"
ERROR_BODY_BYTES = 64 << 10  # of a non-200 answer, only this much is read (for the message)
_LONGEST_S = 10 * 365 * 86_400.0  # keeps an absurd Retry-After finite
_CHUNK = 64 << 10
CONNECT_ATTEMPTS = 2  # a DNS failure or a refused connection: one retry (a blip), not the 8 a 5xx gets


class RateLimiter:
    """Thread-safe token bucket: `rate` requests per second with bursts of `burst`."""

    def __init__(self, rate: float, burst: int, clock: Clock = SYSTEM_CLOCK) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._tokens = float(burst)
        self._stamp = clock.monotonic()
        self._held_until = -math.inf
        self._lock = threading.Lock()
        self.on_wait: WaitCallback | None = None  # told of every wait before it starts (progress lines)

    def acquire(self, deadline: float | None = None, max_hold: float | None = None) -> float:
        """Take a token, sleeping if needed; return the seconds waited.

        Raises DeadlineReached instead of sleeping past `deadline` (a monotonic
        time), whatever the wait is for (a penalty or only spacing requests out),
        and RetryBudgetExhausted if a penalty holds requests longer than
        `max_hold` seconds; neither takes a token.
        """
        with self._lock:
            now = self.clock.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            wait = 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate
            hold = self._held_until - now
            if max_hold is not None and hold > max_hold:
                raise RetryBudgetExhausted(
                    f"the exchange's Retry-After holds every request for {hold:.0f}s more, longer than the "
                    f"{max_hold:.0f}s a run waits (retry.max_retry_after_s)"
                )
            if deadline is not None and now + wait > deadline:  # strict always: the run's time is the run's
                raise DeadlineReached(f"the time budget ends before the rate limit allows another request (in {wait:.1f}s)")
            self._tokens -= 1.0
        if wait > 0 and self.on_wait is not None:
            self.on_wait(f"Retry-After {math.ceil(hold)} s" if hold > 0 else "rate limit", wait)
        self.clock.sleep(wait)
        return wait

    def penalize(self, seconds: float) -> None:
        """After a 429, drain the bucket so every thread slows down, not just the one that was told."""
        with self._lock:
            now = self.clock.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate, -seconds * self.rate)
            self._stamp = now
            self._held_until = max(self._held_until, now + seconds)


class WeightBudget:
    """A request-weight budget the exchange reports in a header (Binance X-MBX-USED-WEIGHT-1M).

    When the weight used in the current window reaches `pause_at` of the
    limit, new requests wait until the window turns, instead of running into
    429s (and, after those, a 418 ban).
    """

    def __init__(self, header: str, limit: int, window_s: float, pause_at: float = 0.8, clock: Clock = SYSTEM_CLOCK) -> None:
        self.header, self.limit, self.window_s, self.pause_at, self.clock = header, limit, window_s, pause_at, clock
        self.used = 0
        self._until = 0.0
        self._lock = threading.Lock()
        self.on_wait: WaitCallback | None = None

    def observe(self, headers) -> None:
        value = headers.get(self.header)
        if value is None:
            return
        try:
            used = int(value)
        except ValueError:
            return
        with self._lock:
            self.used = used
            if used >= self.pause_at * self.limit:
                # Windows are aligned to the wall clock (Binance counts per calendar minute).
                now = self.clock.time()
                self._until = self.clock.monotonic() + (self.window_s - now % self.window_s) + 0.05

    def wait(self, deadline: float | None = None) -> float:
        """Wait until the window turns if the budget is spent; DeadlineReached instead of waiting past `deadline`."""
        with self._lock:
            now = self.clock.monotonic()
            delay = self._until - now
        if delay <= 0:
            return 0.0
        if deadline is not None and now + delay > deadline:
            raise DeadlineReached(
                f"the time budget ends before the request-weight window turns ({self.used} of {self.limit} used; {delay:.1f}s)"
            )
        log.info("request weight %d of %d used: pausing %.1fs until the window turns", self.used, self.limit, delay)
        if self.on_wait is not None:
            self.on_wait("weight budget", delay)
        self.clock.sleep(delay)
        return delay


@dataclass
class HttpStats:
    """Counters the run reports and the Lambda emits as metrics."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    waited_s: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)

    def note(self, reason: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


@dataclass(frozen=True)
class Response:
    status: int
    headers: Any
    body: bytes
    url: str
    parsed: Any = None


_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 524}


class HttpClient:
    """GET with keep-alive, timeouts, jittered exponential backoff, Retry-After and a retry budget.

    Args:
        max_retry_after_s: the longest Retry-After honoured; a longer one stops the product.
        max_body_bytes: the largest response body accepted (default 32 MiB).
        request_deadline_s: the longest a whole request may take, body included
            (default REQUEST_DEADLINE_FACTOR x timeout_s); never past the run's deadline.
    """

    def __init__(
        self,
        *,
        name: str,
        rate: RateLimiter,
        timeout_s: float = 10.0,
        max_attempts: int = 8,
        base_delay_s: float = 0.25,
        max_delay_s: float = 30.0,
        ban_statuses: frozenset[int] = frozenset({418}),
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        pool: urllib3.PoolManager | None = None,
        weight: WeightBudget | None = None,
        max_retry_after_s: float = DEFAULT_MAX_RETRY_AFTER_S,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        request_deadline_s: float | None = None,
    ) -> None:
        self.name = name
        self.rate = rate
        self.timeout = urllib3.Timeout(connect=min(timeout_s, 5.0), read=timeout_s)
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.ban_statuses = ban_statuses
        self.clock = clock
        self.rng = rng or random.Random()
        self.pool = pool or urllib3.PoolManager(
            num_pools=8, maxsize=16, retries=False, headers={"User-Agent": "schemahub/0.1", "Accept": "application/json"}
        )
        httpdeadline.install(self.pool)  # the request deadline bounds the status line and headers too
        self.stats = HttpStats()
        self._stats_lock = threading.Lock()
        self.weight = weight
        self.max_retry_after_s = max_retry_after_s
        self.max_body_bytes = max_body_bytes
        self.request_deadline_s = request_deadline_s if request_deadline_s is not None else REQUEST_DEADLINE_FACTOR * timeout_s
        self.banned: str | None = None
        self.banned_for: float | None = None
        self.unreachable: str | None = None  # set once the host could not be reached; cleared by an answer
        self._on_wait: WaitCallback | None = None

    def _backoff(self, attempt: int) -> float:
        # Full jitter: spreads retries of parallel workers apart.
        return self.rng.uniform(0, min(self.max_delay_s, self.base_delay_s * (2**attempt)))

    def get(
        self,
        url: str,
        params: dict[str, Any] | None = None,
        *,
        parse: Callable[[Response], Any] | None = None,
        headers: dict[str, str] | None = None,
        deadline: float | None = None,
        accept: frozenset[int] = frozenset(),
    ) -> Response:
        """GET url; retry transient failures; return the response with `parsed` set by parse().

        parse may raise Retryable for a body that is truncated or otherwise
        transient. Raises RetryBudgetExhausted, ExchangeBanned, SourceError or
        DeadlineReached (deadline is a clock.monotonic() value). A status in
        `accept` (e.g. 404 for an archive file not published) is returned as
        it is, unparsed, with at most ERROR_BODY_BYTES of its body.
        """
        full = url + ("?" + urlencode(params) if params else "")
        host = _host(full)
        last = ""
        unreachable = 0
        for attempt in range(self.max_attempts):
            if self.banned:  # one ban stops every thread of this exchange: no request is sent after it
                raise ExchangeBanned(self.banned, self.banned_for)
            self._wait_turn(full, deadline)
            retry_after: float | None = None
            try:
                status, rheaders, body = self._fetch(full, host, headers, deadline)
            except _Transient as e:
                last, reason = str(e), e.reason
                if deadline is not None and self.clock.monotonic() >= deadline:
                    raise DeadlineReached(f"{self.name}: the time budget ended during {full} ({last}); a later run continues") from None
                unreachable = self._unreachable(e, full, host, unreachable)
            else:
                self.unreachable = None
                if self.weight is not None:
                    self.weight.observe(rheaders)
                if status == 451 or (status == 403 and b"restricted location" in body.lower()):
                    geo = GeoBlocked(self.name, status)  # a country block: no retry, and like a ban for every thread
                    self.banned, self.banned_for = str(geo), geo.retry_after_s
                    raise geo
                if status in self.ban_statuses:
                    raw = rheaders.get("Retry-After")
                    self.banned = (
                        f"{self.name}: HTTP {status} from {full}: banned (Retry-After={raw}); "
                        f"stopping this exchange: {body[:200]!r}"
                    )
                    seconds = self._retry_after(raw, full)
                    self.banned_for = None if seconds is None else min(seconds, MAX_BAN_S)
                    raise ExchangeBanned(self.banned, self.banned_for)
                if status == 200:
                    resp = Response(status, rheaders, body, full)
                    if parse is None:
                        return resp
                    try:
                        return Response(status, rheaders, body, full, parse(resp))
                    except Retryable as e:
                        last, reason, retry_after = f"bad body: {e}", "bad_body", _seconds(e.retry_after)
                elif status in accept:
                    return Response(status, rheaders, body, full)
                elif status in _RETRY_STATUS:
                    last, reason = f"HTTP {status} from {host}: {body[:120]!r}", f"http_{status}"
                    retry_after = self._retry_after(rheaders.get("Retry-After"), full)
                else:
                    raise SourceError(f"{self.name}: HTTP {status} from {full}: {body[:300]!r}")
            self._note_retry(reason)
            if retry_after is not None:
                self.rate.penalize(retry_after)  # the whole exchange waits, so the others do not run into it
                if retry_after > self.max_retry_after_s:
                    raise RetryBudgetExhausted(
                        f"{self.name}: {full} asks to wait {retry_after:.0f}s ({last[:80]}), longer than the "
                        f"{self.max_retry_after_s:.0f}s a run waits (retry.max_retry_after_s); stopping this product, "
                        "a later run continues"
                    )
            if attempt + 1 >= self.max_attempts:
                break
            delay = self._backoff(attempt)
            if retry_after is not None:
                delay = max(delay, retry_after)
            if deadline is not None and self.clock.monotonic() + delay > deadline:
                raise DeadlineReached(f"{self.name}: time budget ends before the next retry of {full} ({last})")
            log.info("retrying %s in %.2fs after %s", full, delay, last)
            if self._on_wait is not None:
                self._on_wait(f"Retry-After {math.ceil(retry_after)} s" if retry_after else f"retry ({reason})", delay)
            self.clock.sleep(delay)
        raise RetryBudgetExhausted(
            f"{self.name}: gave up on {full} after {self.max_attempts} attempts; last error: {last}; {_HINTS.get(reason, _HINTS['http'])}"
        )

    # ------------------------------------------------------------ no network: fail fast, naming the host
    def _unreachable(self, e: _Transient, full: str, host: str, tries: int) -> int:
        """Count a DNS failure or refused connection; past CONNECT_ATTEMPTS (1 once the host was found
        unreachable in this run), raise Unreachable: `cannot reach HOST (DNS lookup failed)`."""
        if e.unreachable is None:
            return tries
        tries += 1
        if tries >= (1 if self.unreachable else CONNECT_ATTEMPTS):
            self.unreachable = e.unreachable
            name = host.rsplit(":", 1)[0] if e.reason == "dns" and host.count(":") == 1 else host
            raise Unreachable(f"{self.name}: cannot reach {name} ({e.unreachable}): {full} failed {tries} time(s): {e}; "
                              f"{_HINTS.get(e.reason, _HINTS['connection'])}")
        return tries

    # ------------------------------------------------------------ waits, told to whoever shows progress
    @property
    def on_wait(self) -> WaitCallback | None:
        return self._on_wait

    @on_wait.setter
    def on_wait(self, callback: WaitCallback | None) -> None:
        """callback(reason, seconds) before every wait: "rate limit", "weight budget", "Retry-After 30 s", "retry (...)"."""
        self._on_wait = callback
        self.rate.on_wait = callback
        if self.weight is not None:
            self.weight.on_wait = callback

    def _wait_turn(self, full: str, deadline: float | None) -> None:
        """The shared limiter and weight budget; neither ever waits past the deadline or a capped Retry-After."""
        try:
            waited = self.rate.acquire(deadline, self.max_retry_after_s)
            if self.weight is not None:
                waited += self.weight.wait(deadline)
        except Interrupted:
            raise
        except DeadlineReached as e:
            raise DeadlineReached(f"{self.name}: {e}; {full} not sent, a later run continues") from None
        except RetryBudgetExhausted as e:
            raise RetryBudgetExhausted(f"{self.name}: {e}; {full} not sent: stopping this product, a later run continues") from None
        self._count(waited)

    def _fetch(self, full: str, host: str, headers: dict[str, str] | None, deadline: float | None) -> tuple[int, Any, bytes]:
        """One GET within the request's own deadline and the run's; the body is read in bounded chunks."""
        start = self.clock.monotonic()
        until = start + self.request_deadline_s
        # The run's deadline is strict: nothing is sent after it, and a request in flight when it comes is cut
        # there (connect, headers and body alike: schemahub.sources.httpdeadline).
        if deadline is not None and start >= deadline:
            raise DeadlineReached(f"{self.name}: the time budget has ended; {full} not sent, a later run continues")
        run_bound = deadline is not None and deadline <= until
        if run_bound:
            until = deadline
        try:
            with httpdeadline.request_deadline(self.clock, until):
                r = self.pool.request("GET", full, timeout=self._timeout(until - start), headers=headers,
                                      preload_content=False)
        except urllib3.exceptions.LocationValueError as e:
            raise SourceError(f"{self.name}: {full} is not a valid URL ({e}); check the exchange's base_url") from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            if self.clock.monotonic() >= until:  # the status line or headers were still coming at the deadline
                raise self._late(full, host, run_bound, None) from None
            raise _transient(e, host) from None
        ok = False
        try:
            strict = r.status == 200
            body = self._read_body(r, full, host, until, run_bound, self.max_body_bytes if strict else ERROR_BODY_BYTES, strict)
            ok = True
            return r.status, r.headers, body
        except (urllib3.exceptions.HTTPError, OSError) as e:
            if self.clock.monotonic() >= until:  # the last read was cut short at the deadline
                raise self._late(full, host, run_bound, None) from None
            raise _transient(e, host) from None
        finally:
            if not ok:
                r.close()  # an abandoned body: drop the connection rather than read the rest
            r.release_conn()

    def _read_body(self, r, full: str, host: str, until: float, run_bound: bool, limit: int, strict: bool) -> bytes:
        declared = str(r.headers.get("Content-Length") or "").strip()
        if strict and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(
                f"{self.name}: the response from {full} announces {_mib(int(declared))} (Content-Length), larger than "
                f"the {_mib(limit)} cap on a response body; refusing it: lower trades.page_size, or raise max_body_bytes"
            )
        chunks: list[bytes] = []
        size = 0
        sock = getattr(getattr(r, "connection", None), "sock", None)
        read_s = self.timeout.read_timeout if isinstance(self.timeout.read_timeout, (int, float)) else None
        while True:
            left = until - self.clock.monotonic()
            if left <= 0:
                raise self._late(full, host, run_bound, size)
            if sock is not None and (read_s is None or left < read_s):  # one read may not outlast the request either
                sock.settimeout(max(0.001, left))
            chunk = r.read1(_CHUNK)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                if not strict:  # an error answer: its start is enough for the message
                    chunks.append(chunk[: len(chunk) - (size - limit)])
                    r.close()
                    return b"".join(chunks)
                raise BodyTooLarge(
                    f"{self.name}: the response from {full} is larger than the {_mib(limit)} cap on a response body "
                    f"(more than {size} bytes so far); refusing it: lower trades.page_size, or raise max_body_bytes"
                )
            chunks.append(chunk)

    def _late(self, full: str, host: str, run_bound: bool, size: int | None) -> Exception:
        got = "" if size is None else f", {size} bytes of the body so far"
        if run_bound:
            return DeadlineReached(
                f"{self.name}: the time budget ended while {host} was still answering {full}{got}; a later run continues"
            )
        return _Transient(f"the whole request to {host} took more than {self.request_deadline_s:.1f}s{got} (a slow drip?)", "timeout")

    def _timeout(self, left: float) -> urllib3.Timeout:
        """The configured connect and read timeouts, neither beyond what the request has left."""
        def within(v):
            return min(v, left) if isinstance(v, (int, float)) else left
        c, r = self.timeout.connect_timeout, self.timeout.read_timeout
        if isinstance(c, (int, float)) and isinstance(r, (int, float)) and left >= max(c, r):
            return self.timeout
        return urllib3.Timeout(connect=within(self.timeout.connect_timeout), read=within(self.timeout.read_timeout))

    def _retry_after(self, value: str | None, full: str) -> float | None:
        seconds = parse_retry_after(value, self.clock)
        if seconds is None and value is not None and value.strip():
            log.warning("%s: ignoring an unusable Retry-After %r from %s (neither seconds nor an HTTP-date)", self.name, value, full)
        return seconds

    def _count(self, waited: float) -> None:
        with self._stats_lock:
            self.stats.requests += 1
            self.stats.waited_s += waited

    def _note_retry(self, reason: str) -> None:
        with self._stats_lock:
            self.stats.retries += 1
            if reason == "http_429":
                self.stats.rate_limited += 1
            self.stats.note(reason)


WaitCallback = Callable[[str, float], None]


class _Transient(Exception):
    """One attempt failed in a way another attempt may not (never leaves HttpClient.get).

    `unreachable` says why the host could not be reached at all ("DNS lookup failed", "connection refused"),
    None for any other failure: those get few retries (CONNECT_ATTEMPTS).
    """

    def __init__(self, text: str, reason: str, unreachable: str | None = None) -> None:
        super().__init__(text)
        self.reason = reason
        self.unreachable = unreachable


_HINTS = {
    "dns": "check the network and DNS, and the exchange's base URL (--base-url); a later run continues",
    "connection": "check the network and the exchange's base URL (--base-url); a later run continues",
    "timeout": "the exchange is slow or unreachable: check the network, or raise timeout_s; a later run continues",
    "http": "the exchange keeps failing; check its status page; a later run continues",
}


def _host(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or url


def _transient(e: BaseException, host: str) -> _Transient:
    """One line naming the host for a connection-level failure, without urllib3's object reprs."""
    E = urllib3.exceptions
    detail = _os_reason(e)
    if isinstance(e, E.NameResolutionError):
        return _Transient(f"DNS lookup of {host.rsplit(':', 1)[0] if host.count(':') == 1 else host} failed ({detail})", "dns",
                          "DNS lookup failed")
    if isinstance(e, (E.NewConnectionError, ConnectionRefusedError)):  # before ConnectTimeoutError, its base class
        if "refused" in detail.lower():
            return _Transient(f"connection refused by {host}", "connection", "connection refused")
        if "unreachable" in detail.lower():
            return _Transient(f"cannot connect to {host} ({detail})", "connection", "network unreachable")
        return _Transient(f"cannot connect to {host} ({detail})", "connection")
    if isinstance(e, E.ConnectTimeoutError):
        return _Transient(f"connecting to {host} timed out", "timeout")
    if isinstance(e, (E.ReadTimeoutError, TimeoutError)):
        return _Transient(f"{host} sent nothing within the read timeout", "timeout")
    if isinstance(e, (E.NewConnectionError, ConnectionRefusedError)):
        if "refused" in detail.lower():
            return _Transient(f"connection refused by {host}", "connection")
        return _Transient(f"cannot connect to {host} ({detail})", "connection")
    if isinstance(e, E.ProtocolError):
        return _Transient(f"{host} broke off the response ({detail})", "connection")
    return _Transient(f"{type(e).__name__} talking to {host} ({detail})", "connection")


def _os_reason(e: BaseException) -> str:
    seen = e
    for _ in range(5):
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        nxt = getattr(seen, "reason", None) or seen.__cause__ or seen.__context__
        if not isinstance(nxt, BaseException):
            break
        seen = nxt
    text = re.sub(r"^\w+\(host=[^)]*\):\s*", "", str(e))
    return re.sub(r"<[^>]* object at 0x[0-9a-f]+>:?\s*", "", text)[:200]


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


_DELAY_SECONDS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*$")


def _seconds(value: float | None) -> float | None:
    """A finite, non-negative wait (absurd ones clamped), or None."""
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return min(float(value), _LONGEST_S)


def parse_retry_after(value: str | None, clock: Clock = SYSTEM_CLOCK) -> float | None:
    """Retry-After as seconds from now: delay-seconds (digits) or an HTTP-date (RFC 9110 10.2.3); None if neither.

    Python's float() would also read "inf", "nan", "1e20", "-5" and "1_000"; none of those is a delay.
    """
    if not value:
        return None
    m = _DELAY_SECONDS.match(value)
    if m:
        return _seconds(float(m.group(1)))
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return _seconds(max(0.0, (when - clock.now()).total_seconds()))
