"""The clock port, so tests can control time."""

from __future__ import annotations

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
