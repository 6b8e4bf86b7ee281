"""Newest-first paging by trade-id windows (Coinbase Exchange, OKX).

Only documented behaviour is used: `older=X` returns trades older than X,
and `newer=A&older=B` returns the window A < id < B. Windows are walked
upward, so each window covers a fixed id range and the landing key of a
window is the same on every retry.

A window is landed only when every id in it is accounted for (the page
checks of spec.PageChecks). A page shorter than asked for is normal (page
caps vary): the rest of the window is asked for with narrower requests. An
empty answer is asked again before it is believed, and ids are a gap only
when the exchange confirms it: `older=B` (a differently shaped request)
shows nothing between them and the trade below, and trades exist above
them. Otherwise the product fails and the checkpoint stays put.
"""

from __future__ import annotations

from datetime import datetime

from schemahub.errors import SourceError
from schemahub.sources.base import Chunk, Source, parse_time


class IdWindowSource(Source):
    def head(self, symbol: str, deadline: float | None = None) -> int:
        _, ids, _ = self.trades_page(symbol, {self.p.limit_param: 1}, deadline)
        return max(ids) if ids else 0

    def _at_or_below(self, symbol: str, x: int, deadline, retry_empty: bool = False, pause: bool = True) -> datetime | None:
        tries = self.p.empty_retries + 1 if retry_empty else 1
        for attempt in range(tries):
            page, ids, _ = self.trades_page(symbol, {self.p.older_param: x + 1, self.p.limit_param: 1}, deadline)
            if ids:
                rec = page.records[ids.index(max(ids))]
                return parse_time(rec[self.t.time_field], self.t.time_format)
            if pause and attempt + 1 < tries:  # an empty answer is asked again before it is believed
                self.empty_pause(attempt, deadline)
        return None

    def start_cursor(self, symbol: str, since: datetime, head: int, deadline: float | None = None) -> int:
        # Binary search for the last id whose trade is older than `since`: ~log2(head) requests.
        newest = self._at_or_below(symbol, head, deadline, retry_empty=True)
        if newest is None:  # the head is a trade that exists: an exchange that will not show it is failing
            raise SourceError(f"{self.exchange}: {symbol}: `{self.p.older_param}={head + 1}` returns no trades although "
                              f"the newest is {head}; cannot find where --since starts. Try again later")
        if newest < since:
            return head
        lo = self._search(symbol, since, head, deadline, retry_empty=False)
        # A transient empty answer in the search would have moved `lo` past trades at or after `since`. Times
        # grow with ids, so checking the result once shows it: then search again, believing no empty answer
        # before it is asked again.
        t = self._at_or_below(symbol, lo, deadline, retry_empty=True, pause=False)  # (below the first trade: empty)
        if t is not None and t >= since:
            lo = self._search(symbol, since, head, deadline, retry_empty=True)
        return lo

    def _search(self, symbol: str, since: datetime, head: int, deadline, *, retry_empty: bool) -> int:
        lo, hi = 0, head
        while hi - lo > 1:
            mid = (lo + hi) // 2
            t = self._at_or_below(symbol, mid, deadline, retry_empty)
            if t is None or t < since:
                lo = mid
            else:
                hi = mid
        return lo

    def fetch(self, symbol: str, cursor: int, *, head: int, upper: int | None = None, deadline: float | None = None) -> Chunk:
        # The window never passes the (confirmed) head seen at run start: every id in it already exists, so its
        # content is fixed and a retry refetches the same trades.
        warnings: list[str] = []
        head = self.confirmed_head(symbol, cursor, head, warnings, deadline)
        top = min(cursor + self.t.page_size, head if upper is None else min(upper, head))
        if top <= cursor:
            return Chunk(start=cursor, end=cursor, lines=[], request="", caught_up=True, warnings=warnings)
        page, ids, resp = self._window(symbol, cursor, top, deadline)
        n = top - cursor
        if (len(ids) == n and min(ids) > cursor and max(ids) <= top and len(set(ids)) == n
                and ids == sorted(ids, reverse=True)):
            # The common case: the page holds every id of the window, newest first.
            return Chunk(start=cursor, end=top, lines=page.lines, request=self.request_of(resp),
                         caught_up=top >= head, min_id=cursor + 1, max_id=top, warnings=warnings)
        return _Cover(self, symbol, cursor, top, head, deadline, warnings).run(page, ids, resp)

    def _window(self, symbol: str, a: int, b: int, deadline):
        """The ids a < id <= b, newest first (at most page_size of them)."""
        return self.trades_page(symbol, {self.p.newer_param: a, self.p.older_param: b + 1,
                                         self.p.limit_param: self.t.page_size}, deadline)

    def _older(self, symbol: str, b: int, deadline):
        """The newest ids <= b, whatever lies below (the request that pages back through history)."""
        return self.trades_page(symbol, {self.p.older_param: b + 1, self.p.limit_param: self.t.page_size}, deadline)


class _Cover:
    """Walk one window (cursor, top] until every id in it is received, confirmed absent, or the product fails."""

    def __init__(self, src: IdWindowSource, symbol: str, cursor: int, top: int, head: int, deadline, warnings) -> None:
        self.src, self.symbol, self.cursor, self.top, self.head, self.deadline = src, symbol, cursor, top, head, deadline
        self.contiguous = src.p.contiguous_ids
        self.lines: list[bytes] = []
        self.got: set[int] = set()
        self.requests: list[str] = []
        self.gaps: list[tuple[int, int]] = []
        self.warnings = warnings
        self.backwards = 0
        self.duplicates = 0
        self.end = top  # lowered when ids at the top of the window turn out not to exist yet
        self.newest_known: int | None = None  # the exchange's newest trade, asked for when needed
        self.stopped = False  # the ids above `end` do not exist yet: the run is caught up at `end`
        self._ids: list[int] = []  # the id of each line kept

    def run(self, page, ids, resp) -> Chunk:
        src = self.src
        pending: list[tuple[int, int, int]] = []  # (a, b, empty answers so far): ids a < id <= b still to account for
        first = (page, ids, resp)
        a, b, empties = self.cursor, self.top, 0
        while True:
            if first is not None:
                page, ids, resp = first
                first = None
            else:
                page, ids, resp = src._window(self.symbol, a, b, self.deadline)
            self.requests.append(src.request_of(resp))
            kept = self._take(page, ids, a, b, older_only=False)
            if kept:
                pending += [(x, y, 0) for x, y in self._unaccounted(a, b, kept)]
            elif empties < src.p.empty_retries:
                src.empty_pause(empties, self.deadline)  # an empty answer is asked again before it is believed
                pending.append((a, b, empties + 1))
            else:
                self._confirm(a, b, pending)
            if not pending:
                break
            a, b, empties = pending.pop()
        lines = self.lines
        if self.end < self.top:
            keep = [i for i, x in enumerate(self._ids) if x <= self.end]
            lines = [lines[i] for i in keep]
        ids_kept = [x for x in self._ids if x <= self.end]
        return Chunk(
            start=self.cursor, end=self.end, lines=lines, request=self.requests[0],
            caught_up=self.stopped or self.end >= self.head,
            min_id=min(ids_kept) if ids_kept else None, max_id=max(ids_kept) if ids_kept else None,
            more_requests=self.requests[1:], gaps=sorted(g for g in self.gaps if g[1] <= self.end),
            backwards=self.backwards, duplicates=self.duplicates, warnings=self.warnings,
        )

    def _take(self, page, ids, a: int, b: int, *, older_only: bool) -> list[int]:
        """Keep the rows with a < id <= b (verbatim, duplicates included); report what does not belong."""
        keep = [i for i, x in enumerate(ids) if a < x <= b]
        kept = [ids[i] for i in keep]
        src = self.src
        stray = [x for x in ids if x > b] if older_only else [x for x in ids if not a < x <= b]
        if stray:
            self.backwards += len(stray)
            self.warnings.append(f"{src.exchange}: {self.symbol}: asked for ids {a + 1}..{b}, the page also held "
                                 f"{len(stray)} outside it (e.g. {stray[0]}): not landed here")
        if len(set(kept)) < len(kept):
            d = len(kept) - len(set(kept))
            self.duplicates += d
            self.warnings.append(f"{src.exchange}: {self.symbol}: {d} trade(s) printed twice in one page (ids "
                                 f"{a + 1}..{b}): kept verbatim in raw, the table holds each once")
        disorder = sum(1 for x, y in zip(kept, kept[1:]) if x < y)
        if disorder:
            self.backwards += disorder
            self.warnings.append(f"{src.exchange}: {self.symbol}: {disorder} id(s) out of order in a newest-first "
                                 f"page (ids {a + 1}..{b})")
        fresh = [i for i, x in zip(keep, kept) if x not in self.got]
        self.lines += [page.lines[i] for i in fresh] if len(fresh) < len(page.lines) else page.lines
        new_ids = [ids[i] for i in fresh]
        self._ids += new_ids
        self.got.update(new_ids)
        return kept

    def _unaccounted(self, a: int, b: int, kept: list[int]) -> list[tuple[int, int]]:
        """Ranges of (a, b] a page did not cover: every missing run if ids are contiguous, else what lies below
        the lowest id received (and the head, which is known to exist)."""
        if not self.contiguous:
            out = []
            low = min(kept)
            if low - 1 > a:
                out.append((a, low - 1))
            if b == self.head and self.head not in self.got and max(kept) < b:
                out.append((max(kept), b))
            return out
        return _missing_runs(a, b, kept)

    def _confirm(self, a: int, b: int, pending: list) -> None:
        """Ids a < id <= b came back empty every time: ask with `older` alone; believe only what it confirms."""
        src = self.src
        for attempt in range(src.p.empty_retries + 1):
            page, ids, resp = src._older(self.symbol, b, self.deadline)
            self.requests.append(src.request_of(resp))
            if any(x <= b for x in ids):
                break
            if attempt < src.p.empty_retries:
                src.empty_pause(attempt, self.deadline)
        else:
            raise SourceError(
                f"{src.exchange}: {self.symbol}: ids {a + 1}..{b} came back empty {src.p.empty_retries + 1} times and "
                f"`{src.p.older_param}={b + 1}` returns no trades either; not moving past {a}. The exchange is failing "
                "or serves no history here: try again later")
        kept = self._take(page, ids, a, b, older_only=True)
        low = min(ids)  # <= b
        if low > a:  # the page did not reach down to a: keep walking below it
            pending.append((a, low - 1, 0))
            lower = low - 1
        else:
            lower = a
        # Everything in (lower, b] that the `older` page did not hold is confirmed absent by two kinds of request.
        absent = self._runs(lower, b, kept) if self.contiguous or not kept else []
        for x, y in absent:
            if self._exists_above(y):
                if not self.contiguous:
                    continue  # ids need not exist: nothing is missing
                self.gaps.append((x + 1, y))
                self.warnings.append(f"{src.exchange}: {self.symbol}: ids {x + 1}..{y} are missing, confirmed by "
                                     "the exchange (asked again, and trades exist on both sides): a gap")
            else:
                # No trade above them exists: they are not printed yet, so the head the run saw was too high.
                self.end, self.stopped = min(self.end, x), True
                self.warnings.append(f"{src.exchange}: {self.symbol}: no trade exists after id {x} although the "
                                     f"run's head was {self.head}: stopping at {x}")

    def _runs(self, a: int, b: int, kept: list[int]) -> list[tuple[int, int]]:
        return _missing_runs(a, b, set(kept) | {i for i in self.got if a < i <= b})

    def _exists_above(self, y: int) -> bool:
        """Is there a trade above id y? Only a trade served proves it (a head, misprinted, would not)."""
        if any(i > y for i in self.got):
            return True
        if self.newest_known is None:
            src = self.src
            if y >= self.head:
                self.newest_known = y
            else:
                _, ids, resp = src.trades_page(self.symbol, {src.p.newer_param: y, src.p.older_param: self.head + 1,
                                                             src.p.limit_param: 1}, self.deadline)
                self.requests.append(src.request_of(resp))
                self.newest_known = max(ids) if ids else y
        return self.newest_known > y


def _missing_runs(a: int, b: int, ids) -> list[tuple[int, int]]:
    """The runs (lo, hi] of (a, b] that ids do not hold."""
    out, prev = [], a
    for x in sorted(set(ids)):
        if x - 1 > prev:
            out.append((prev, x - 1))
        prev = x
    if b > prev:
        out.append((prev, b))
    return out
