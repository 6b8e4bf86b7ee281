"""The Coinbase Exchange simulator: newest-first pages by trade-id windows, maker side printed."""

from __future__ import annotations

import json

from schemahub.sim.base import Book, ExchangeSim, _compact


class CoinbaseSim(ExchangeSim):
    """Coinbase Exchange: GET /products, GET /products/{id}/trades with before/after id cursors, newest first."""

    exchange = "coinbase"

    def products_body(self) -> bytes:
        out = []
        for pid in sorted(self.books):
            base, quote = pid.split("-")
            out.append({"id": pid, "base_currency": base, "quote_currency": quote, "quote_increment": "0.01",
                        "base_increment": "0.00000001", "display_name": f"{base}/{quote}", "status": "online",
                        "trading_disabled": False, "cancel_only": False, "post_only": False, "limit_only": False})
        out.extend(self.extra_products)
        return _compact(out)

    def route(self, segs, q, headers):
        if segs == ["products"]:
            return 200, {}, self.products_body()
        if len(segs) == 3 and segs[0] == "products" and segs[2] == "trades":
            book = self.books.get(segs[1])
            if book is None:
                return 404, {}, b'{"message":"NotFound"}'
            return self.trades_response(book, q)
        return None

    def trades_response(self, book: Book, q: dict) -> tuple[int, dict, bytes]:
        try:
            limit = int(q.get("limit", "1000"))
            before = int(q["before"]) if "before" in q else None
            after = int(q["after"]) if "after" in q else None
        except ValueError:
            return 400, {}, b'{"message":"Invalid request"}'
        if not 1 <= limit <= 1000:
            return 400, {}, b'{"message":"Invalid limit"}'
        if before is None and after is None:  # the latest trades: how the connector reads the head
            ids = self.head_ids(book.ids(None, None, limit))
        elif before is not None and after is None:
            # Undocumented on its own: the connector must not rely on it, so answer the latest page.
            ids = book.ids(None, None, limit)
        else:
            ids, _ = self.hostile(book, book.ids(before, after, limit), newest_first=True)
        body = b"[" + b",".join(book.trade_bytes(i) for i in ids) + b"]"
        headers = {"cb-before": str(max(ids)), "cb-after": str(min(ids))} if ids else {}
        return 200, headers, body

    def render(self, book: Book, i: int) -> bytes:
        return book.trade_bytes(i)

    def id_of(self, line: bytes) -> int:
        return int(json.loads(line)["trade_id"])
