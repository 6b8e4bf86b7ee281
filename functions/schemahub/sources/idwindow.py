"""Newest-first paging by trade-id windows (Coinbase Exchange).

Only documented behaviour is used: `older=X` returns trades older than X,
and `newer=A&older=B` returns the window A < id < B. Windows are walked
upward, so each page covers a fixed id range and the landing key of a
window is the same on every retry.
"""

from __future__ import annotations

from datetime import datetime

from schemahub.sources.base import Chunk, Source, parse_time


class IdWindowSource(Source):
    def head(self, symbol: str, deadline: float | None = None) -> int:
        _, ids, _ = self.trades_page(symbol, {self.p.limit_param: 1}, deadline)
        return max(ids) if ids else 0

    def _at_or_below(self, symbol: str, x: int, deadline) -> datetime | None:
        page, ids, _ = self.trades_page(symbol, {self.p.older_param: x + 1, self.p.limit_param: 1}, deadline)
        if not ids:
            return None
        rec = page.records[ids.index(max(ids))]
        return parse_time(rec[self.t.time_field], self.t.time_format)

    def start_cursor(self, symbol: str, since: datetime, head: int, deadline: float | None = None) -> int:
        # Binary search for the last id whose trade is older than `since`: ~log2(head) requests.
        newest = self._at_or_below(symbol, head, deadline)
        if newest is None or newest < since:
            return head
        lo, hi = 0, head
        while hi - lo > 1:
            mid = (lo + hi) // 2
            t = self._at_or_below(symbol, mid, deadline)
            if t is None or t < since:
                lo = mid
            else:
                hi = mid
        return lo

    def fetch(self, symbol: str, cursor: int, *, head: int, upper: int | None = None, deadline: float | None = None) -> Chunk:
        # The window never passes the head seen at run start: every id in it
        # already exists, so its content is fixed and a retry refetches the
        # same trades. Ids missing from a window are gaps, not trades to come.
        top = min(cursor + self.t.page_size, head if upper is None else min(upper, head))
        if top <= cursor:
            return Chunk(start=cursor, end=cursor, lines=[], request="", caught_up=True)
        params = {self.p.newer_param: cursor, self.p.older_param: top + 1, self.p.limit_param: self.t.page_size}
        page, ids, resp = self.trades_page(symbol, params, deadline)
        lo_id, hi_id = (min(ids), max(ids)) if ids else (None, None)
        lines = page.lines
        if ids and not (cursor < lo_id and hi_id <= top):
            # Defensive: never land a trade outside the window we asked for.
            keep = [i for i, x in enumerate(ids) if cursor < x <= top]
            lines = [page.lines[i] for i in keep]
            kept = [ids[i] for i in keep]
            lo_id, hi_id = (min(kept), max(kept)) if kept else (None, None)
        return Chunk(
            start=cursor,
            end=top,
            lines=lines,
            request=resp.url[len(self.base_url):],
            caught_up=top >= head,
            min_id=lo_id,
            max_id=hi_id,
        )

