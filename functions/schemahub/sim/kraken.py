"""The Kraken simulator: Trades?since in ns, errors inside HTTP 200 bodies, legacy X/Z result keys."""

from __future__ import annotations

import json
from decimal import Decimal

from schemahub.sim.base import Book, ExchangeSim, FixedBook, _compact, _mix

_KRAKEN_NAMES = {  # unified -> (result key, altname, wsname): legacy pairs keep X/Z-prefixed keys
    "BTC-USD": ("XXBTZUSD", "XBTUSD", "XBT/USD"),
    "ETH-USD": ("XETHZUSD", "ETHUSD", "ETH/USD"),
    "BTC-EUR": ("XXBTZEUR", "XBTEUR", "XBT/EUR"),
    "BTC-USDT": ("XBTUSDT", "XBTUSDT", "XBT/USDT"),
}


class KrakenSim(ExchangeSim):
    """Kraken Spot: AssetPairs, and Trades?pair=&since=&count= with the `last` ns cursor, oldest first.

    Errors, rate limits included, come back with HTTP 200 in the `error`
    array. A trade's cursor is its time in ns (µs time plus a sub-µs digit).
    """

    exchange = "kraken"

    def names(self, product_id: str) -> tuple[str, str, str]:
        if product_id in _KRAKEN_NAMES:
            return _KRAKEN_NAMES[product_id]
        base, quote = product_id.split("-")
        return base + quote, base + quote, f"{base}/{quote}"

    def symbol(self, product_id: str) -> str:
        return self.names(product_id)[1]

    def book_for(self, symbol: str):
        for b in self.books.values():
            key, alt, _ = self.names(b.product_id)
            if symbol in (key, alt):
                return b
        return None

    def rate_limited(self):
        return 200, {}, b'{"error":["EAPI:Rate limit exceeded"]}'

    def special_fault(self, kind: str):
        if kind == "kraken_rate":
            return self.rate_limited()
        if kind == "kraken_unavailable":
            return 200, {}, b'{"error":["EService:Unavailable"]}'
        if kind == "kraken_busy":
            return 200, {}, b'{"error":["EService:Busy"]}'
        return None

    def _sub(self, book: Book, i: int) -> int:
        return _mix(book.seed * 7_919 + i) % 10  # the sub-µs digit Kraken's float time shows

    def cursor_of(self, book: Book, i: int) -> int:
        if isinstance(book, FixedBook):
            return book.cursors[i]
        return book.time_us(i) * 1000 + self._sub(book, i) * 100

    def route(self, segs, q, headers):
        if segs[:2] != ["0", "public"] or len(segs) != 3:
            return None
        if segs[2] == "AssetPairs":
            result = {}
            for pid in sorted(self.books):
                key, alt, ws = self.names(pid)
                base, quote = ws.split("/")
                result[key] = {"altname": alt, "wsname": ws, "aclass_base": "currency", "base": base,
                               "aclass_quote": "currency", "quote": quote, "status": "online"}
            for extra in self.extra_products:
                result.update(extra)
            return 200, {}, _compact({"error": [], "result": result})
        if segs[2] != "Trades":
            return None
        book = self.book_for(q.get("pair", ""))
        if book is None:
            return 200, {}, b'{"error":["EQuery:Unknown asset pair"]}'
        try:
            count = min(1000, max(1, int(q.get("count", "1000"))))
            since_text = q.get("since", "0")
            since = int(Decimal(since_text) * 10**9) if "." in since_text else int(since_text)
        except (ValueError, ArithmeticError):
            return 200, {}, b'{"error":["EGeneral:Invalid arguments"]}'
        ids, kind = self.hostile(book, self._after(book, since, count), newest_first=False)
        rows = b",".join(self.render(book, i) for i in ids)
        last = str(max(self.cursor_of(book, i) for i in ids) if ids else since)
        if kind == "misprint_cursor" and ids:
            last = str(int(last) + 86_400 * 10**9)
        key = self.names(book.product_id)[0]
        return 200, {}, b'{"error":[],"result":{"' + key.encode() + b'":[' + rows + b'],"last":"' + last.encode() + b'"}}'

    def _after(self, book: Book, since: int, count: int) -> list[int]:
        """Up to count ids whose cursor is > since (`since` is exclusive), oldest first."""
        lo, hi = book.first_id, book.head() + 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self.cursor_of(book, mid) <= since:
                lo = mid + 1
            else:
                hi = mid
        return book.forward(lo, count)

    def render(self, book: Book, i: int) -> bytes:
        if isinstance(book, FixedBook):
            return book.trades[i]
        t, price, size, side = book.core(i)
        secs, us = divmod(t, 1_000_000)
        frac = f"{us:06d}{self._sub(book, i)}".rstrip("0") or "0"
        h = _mix(book.seed * 31 + i)
        return b'["%s","%s",%d.%s,"%s","%s","",%d]' % (
            price[:-3].encode(), size.encode(), secs, frac.encode(), side[0].encode(), b"m" if h & 1 else b"l", i)

    def id_of(self, line: bytes) -> int:
        return int(json.loads(line)[6])

    def truth(self, book: Book, i: int) -> dict:
        row = super().truth(book, i)
        row["price"] = Decimal(book.core(i)[1][:-3])
        return row
