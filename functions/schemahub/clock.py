"""The clock port, so tests can control time."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone


class Clock:
    """Wall time, monotonic time and sleep."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    @property
    def stopped(self) -> bool:
        """True once someone asked the run to stop (see StoppableClock); long loops check it."""
        return False

    def check(self) -> None:
        """Raise errors.Interrupted if the run was asked to stop."""


SYSTEM_CLOCK = Clock()


class StoppableClock(Clock):
    """Another clock whose sleeps end, raising errors.Interrupted, as soon as `stop()` is called (Ctrl-C).

    Every wait of a run (rate limiter, Retry-After, weight budget, retry backoff, a held lease) sleeps on the
    run's clock, so one `stop()` wakes them all at once instead of after their time.
    """

    def __init__(self, base: Clock = SYSTEM_CLOCK) -> None:
        self.base = base
        self._stop = threading.Event()
        self.reason = "interrupted"

    def now(self) -> datetime:
        return self.base.now()

    def time(self) -> float:
        return self.base.time()

    def monotonic(self) -> float:
        return self.base.monotonic()

    def stop(self, reason: str = "interrupted") -> None:
        self.reason = reason
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def check(self) -> None:
        if self._stop.is_set():
            from schemahub.errors import Interrupted

            raise Interrupted(f"{self.reason}: stopped at an object boundary; a rerun continues from there")

    def sleep(self, seconds: float) -> None:
        self.check()
        if seconds <= 0:
            return
        if isinstance(self.base, FakeClock):  # a test's clock: time moves at once, unless stopped meanwhile
            self.base.sleep(seconds)
        else:
            self._stop.wait(seconds)
        self.check()


class FakeClock(Clock):
    """A clock for tests: time stands still until someone sleeps, and sleeping advances it at once.

    Shared by every thread that holds it; `slept` lists every sleep asked for,
    so a test can check what a wait would have cost without waiting.
    """

    def __init__(self, start: float = 1_767_225_600.0, monotonic_start: float = 1000.0) -> None:
        self._time = start  # 2026-01-01T00:00:00Z
        self._mono = monotonic_start
        self._lock = threading.Lock()
        self.slept: list[float] = []

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), timezone.utc)

    def time(self) -> float:
        with self._lock:
            return self._time

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            if seconds > 0:
                self._time += seconds
                self._mono += seconds
