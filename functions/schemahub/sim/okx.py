"""The OKX simulator: history-trades by trade-id windows, all-string values, code 50011/50013 errors."""

from __future__ import annotations

import json

from schemahub.sim.base import Book, ExchangeSim, _compact, _plain


class OkxSim(ExchangeSim):
    """OKX: public/instruments, market/history-trades (type=1 trade-id cursors after/before, newest first).

    Every value is a string; `ts` is ms. Errors carry a non-zero `code`.
    """

    exchange = "okx"

    def rate_limited(self):
        return 429, {}, b'{"code":"50011","msg":"Too Many Requests","data":[]}'

    def special_fault(self, kind: str):
        if kind == "okx_busy":
            return 200, {}, b'{"code":"50013","msg":"Systems are busy. Please try again later.","data":[]}'
        return None

    def route(self, segs, q, headers):
        if segs == ["api", "v5", "public", "instruments"]:
            if q.get("instType") != "SPOT":
                return 200, {}, b'{"code":"51000","msg":"Parameter instType error","data":[]}'
            data = [{"instType": "SPOT", "instId": p, "baseCcy": p.split("-")[0], "quoteCcy": p.split("-")[1],
                     "state": "live", "tickSz": "0.1", "lotSz": "0.00000001"} for p in sorted(self.books)]
            return 200, {}, _compact({"code": "0", "msg": "", "data": data + list(self.extra_products)})
        if segs != ["api", "v5", "market", "history-trades"]:
            return None
        book = self.books.get(q.get("instId", ""))
        if book is None:
            return 200, {}, b'{"code":"51001","msg":"Instrument ID does not exist","data":[]}'
        if q.get("type", "1") != "1":
            return 200, {}, b'{"code":"51000","msg":"this simulator pages by trade id (type=1)","data":[]}'
        try:
            limit = int(q.get("limit", "100"))
            before = int(q["before"]) if "before" in q else None
            after = int(q["after"]) if "after" in q else None
        except ValueError:
            return 200, {}, b'{"code":"51000","msg":"Parameter error","data":[]}'
        if not 1 <= limit <= 100:
            return 200, {}, b'{"code":"51000","msg":"Parameter limit error","data":[]}'
        if before is None and after is None:  # the latest trades: how the connector reads the head
            ids = self.head_ids(book.ids(None, None, limit))
        else:
            ids, _ = self.hostile(book, book.ids(before, after, limit), newest_first=True)
        return 200, {}, b'{"code":"0","msg":"","data":[' + b",".join(self.render(book, i) for i in ids) + b"]}"

    def render(self, book: Book, i: int) -> bytes:
        t, price, size, side = book.core(i)
        return _compact({"instId": book.product_id, "side": side, "sz": _plain(size), "px": _plain(price),
                         "tradeId": str(i), "ts": str(t // 1000)})

    def id_of(self, line: bytes) -> int:
        return int(json.loads(line)["tradeId"])

    def truth(self, book: Book, i: int) -> dict:
        row = super().truth(book, i)
        row["time_us"] = row["time_us"] // 1000 * 1000  # OKX prints ms
        return row
