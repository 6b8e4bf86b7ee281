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


SYSTEM_CLOCK = Clock()


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
