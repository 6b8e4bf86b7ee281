"""What a run is doing, for a person at a terminal: one line per exchange, and object counts for transform/compact.

The model (`IngestProgress`) only collects events and renders text; it reads time from a Clock, so tests drive it
with a FakeClock and synthetic events. `Display` draws it: on a terminal it redraws the lines in place twice a
second; elsewhere (a log file, CI) it prints plain lines every `plain_every_s` seconds, never cursor codes.

A line per exchange names the products in flight, the trades landed, the rate over the last `window_s` seconds
(not since the start), an ETA (id cursors: trades left over that rate; a time cursor such as Kraken's: the
time span left over how fast the cursor moves), and what it waits for and until when:

    binance: BTC-USDT (1 of 2 done), 12,345 trades, 850 trades/s, ETA 2 min 10 s, weight budget, resuming in 41 s
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from dataclasses import dataclass, field

from schemahub.clock import SYSTEM_CLOCK, Clock

WINDOW_S = 10.0


def duration(seconds: float) -> str:
    """41 s, 2 min 10 s, 1 h 05 min."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


@dataclass
class _Exchange:
    products: list[str]
    started: dict[str, float] = field(default_factory=dict)  # product -> monotonic start
    done: set[str] = field(default_factory=set)
    remaining: dict[str, int | None] = field(default_factory=dict)  # trades to land; None: a time cursor
    cursors: dict[str, deque] = field(default_factory=dict)  # a time cursor: (monotonic, cursor, head) in the window
    trades: int = 0
    first_at: float | None = None  # when its first product started
    finished_at: float | None = None
    events: deque = field(default_factory=deque)  # (monotonic, trades) within the window
    wait: tuple[str, float] | None = None  # (reason, until monotonic)
    stopped: bool = False  # it ended after a Ctrl-C, not by landing everything


class IngestProgress:
    """Collects landing events per exchange; `lines()` renders them. Thread-safe (every product thread reports).

    Events: `__call__` is the lander's page callback (exchange, product, trades, cursor, head or None);
    `started`/`finished` come from the ingest orchestration; `waiting` from the HTTP layer's on_wait.
    """

    def __init__(self, plan: dict[str, list[str]], clock: Clock = SYSTEM_CLOCK, window_s: float = WINDOW_S) -> None:
        self.clock = clock
        self.window_s = window_s
        self.ex = {name: _Exchange(list(products)) for name, products in plan.items()}
        self.lock = threading.Lock()
        self.stopping = False  # Ctrl-C: exchanges that end now stopped, they are not done

    def _get(self, exchange: str) -> _Exchange:
        return self.ex.setdefault(exchange, _Exchange([]))

    # ------------------------------------------------------------ events
    def started(self, exchange: str, product_id: str) -> None:
        with self.lock:
            e = self._get(exchange)
            e.started[product_id] = self.clock.monotonic()
            e.first_at = e.started[product_id] if e.first_at is None else e.first_at
            if product_id not in e.products:
                e.products.append(product_id)

    def finished(self, exchange: str, product_id: str) -> None:
        with self.lock:
            e = self._get(exchange)
            e.done.add(product_id)
            e.remaining[product_id] = 0
            if e.done >= set(e.products):
                e.finished_at = self.clock.monotonic()
                e.wait = None
                e.stopped = self.stopping

    def __call__(self, exchange: str, product_id: str, n: int, cursor: int, head: int | None,
                 counts_trades: bool = True) -> None:
        with self.lock:
            e = self._get(exchange)
            now = self.clock.monotonic()
            e.trades += n
            e.first_at = now if e.first_at is None else e.first_at  # (pages without a started() event)
            e.events.append((now, n))
            e.remaining[product_id] = None if head is None or not counts_trades else max(0, head - cursor)
            if not counts_trades and head is not None:  # a time cursor: how fast it moves towards the head
                hist = e.cursors.setdefault(product_id, deque())
                hist.append((now, cursor, head))
                while len(hist) > 2 and hist[1][0] <= now - self.window_s:
                    hist.popleft()
            e.wait = None  # an answer came: whatever it waited for is over

    def waiting(self, exchange: str, reason: str, seconds: float) -> None:
        with self.lock:
            self._get(exchange).wait = (reason, self.clock.monotonic() + seconds)

    # ------------------------------------------------------------ rendering
    def rate(self, exchange: str) -> float:
        """Trades per second over the last window_s seconds (or since the exchange started, if that is shorter)."""
        with self.lock:
            return self._rate(self.ex[exchange], self.clock.monotonic())

    def _rate(self, e: _Exchange, now: float) -> float:
        while e.events and e.events[0][0] <= now - self.window_s:
            e.events.popleft()
        if e.first_at is None:
            return 0.0
        span = min(self.window_s, now - e.first_at)
        return sum(n for _, n in e.events) / max(span, 1.0)

    def lines(self) -> list[str]:
        with self.lock:
            now = self.clock.monotonic()
            return [self._line(name, e, now) for name, e in sorted(self.ex.items())]

    def _line(self, name: str, e: _Exchange, now: float) -> str:
        total = len(e.products)
        if e.finished_at is not None:
            return (f"{name}: {'stopped' if e.stopped else 'done'}, {total} product{'s' if total != 1 else ''}, "
                    f"{e.trades:,} trades")
        active = [p for p in e.products if p in e.started and p not in e.done]
        parts = [f"{'+'.join(active) or 'starting'} ({len(e.done)} of {total} done)", f"{e.trades:,} trades"]
        rate = self._rate(e, now)
        parts.append(f"{rate:,.0f} trades/s")
        eta = self._eta(e, rate)
        if eta:
            parts.append(eta)
        if e.wait is not None:
            reason, until = e.wait
            left = until - now
            if left > 0:
                parts.append(f"{reason}, resuming in {duration(left)}" if left >= 1.5 else reason)
        return f"{name}: " + ", ".join(parts)

    def _eta(self, e: _Exchange, rate: float) -> str:
        """Id cursors with a known head: trades left over the rate. A time cursor (Kraken): the time span left
        over how fast the cursor moved in the window, averaged over the products sharing the exchange's budget."""
        active = [p for p in e.products if p in e.started and p not in e.done]
        left = [e.remaining.get(p) for p in active]
        if not active:
            return ""
        if all(v is not None for v in left):
            seconds = sum(left) / rate if rate > 0 else None
        else:
            spans = [self._time_left(e.cursors.get(p)) for p in active]
            seconds = None if any(s is None for s in spans) else sum(spans) / len(spans)
        if seconds is None:
            return ""
        unstarted = any(p not in e.started for p in e.products)
        return f"ETA {'> ' if unstarted else ''}{duration(seconds)}"

    @staticmethod
    def _time_left(hist) -> float | None:
        if not hist or len(hist) < 2:
            return None
        (t0, c0, _), (t1, c1, head) = hist[0], hist[-1]
        if t1 <= t0 or c1 <= c0:
            return None
        return max(0, head - c1) / ((c1 - c0) / (t1 - t0))


class CountProgress:
    """Objects done of a total, for transform and compact: 'transform: 120 of 450 objects'."""

    def __init__(self, what: str, unit: str = "objects") -> None:
        self.what, self.unit = what, unit
        self.done = self.total = 0
        self.lock = threading.Lock()

    def __call__(self, done: int, total: int) -> None:
        with self.lock:
            self.done, self.total = done, total

    def lines(self) -> list[str]:
        with self.lock:
            return [f"{self.what}: {self.done:,} of {self.total:,} {self.unit}"]


class Display:
    """Draws a model's lines on stderr: in place on a terminal, plain lines every plain_every_s otherwise."""

    def __init__(self, model, *, stream=None, tty: bool | None = None, every_s: float = 0.5,
                 plain_every_s: float = 30.0) -> None:
        self.model = model
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_s = every_s if self.tty else plain_every_s
        self._drawn = 0
        self._lock = threading.RLock()  # draw (its thread) and say (a signal handler in the main thread)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.draw()

    def draw(self) -> None:
        lines = self.model.lines()
        with self._lock:
            self._draw(lines)

    def _draw(self, lines: list[str]) -> None:
        try:
            if self.tty:
                up = f"\x1b[{self._drawn}F" if self._drawn else ""
                self.stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
                self._drawn = len(lines)
            else:
                self.stream.write("".join(f"progress: {line}\n" for line in lines))
            self.stream.flush()
        except (OSError, ValueError):  # stderr went away: progress is not worth failing the run for
            self._stop.set()

    def say(self, text: str) -> None:
        """A message between frames: written below the lines drawn, and the next frame is drawn below it."""
        with self._lock:
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):
                pass
            self._drawn = 0

    def close(self) -> None:
        if self._thread is not None and not self._stop.is_set():
            self._stop.set()
            self._thread.join()
            if self.tty:
                self.draw()  # the final state stays on screen
