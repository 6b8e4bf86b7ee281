"""Oldest-first paging: from a trade id (Binance) or from an opaque cursor the exchange hands back (Kraken).

Both keep the landing invariants: a page is asked for from the cursor the
checkpoint holds, the cursor only grows, and a run never walks past the head
it saw at its start, so every run ends.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from schemahub.errors import Retryable, SourceError
from schemahub.sources.base import Chunk, Source

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)
_PER_US = {"s": (1, 1_000_000), "ms": (1, 1_000), "us": (1, 1), "ns": (1_000, 1)}


def to_units(t: datetime, unit: str) -> int:
    """Integer time since the epoch in unit, exact to the µs, floored."""
    micros = (t - _EPOCH) // _US
    mul, div = _PER_US[unit]
    return micros * mul // div


class IdForwardSource(Source):
    """Binance: GET historicalTrades?fromId=cursor+1; the head is the newest id of the recent-trades endpoint."""

    def head(self, symbol: str, deadline: float | None = None) -> int:
        h = self.p.head
        page, _ = self.get_records(h.path, {**h.query, h.limit_param: "1"}, tuple(h.records_path), symbol, deadline,
                                   self.t.headers or None)
        ids = self.record_ids(page.records)
        if not ids:
            raise SourceError(f"{self.exchange}: {symbol} has no trades at all (empty {h.path})")
        return max(ids)

    def start_cursor(self, symbol: str, since: datetime, head: int, deadline: float | None = None) -> int:
        s = self.p.start
        q = {**s.query, s.time_param: str(to_units(since, s.time_unit)), s.limit_param: "1"}
        page, _ = self.get_records(s.path, q, tuple(s.records_path), symbol, deadline)
        if not page.records:
            return head  # nothing traded since then: start at the head
        try:
            first = int(page.records[0][s.first_id_field])
        except (KeyError, TypeError, ValueError):
            raise SourceError(f"{self.exchange}: {s.path} record lacks {s.first_id_field!r}: {page.records[0]!r}") from None
        return min(first - 1, head)

    def fetch(self, symbol: str, cursor: int, *, head: int, upper: int | None = None, deadline: float | None = None) -> Chunk:
        top = head if upper is None else min(upper, head)
        n = min(self.t.page_size, top - cursor)
        if n <= 0:
            return Chunk(start=cursor, end=cursor, lines=[], request="", caught_up=True)
        page, ids, resp = self.trades_page(symbol, {self.p.from_param: cursor + 1, self.p.limit_param: n}, deadline)
        if not ids:
            # Ids up to the head exist, so an empty answer is not "no trades": never advance past it.
            raise SourceError(f"{self.exchange}: {resp.url} returned no trades though ids up to {top} exist")
        if min(ids) <= cursor:
            raise SourceError(f"{self.exchange}: {resp.url} returned id {min(ids)}, not after {cursor}")
        # Trades come oldest first from cursor+1: everything up to the largest id returned is in the page.
        end = min(max(ids), top)
        keep = [i for i, x in enumerate(ids) if x <= end]
        lines = page.lines if len(keep) == len(ids) else [page.lines[i] for i in keep]
        kept = [ids[i] for i in keep]
        return Chunk(
            start=cursor,
            end=end,
            lines=lines,
            request=resp.url[len(self.base_url):],
            caught_up=end >= head,
            min_id=min(kept) if kept else None,
            max_id=max(kept) if kept else None,
        )


class CursorForwardSource(Source):
    """Kraken: GET Trades?since=cursor; the response's `last` is the next cursor, passed back exactly."""

    supports_backfill = False
    counts_trades = False  # the cursor is a time in ns

    def __init__(self, spec, http) -> None:
        super().__init__(spec, http)
        self._tail: dict[tuple[str, int], int] = {}  # (symbol, cursor) -> largest trade id landed before it

    def head(self, symbol: str, deadline: float | None = None) -> int:
        # The cursor is a time: a run walks up to the moment it started.
        return to_units(self.http.clock.now(), self.p.cursor_unit)

    def start_cursor(self, symbol: str, since: datetime, head: int, deadline: float | None = None) -> int:
        return min(to_units(since, self.p.cursor_unit) - 1, head)  # `since` is exclusive: one unit earlier

    def fetch(self, symbol: str, cursor: int, *, head: int, upper: int | None = None, deadline: float | None = None) -> Chunk:
        if upper is not None:
            raise SourceError(f"{self.exchange}: cannot backfill below the landed range (its cursor is opaque)")
        if cursor >= head:
            return Chunk(start=cursor, end=cursor, lines=[], request="", caught_up=True)
        params = {self.p.cursor_param: str(cursor)}
        if self.p.limit_param:
            params[self.p.limit_param] = str(self.t.page_size)
        page, ids, resp = self.trades_page(symbol, params, deadline)
        nxt = page.doc
        for k in self.p.cursor_path:
            nxt = nxt.get(k) if isinstance(nxt, dict) else None
        try:
            end = int(str(nxt))
        except ValueError:
            raise Retryable(f"no integer cursor at {'.'.join(self.p.cursor_path)}: {nxt!r}") from None
        lines = page.lines
        seen = self._tail.pop((symbol, cursor), None)
        if seen is not None and ids and min(ids) <= seen:
            # Defensive, should `since` ever be inclusive: drop what the previous page already had.
            keep = [i for i, x in enumerate(ids) if x > seen]
            lines, ids = [lines[i] for i in keep], [ids[i] for i in keep]
        if not page.records:
            return Chunk(start=cursor, end=cursor, lines=[], request=resp.url[len(self.base_url):], caught_up=True)
        if end <= cursor:
            raise SourceError(f"{self.exchange}: {resp.url} returned trades but cursor {end} does not pass {cursor}")
        if ids:
            self._tail[(symbol, end)] = max(ids)
            if len(self._tail) > 10_000:
                self._tail.clear()
        return Chunk(
            start=cursor,
            end=end,
            lines=lines,
            request=resp.url[len(self.base_url):],
            caught_up=len(page.records) < self.t.page_size or end >= head,
            min_id=min(ids) if ids else None,
            max_id=max(ids) if ids else None,
        )
