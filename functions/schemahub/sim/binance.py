"""The Binance Spot simulator: historicalTrades by fromId, aggTrades, weight budget, 429 then 418 bans."""

from __future__ import annotations

import json
import time
from decimal import Decimal

from schemahub.sim.archive import BinanceArchive
from schemahub.sim.base import Book, ExchangeSim, FixedBook, _compact, _first_at_or_after


class BinanceSim(ExchangeSim):
    """Binance Spot: exchangeInfo, trades, historicalTrades (fromId, oldest first), aggTrades (startTime).

    Request weight is counted per calendar minute and reported in
    X-MBX-USED-WEIGHT-1M. Over the limit: 429 with Retry-After. A client
    that keeps sending while a Retry-After is pending (more than
    `ban_after` requests) is banned: 418 for `ban_s` seconds, every request.
    Times are ms, or µs with the header X-MBX-TIME-UNIT: MICROSECOND.
    The same server serves the trade archive of the same books under /data/spot/ (sim/archive.py):
    `archive` holds its options (now, lag_s, ...), and `self.archive` its faults.
    """

    exchange = "binance"
    WEIGHTS = {"exchangeInfo": 20, "trades": 25, "historicalTrades": 25, "aggTrades": 4}

    def __init__(self, books, *, weight_limit: int = 6000, ban_after: int = 4, ban_s: float = 120.0,
                 archive: dict | None = None, **kw) -> None:
        super().__init__(books, **kw)
        self.archive = BinanceArchive(self, **(archive or {}))
        self.weight_limit, self.ban_after, self.ban_s = weight_limit, ban_after, ban_s
        self._minute, self._used = -1, 0
        self._retry_until, self._ignored, self._banned_until = 0.0, 0, 0.0

    def symbol(self, product_id: str) -> str:
        return product_id.replace("-", "")

    def _gate(self, endpoint: str) -> tuple[int, dict, bytes] | None:
        """Weight accounting and bans; an answer here replaces the normal one."""
        with self._lock:
            now = time.time()
            if now < self._banned_until:
                return self._ban(now)
            if now < self._retry_until:
                self._ignored += 1
                if self._ignored > self.ban_after:
                    self._banned_until = now + self.ban_s
                    return self._ban(now)
            minute = int(now // 60)
            if minute != self._minute:
                self._minute, self._used = minute, 0
            self._used += self.WEIGHTS.get(endpoint, 1)
            if self._used > self.weight_limit:
                wait = int(60 - now % 60) + 1
                self._retry_until, self._ignored = now + wait, 0
                return 429, {"Retry-After": str(wait), "X-MBX-USED-WEIGHT-1M": str(self._used)}, _compact(
                    {"code": -1003, "msg": f"Too much request weight used; current limit is {self.weight_limit} request "
                     "weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API."})
            return None

    def _ban(self, now: float) -> tuple[int, dict, bytes]:
        until_ms = int(self._banned_until * 1000)
        return 418, {"Retry-After": str(int(self._banned_until - now) + 1)}, _compact(
            {"code": -1003, "msg": f"Way too much request weight used; IP banned until {until_ms}. Please use WebSocket "
             "Streams for live updates to avoid bans."})

    def rate_limited(self):
        return 429, {}, b'{"code":-1003,"msg":"Too many requests."}'

    def special_fault(self, kind: str):
        if kind == "429":  # a real 429: the client must honour Retry-After, or the next ones earn a ban
            with self._lock:
                wait = self.faults.retry_after_s
                self._retry_until, self._ignored = time.time() + wait, 0
            return 429, {"Retry-After": str(wait)}, b'{"code":-1003,"msg":"Too many requests."}'
        if kind == "418":
            with self._lock:
                self._banned_until = time.time() + self.ban_s
                return self._ban(time.time())
        return None

    def route(self, segs, q, headers):
        if segs[:2] == ["data", "spot"]:
            return self.archive.route(segs)
        if segs[:2] != ["api", "v3"] or len(segs) != 3:
            return None
        endpoint = segs[2]
        if endpoint not in self.WEIGHTS:
            return None
        gated = self._gate(endpoint)
        if gated is None:
            answer = self._answer(endpoint, q, (headers.get("X-MBX-TIME-UNIT") or "").upper() == "MICROSECOND")
        else:
            answer = gated
        status, hdrs, body = answer
        return status, {"X-MBX-USED-WEIGHT-1M": str(self._used), **hdrs}, body

    def _answer(self, endpoint: str, q: dict, micro: bool) -> tuple[int, dict, bytes]:
        if endpoint == "exchangeInfo":
            symbols = [{"symbol": self.symbol(p), "status": "TRADING", "baseAsset": p.split("-")[0],
                        "quoteAsset": p.split("-")[1], "baseAssetPrecision": 8, "quoteAssetPrecision": 8}
                       for p in sorted(self.books)] + list(self.extra_products)
            return 200, {}, _compact({"timezone": "UTC", "serverTime": int(time.time() * 1000), "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": self.weight_limit}],
                "exchangeFilters": [], "symbols": symbols})
        book = self.book_for(q.get("symbol", ""))
        if book is None:
            return 400, {}, b'{"code":-1121,"msg":"Invalid symbol."}'
        try:
            limit = int(q.get("limit", "500"))
        except ValueError:
            return 400, {}, b'{"code":-1100,"msg":"Illegal characters found in parameter \'limit\'."}'
        if not 1 <= limit <= 1000:
            return 400, {}, b'{"code":-1130,"msg":"Invalid data sent for a parameter."}'
        head = book.head()
        if endpoint == "aggTrades":
            if "startTime" not in q:
                return 400, {}, b'{"code":-1102,"msg":"this simulator needs startTime"}'
            first = _first_at_or_after(book, int(q["startTime"]) * 1000)
            ids = range(first, min(head, first + limit - 1) + 1)
            return 200, {}, b"[" + b",".join(self._agg(book, i, micro) for i in ids) + b"]"
        if endpoint == "historicalTrades" and "fromId" in q:
            ids, _ = self.hostile(book, book.forward(int(q["fromId"]), limit), newest_first=False)
        else:  # the most recent trades (the connector's head)
            recent = [i for i in range(max(book.first_id, head - limit + 1), head + 1) if book.exists(i)]
            ids = self.head_ids(recent[::-1])[::-1]
        return 200, {}, b"[" + b",".join(self._trade(book, i, micro) for i in ids) + b"]"

    def _trade(self, book: Book, i: int, micro: bool) -> bytes:
        if isinstance(book, FixedBook):
            return book.trades[i]
        t, price, size, side = book.core(i)
        quote = (Decimal(price) * Decimal(size)).quantize(Decimal("0.00000001"))
        return _compact({"id": i, "price": price, "qty": size, "quoteQty": f"{quote:f}",
                         "time": t if micro else t // 1000, "isBuyerMaker": side == "sell", "isBestMatch": True})

    def _agg(self, book: Book, i: int, micro: bool) -> bytes:
        if isinstance(book, FixedBook):  # a recorded trade: its own aggregate
            w = json.loads(book.trades[i])
            return _compact({"a": i - 300_000, "p": w["price"], "q": w["qty"], "f": i, "l": i, "T": w["time"],
                             "m": w["isBuyerMaker"], "M": True})
        t, price, size, side = book.core(i)
        return _compact({"a": i - 300_000, "p": price, "q": size, "f": i, "l": i, "T": t if micro else t // 1000,
                         "m": side == "sell", "M": True})

    def render(self, book: Book, i: int) -> bytes:
        return self._trade(book, i, micro=True)

    def id_of(self, line: bytes) -> int:
        if line[:1] != b"{":  # an archive CSV row: the id is its first column
            return int(line.split(b",", 1)[0])
        return int(json.loads(line)["id"])
