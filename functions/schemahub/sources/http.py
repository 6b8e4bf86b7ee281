"""HTTP behaviour shared by every exchange: keep-alive, timeouts, retries, rate limits."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import urllib3

from schemahub.clock import SYSTEM_CLOCK, Clock
from schemahub.errors import DeadlineReached, ExchangeBanned, GeoBlocked, Retryable, RetryBudgetExhausted, SourceError

log = logging.getLogger("schemahub.http")


class RateLimiter:
    """Thread-safe token bucket: `rate` requests per second with bursts of `burst`."""

    def __init__(self, rate: float, burst: int, clock: Clock = SYSTEM_CLOCK) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._tokens = float(burst)
        self._stamp = clock.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take a token, sleeping if needed; return the seconds waited."""
        with self._lock:
            now = self.clock.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1.0
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        self.clock.sleep(wait)
        return wait

    def penalize(self, seconds: float) -> None:
        """After a 429, drain the bucket so every thread slows down, not just the one that was told."""
        with self._lock:
            self._tokens = min(self._tokens, -seconds * self.rate)


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

    def wait(self) -> float:
        with self._lock:
            delay = self._until - self.clock.monotonic()
        if delay <= 0:
            return 0.0
        log.info("request weight %d of %d used: pausing %.1fs until the window turns", self.used, self.limit, delay)
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
    """GET with keep-alive, timeouts, jittered exponential backoff, Retry-After and a retry budget."""

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
        self.stats = HttpStats()
        self._stats_lock = threading.Lock()
        self.weight = weight
        self.banned: str | None = None
        self.banned_for: float | None = None

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
    ) -> Response:
        """GET url; retry transient failures; return the response with `parsed` set by parse().

        parse may raise Retryable for a body that is truncated or otherwise
        transient. Raises RetryBudgetExhausted, ExchangeBanned, SourceError or
        DeadlineReached (deadline is a clock.monotonic() value).
        """
        full = url + ("?" + urlencode(params) if params else "")
        last = ""
        for attempt in range(self.max_attempts):
            if self.banned:  # one ban stops every thread of this exchange: no request is sent after it
                raise ExchangeBanned(self.banned, self.banned_for)
            self._count(waited=self.rate.acquire())
            if self.weight is not None:
                self._count(waited=self.weight.wait())
            retry_after: float | None = None
            try:
                r = self.pool.request("GET", full, timeout=self.timeout, headers=headers, preload_content=True)
            except (urllib3.exceptions.HTTPError, OSError) as e:
                last = f"{type(e).__name__}: {e}"
                reason = "timeout" if isinstance(e, urllib3.exceptions.TimeoutError) else "connection"
            else:
                status = r.status
                if self.weight is not None:
                    self.weight.observe(r.headers)
                if status == 451 or (status == 403 and b"restricted location" in r.data.lower()):
                    geo = GeoBlocked(self.name, status)  # a country block: no retry, and like a ban for every thread
                    self.banned, self.banned_for = str(geo), geo.retry_after_s
                    raise geo
                if status in self.ban_statuses:
                    self.banned = (
                        f"{self.name}: HTTP {status} from {full}: banned (Retry-After={r.headers.get('Retry-After')}); "
                        f"stopping this exchange: {r.data[:200]!r}"
                    )
                    self.banned_for = _retry_after(r.headers.get("Retry-After"))
                    raise ExchangeBanned(self.banned, self.banned_for)
                if status == 200:
                    resp = Response(status, r.headers, r.data, full)
                    if parse is None:
                        return resp
                    try:
                        return Response(status, r.headers, r.data, full, parse(resp))
                    except Retryable as e:
                        last, reason, retry_after = f"bad body: {e}", "bad_body", e.retry_after
                elif status in _RETRY_STATUS:
                    last, reason = f"HTTP {status}: {r.data[:120]!r}", f"http_{status}"
                    retry_after = _retry_after(r.headers.get("Retry-After"))
                else:
                    raise SourceError(f"{self.name}: HTTP {status} from {full}: {r.data[:300]!r}")
            self._note_retry(reason)
            if attempt + 1 >= self.max_attempts:
                break
            delay = self._backoff(attempt)
            if retry_after is not None:
                delay = max(delay, retry_after)
                self.rate.penalize(retry_after)
            if deadline is not None and self.clock.monotonic() + delay > deadline:
                raise DeadlineReached(f"{self.name}: time budget ends before the next retry ({last})")
            log.info("retrying %s in %.2fs after %s", full, delay, last)
            self.clock.sleep(delay)
        raise RetryBudgetExhausted(f"{self.name}: gave up on {full} after {self.max_attempts} attempts; last error: {last}")

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


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form; fall back to our own backoff
