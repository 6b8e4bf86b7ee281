"""A scripted in-process source and a fake clock, for landing tests that need exact control of interleavings.

The source's cursor is the trade id (as Coinbase's and Binance's are); `present`
says which ids exist, so an id range with none of them is a confirmed gap.
`hooks` run before a given fetch (by call number), which is how a test slips a
second run in between two pages of the first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from schemahub.clock import Clock
from schemahub.errors import SourceError
from schemahub.sources.base import Chunk, Product, Source
from schemahub.sources.spec import load_exchange

P = Product("BTC-USD", "BTC-USD", "BTC", "USD")
EPOCH = datetime(2026, 11, 1, tzinfo=timezone.utc)


class FakeClock(Clock):
    """Time moves only when a test (or a sleep) moves it."""

    def __init__(self, t: float = EPOCH.timestamp()) -> None:
        self.t = t

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, timezone.utc)

    def time(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        self.t += seconds


def trade(i: int) -> bytes:
    return json.dumps({"trade_id": i, "price": "100.00", "size": "1.0", "side": "buy",
                       "time": (EPOCH + timedelta(seconds=i)).isoformat()}, separators=(",", ":")).encode()


def trade_id(line: bytes) -> int:
    return json.loads(line)["trade_id"]


class ScriptedSource(Source):
    """Trade ids `present` up to `head`; pages of page_size ids; trade i happened at EPOCH + i seconds."""

    def __init__(self, present, head: int, *, page_size: int = 100, pages_per_object: int = 1,
                 backfill: bool = True, exchange: str = "coinbase") -> None:
        spec = load_exchange(exchange)
        t = spec.source.trades.model_copy(update={"page_size": page_size, "pages_per_object": pages_per_object})
        super().__init__(spec.model_copy(update={"source": spec.source.model_copy(update={"trades": t})}), None)
        self.present = set(present)
        self._head = head
        self.supports_backfill = backfill
        self.offline = False
        self.calls = 0
        self.hooks: dict[int, Callable[[], None]] = {}

    def head(self, symbol: str, deadline: float | None = None) -> int:
        return self._head

    def start_cursor(self, symbol: str, since: datetime, head: int, deadline: float | None = None) -> int:
        return min(int((since - EPOCH).total_seconds()) - 1, head)

    def fetch(self, symbol: str, cursor: int, *, head: int, upper: int | None = None, deadline: float | None = None) -> Chunk:
        self.calls += 1
        hook = self.hooks.pop(self.calls, None)
        if hook is not None:
            hook()
        if self.offline:
            raise SourceError(f"{self.exchange}: connection refused (scripted)")
        top = min(cursor + self.t.page_size, head if upper is None else min(upper, head))
        if top <= cursor:
            return Chunk(start=cursor, end=cursor, lines=[], request="", caught_up=True)
        ids = sorted(i for i in self.present if cursor < i <= top)
        return Chunk(start=cursor, end=top, lines=[trade(i) for i in ids], request=f"/trades?after={cursor}&upto={top}",
                     caught_up=top >= head, min_id=ids[0] if ids else None, max_id=ids[-1] if ids else None)


def since(cursor: int) -> datetime:
    """The --since whose start cursor is `cursor` (the first trade landed is cursor + 1)."""
    return EPOCH + timedelta(seconds=cursor + 1)


def landed_ids(store, exchange: str = "coinbase", product_id: str = "BTC-USD") -> list[int]:
    """Every trade id in every raw object of the product, repeats included (decoded with the one raw reader)."""
    from schemahub import rawobject
    from schemahub.layout import parse_raw_key, raw_prefix

    out = []
    for info in store.list(raw_prefix(exchange, product_id)):
        if parse_raw_key(info.key) is None:
            continue
        _, lines = rawobject.decode(store.get(info.key).data, info.key)
        out += [trade_id(line) for line in lines]
    return out


def chain(store, exchange: str = "coinbase", product_id: str = "BTC-USD") -> list[tuple[int, int, int]]:
    """(start, end, count) of every raw object, in key order."""
    from schemahub import rawobject
    from schemahub.layout import parse_raw_key, raw_prefix

    out = []
    for info in store.list(raw_prefix(exchange, product_id)):
        if parse_raw_key(info.key) is None:
            continue
        h = rawobject.read_header(store.get(info.key).data, info.key)
        out.append((h.start, h.end, h.count))
    return out
