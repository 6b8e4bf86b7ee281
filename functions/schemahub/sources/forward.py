"""Oldest-first paging: from a trade id (Binance) or from an opaque cursor the exchange hands back (Kraken).

Both keep the landing invariants: a page is asked for from the cursor the
checkpoint holds, the cursor only grows, and a run never walks past the head
it saw at its start, so every run ends.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from schemahub.errors import SourceError
from schemahub.sources.base import Chunk, Source, parse_time

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
        for attempt in range(self.p.empty_retries + 1):
            page, _ = self.get_records(s.path, q, tuple(s.records_path), symbol, deadline)
            if page.records:
                break
            if attempt < self.p.empty_retries:  # an empty answer is asked again before it is believed
                self.empty_pause(attempt, deadline)
        else:
            return head  # nothing traded since then: start at the head
        try:
            first = int(page.records[0][s.first_id_field])
        except (KeyError, TypeError, ValueError):
            raise SourceError(f"{self.exchange}: {s.path} record lacks {s.first_id_field!r}: {page.records[0]!r}") from None
        return min(first - 1, head)

    def fetch(self, symbol: str, cursor: int, *, head: int, upper: int | None = None, deadline: float | None = None) -> Chunk:
        warnings: list[str] = []
        head = self.confirmed_head(symbol, cursor, head, warnings, deadline)
        top = head if upper is None else min(upper, head)
        if top <= cursor:
            return Chunk(start=cursor, end=cursor, lines=[], request="", caught_up=True, warnings=warnings)
        p = self.p
        lines: list[bytes] = []
        requests: list[str] = []
        gaps: list[tuple[int, int]] = []
        backwards = duplicates = empties = 0
        c = cursor  # every id <= c is accounted for
        hole_at = None  # an id a page left out; asked for again from it, it is a gap if still left out
        lo_id = hi_id = None
        stopped = False  # no trade exists above c: the run's head was too high
        while c < top:
            n = min(self.t.page_size, top - c)
            page, ids, resp = self.trades_page(symbol, {p.from_param: c + 1, p.limit_param: n}, deadline)
            requests.append(self.request_of(resp))
            if (ids and min(ids) > c and max(ids) <= top and len(set(ids)) == len(ids) and ids == sorted(ids)
                    and (not p.contiguous_ids or (ids[0] == c + 1 and ids[-1] == c + len(ids)))):
                # The common case: ids c+1, c+2, ... in order (or, not contiguous, in order and after c).
                keep_ids, keep_lines, nxt = ids, page.lines, max(ids)
                hole_at = None
            else:
                below = sum(1 for x in ids if x <= c)
                if below:
                    backwards += below
                    warnings.append(f"{self.exchange}: {symbol}: {self.request_of(resp)} returned {below} id(s) at or "
                                    f"below {c} (ids went backwards): not landed again")
                idx = [i for i, x in enumerate(ids) if c < x <= top]
                kept = [ids[i] for i in idx]
                disorder = sum(1 for x, y in zip(kept, kept[1:]) if x > y)
                if disorder:
                    backwards += disorder
                    warnings.append(f"{self.exchange}: {symbol}: {disorder} id(s) out of order in an oldest-first page "
                                    f"from {c + 1}")
                if len(set(kept)) < len(kept):
                    d = len(kept) - len(set(kept))
                    duplicates += d
                    warnings.append(f"{self.exchange}: {symbol}: {d} trade(s) printed twice in one page (from {c + 1}): "
                                    "kept verbatim in raw, the table holds each once")
                if not kept:
                    if empties < p.empty_retries:  # an empty answer is asked again before it is believed
                        self.empty_pause(empties, deadline)
                        empties += 1
                        continue
                    newest = self.head(symbol, deadline)  # is there any trade after c at all?
                    if newest <= c:
                        warnings.append(f"{self.exchange}: {symbol}: no trade exists after id {c} although the run's "
                                        f"head was {head}: stopping at {c}")
                        stopped = True
                        break
                    raise SourceError(
                        f"{self.exchange}: {symbol}: {self.request_of(resp)} returned no trades {empties + 1} times "
                        f"though the exchange's newest trade is {newest}; not moving past {c}. Try again later")
                empties = 0
                if p.contiguous_ids:
                    present = set(kept)
                    first = min(present)
                    if first > c + 1:  # the page starts after a hole
                        if hole_at != c + 1:
                            hole_at = c + 1  # seen once: ask again from the hole itself
                            continue
                        gaps.append((c + 1, first - 1))
                        warnings.append(f"{self.exchange}: {symbol}: ids {c + 1}..{first - 1} are missing, confirmed "
                                        "by the exchange (asked for again from the first of them): a gap")
                    hole_at = None
                    nxt = first
                    while nxt + 1 in present:
                        nxt += 1
                    if nxt < max(present):
                        hole_at = nxt + 1  # a hole in the middle: the next request starts at it
                else:
                    nxt = max(kept)
                keep = [i for i in idx if ids[i] <= nxt]
                keep_ids = [ids[i] for i in keep]
                keep_lines = page.lines if len(keep) == len(ids) else [page.lines[i] for i in keep]
            lines += keep_lines
            if keep_ids:
                lo = min(keep_ids)
                hi = max(keep_ids)
                lo_id = lo if lo_id is None else min(lo_id, lo)
                hi_id = hi if hi_id is None else max(hi_id, hi)
            c = min(nxt, top)
            if hole_at is None or len(lines) >= self.t.page_size:
                break  # a page landed whole; a hole in it is asked for again first (from the hole)
        return Chunk(
            start=cursor, end=c, lines=lines, request=requests[0] if requests else "", caught_up=stopped or c >= head,
            min_id=lo_id, max_id=hi_id, more_requests=requests[1:], gaps=gaps, backwards=backwards,
            duplicates=duplicates, warnings=warnings,
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

    def _next_cursor(self, doc) -> int:
        nxt = doc
        for k in self.p.cursor_path:
            nxt = nxt.get(k) if isinstance(nxt, dict) else None
        try:
            return int(str(nxt))
        except ValueError:
            raise SourceError(f"{self.exchange}: no integer cursor at {'.'.join(self.p.cursor_path)}: {nxt!r}") from None

    def landed_before(self, symbol: str, cursor: int, max_id: int) -> None:
        # A run's first page then checks repeats and holes against the last landed trade, like every later page.
        self._tail[(symbol, cursor)] = max_id

    def _served_after_all(self, symbol: str, page, ids: list[int], holes, requests: list[str], deadline) -> bool:
        """Ask from just before the first hole (a request of another shape than the page's): True if any id the
        page left out is served there, so the hole was the answer's, not the exchange's."""
        a = holes[0][0]
        if (a - 1) not in ids:
            return False  # the hole opens the page: nothing in it dates the request (the same-cursor re-ask stands)
        p = self.p
        mul, div = _PER_US[p.cursor_unit]
        since = self._time_units(page.records[ids.index(a - 1)]) - max(1, 2 * mul // div)
        params = {p.cursor_param: str(since)}
        if p.limit_param:
            params[p.limit_param] = str(self.t.page_size)
        _, got, resp = self.trades_page(symbol, params, deadline)
        requests.append(self.request_of(resp))
        missing = {i for lo, hi in holes for i in range(lo, hi + 1)}
        return bool(missing.intersection(got))

    def _time_units(self, rec) -> int:
        return to_units(parse_time(rec[self.t.time_field], self.t.time_format), self.p.cursor_unit)

    def fetch(self, symbol: str, cursor: int, *, head: int, upper: int | None = None, deadline: float | None = None) -> Chunk:
        if upper is not None:
            raise SourceError(f"{self.exchange}: cannot backfill below the landed range (its cursor is opaque)")
        if cursor >= head:
            return Chunk(start=cursor, end=cursor, lines=[], request="", caught_up=True)
        p = self.p
        params = {p.cursor_param: str(cursor)}
        if p.limit_param:
            params[p.limit_param] = str(self.t.page_size)
        seen = self._tail.pop((symbol, cursor), None)
        mul, div = _PER_US[p.cursor_unit]
        slack = max(1, 2 * mul // div)  # 2 µs: the printed times are floats
        lead_max = int(p.max_cursor_lead_s * 1_000_000) * mul // div
        requests: list[str] = []
        warnings: list[str] = []
        backwards = duplicates = 0
        gaps: list[tuple[int, int]] = []
        before: list[tuple[int, int]] | None = None  # the holes the previous answer showed
        tries = p.empty_retries + 2  # a hole is believed when a re-ask shows it again
        empties = asks = 0  # empty answers; re-asks for a hole or a misprinted cursor
        refuted = 0  # holes a request of another shape showed were the page's, not the exchange's
        while True:
            page, ids, resp = self.trades_page(symbol, params, deadline)
            requests.append(self.request_of(resp))
            if not page.records:
                if empties < p.empty_retries:  # an empty answer is asked again before it is believed
                    self.empty_pause(empties, deadline)
                    empties += 1
                    continue
                # Nothing after the cursor (the head is the clock, so this is a possible answer): nothing moves.
                return Chunk(start=cursor, end=cursor, lines=[], request=requests[0], caught_up=True,
                             more_requests=requests[1:], warnings=warnings)
            end = self._next_cursor(page.doc)
            if end <= cursor:
                raise SourceError(f"{self.exchange}: {resp.url} returned trades but cursor {end} does not pass {cursor}")
            # Rows the previous page had, or dated before the cursor: ids went backwards.
            if seen is not None:
                keep = [i for i, x in enumerate(ids) if x > seen]
            else:
                k = 0
                while k < len(ids) and self._time_units(page.records[k]) < cursor - slack:
                    k += 1
                keep = list(range(k, len(ids)))
            kept = [ids[i] for i in keep]
            stray = len(ids) - len(kept)
            disorder = sum(1 for x, y in zip(kept, kept[1:]) if x > y)
            dups = len(kept) - len(set(kept))
            newest = self._time_units(page.records[-1])
            if disorder:
                newest = max(self._time_units(page.records[i]) for i in keep)
            if end - newest > lead_max:  # a misprinted cursor would skip every trade before it, for good
                if asks + 1 < tries:
                    self.empty_pause(asks, deadline)
                    asks += 1
                    continue
                raise SourceError(f"{self.exchange}: {symbol}: the next cursor {end} lies {(end - newest) * div / mul / 1e6:.0f} s "
                                  f"past the newest trade of its page, again after {asks} re-asks; not moving past {cursor}")
            holes: list[tuple[int, int]] = []
            if p.contiguous_ids and kept:
                prev = seen if seen is not None else min(kept) - 1
                for x in sorted(set(kept)):
                    if x - 1 > prev:
                        holes.append((prev + 1, x - 1))
                    prev = x
            if holes and holes != before:
                before = holes
                if asks + 1 < tries:
                    asks += 1
                    continue  # ask again from the same cursor: a hole is a gap only if it is there again
                raise SourceError(f"{self.exchange}: {symbol}: pages from cursor {cursor} keep leaving out different "
                                  f"ids (now {holes[:3]}); not moving past {cursor}")
            if holes and self._served_after_all(symbol, page, ids, holes, requests, deadline):
                # Two identical answers (a cache, a CDN) are no proof: a request shaped differently served them.
                refuted += 1
                if refuted >= 3 * tries:  # bounded: an exchange that never serves a page whole stops the product
                    raise SourceError(f"{self.exchange}: {symbol}: pages from cursor {cursor} leave out ids {holes[:3]} "
                                      f"that a narrower request serves ({refuted} times); not moving past {cursor}")
                before = None
                asks = max(0, asks - 1)  # the episode's re-ask is given back: the exchange has the ids
                self.empty_pause(refuted - 1, deadline)
                continue
            gaps = holes
            break
        if stray:
            backwards += stray
            warnings.append(f"{self.exchange}: {symbol}: the page after cursor {cursor} repeated {stray} trade(s) "
                            "landed before it (ids went backwards): not landed again")
        if disorder:
            backwards += disorder
            warnings.append(f"{self.exchange}: {symbol}: {disorder} id(s) out of order in an oldest-first page")
        if dups:
            duplicates += dups
            warnings.append(f"{self.exchange}: {symbol}: {dups} trade(s) printed twice in one page: kept verbatim "
                            "in raw, the table holds each once")
        for a, b in gaps:
            warnings.append(f"{self.exchange}: {symbol}: ids {a}..{b} are missing, confirmed by the exchange "
                            "(asked again from the same cursor, and from just before the hole): a gap")
        lines = page.lines if len(keep) == len(ids) else [page.lines[i] for i in keep]
        if kept:
            self._tail[(symbol, end)] = max(kept)
            if len(self._tail) > 10_000:
                self._tail.clear()
        return Chunk(
            start=cursor,
            end=end,
            lines=lines,
            request=requests[0],
            caught_up=end >= head,  # a short page is no proof (page caps vary): an empty answer ends the walk
            min_id=min(kept) if kept else None,
            max_id=max(kept) if kept else None,
            more_requests=requests[1:], gaps=gaps, backwards=backwards, duplicates=duplicates, warnings=warnings,
        )
