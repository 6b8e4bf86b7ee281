"""Loopback exchange simulators speaking the public trade APIs of Coinbase, Binance, Kraken and OKX.

Trades are a pure function of (product, trade id), so tests know the ground
truth; new trades keep arriving while a run goes on; faults are injected by
probability or by script. The tests and `schemahub demo` use it, and anyone
can try the pipeline with it offline: `schemahub sim`.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

_M64 = (1 << 64) - 1


def _mix(x: int) -> int:
    # splitmix64: cheap, well-spread, deterministic.
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _rfc3339(us: int) -> str:
    secs, frac = divmod(us, 1_000_000)
    base = datetime.fromtimestamp(secs, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    f = f"{frac:06d}".rstrip("0")
    return f"{base}.{f}Z" if f else f"{base}Z"


class Book:
    """The trades of one product, ids first_id.. with one trade every interval_us."""

    def __init__(
        self,
        product_id: str,
        *,
        first_id: int = 1_000_000,
        initial: int = 5_000,
        live_per_s: float = 0.0,
        interval_us: int = 50_000,
        base_cents: int = 6_000_000,
        seed: int = 1,
        start_us: int | None = None,
        t0: float | None = None,
        clock=time.time,
    ) -> None:
        self.product_id = product_id
        self.first_id = first_id
        self.initial = initial
        self.live_per_s = live_per_s
        self.interval_us = interval_us
        self.base_cents = base_cents
        self.seed = seed
        self.clock = clock
        self.t0 = clock() if t0 is None else t0
        self.start_us = start_us if start_us is not None else int(self.t0 * 1e6) - initial * interval_us
        self.trade_bytes = lru_cache(maxsize=262_144)(self._trade_bytes)

    def head(self) -> int:
        live = int((self.clock() - self.t0) * self.live_per_s) if self.live_per_s else 0
        return self.first_id + self.initial + live - 1

    def time_us(self, i: int) -> int:
        h = _mix(self.seed * 1_000_003 + i)
        jitter = h % self.interval_us
        if h % 7 == 0:
            jitter -= jitter % 1000  # some times print with 3 or fewer fraction digits
        return self.start_us + (i - self.first_id) * self.interval_us + jitter

    def fields(self, i: int) -> dict:
        h = _mix(self.seed * 1_000_003 + i)
        cents = self.base_cents + ((i - self.first_id) // 50) % 4001 - 2000 + (h >> 8) % 41 - 20
        sat = 1 + (h >> 20) % 250_000_000
        return {
            "time": _rfc3339(self.time_us(i)),
            "trade_id": i,
            "price": f"{cents // 100}.{cents % 100:02d}000000",
            "size": f"{sat // 10**8}.{sat % 10**8:08d}",
            "side": "buy" if (h >> 40) & 1 else "sell",
        }

    def _trade_bytes(self, i: int) -> bytes:
        return json.dumps(self.fields(i), separators=(",", ":")).encode()

    def core(self, i: int) -> tuple[int, str, str, str]:
        """(time µs, price text, size text, TAKER side): what every exchange's rendering starts from."""
        f = self.fields(i)  # `side` in fields is Coinbase's maker side
        return self.time_us(i), f["price"], f["size"], "sell" if f["side"] == "buy" else "buy"

    def ids(self, lo_excl: int | None, hi_excl: int | None, limit: int) -> list[int]:
        """Ids in (lo_excl, hi_excl), newest first, at most limit."""
        top = self.head() if hi_excl is None else min(self.head(), hi_excl - 1)
        bottom = self.first_id if lo_excl is None else max(self.first_id, lo_excl + 1)
        if top < bottom:
            return []
        return list(range(top, max(bottom, top - limit + 1) - 1, -1))


class FixedBook(Book):
    """A book replaying a fixed list of real trades (their exact bytes)."""

    def __init__(self, product_id: str, trades: dict[int, bytes], head: int | None = None, *,
                 cursors: dict[int, int] | None = None, times: dict[int, int] | None = None) -> None:
        self.product_id = product_id
        self.trades = trades
        self.first_id = min(trades)
        self._head = head if head is not None else max(trades)
        self.trade_bytes = trades.__getitem__
        self.cursors = cursors or {}  # trade id -> cursor, where the cursor is not the id (Kraken)
        self.times = times or {}      # trade id -> time µs, for lookups by time

    def time_us(self, i: int) -> int:
        return self.times[i]

    def head(self) -> int:
        return self._head

    def set_head(self, head: int) -> None:
        self._head = head

    def ids(self, lo_excl, hi_excl, limit):
        return [i for i in super().ids(lo_excl, hi_excl, limit) if i in self.trades]


FAULTS = ("429", "429_plain", "500", "502_html", "200_html", "slow", "truncated", "truncated_json", "drop",
          "418", "kraken_rate", "kraken_unavailable", "kraken_busy", "okx_busy")


@dataclass
class FaultPlan:
    """Which faults to inject: `rates` by probability per request, `script` for the next requests in order."""

    rates: dict[str, float] = field(default_factory=dict)
    script: deque = field(default_factory=deque)
    seed: int = 7
    retry_after_s: int = 1
    slow_s: float = 3.0
    served: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def pick(self) -> str | None:
        with self._lock:
            if self.script:
                kind = self.script.popleft()
            else:
                kind = None
                r = self._rng.random()
                for k, p in self.rates.items():
                    if r < p:
                        kind = k
                        break
                    r -= p
            if kind:
                self.served[kind] = self.served.get(kind, 0) + 1
            return kind


class _Bucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, float(burst), time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


_HTML = b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>cloudflare</center></body></html>"


class ExchangeSim:
    """A simulated exchange: books, faults, an optional server-side rate limit, and a request log.

    Subclasses speak one exchange's API: routes, cursors, headers, error
    bodies and rate-limit behaviour. They also say what a landed line is
    (`render`), where a trade sits in the cursor space (`cursor_of`) and
    what the table must hold for it (`truth`), so tests compare against
    ground truth computed here, not by the code under test.
    """

    exchange = ""

    def __init__(
        self,
        books: list[Book],
        *,
        faults: FaultPlan | None = None,
        rate_limit: tuple[float, int] | None = None,
        recorded: dict[str, tuple[int, list[tuple[str, str]], bytes]] | None = None,
        extra_products: list | None = None,
    ) -> None:
        self.books = {b.product_id: b for b in books}
        self.faults = faults or FaultPlan()
        self.bucket = _Bucket(*rate_limit) if rate_limit else None
        self.recorded = recorded or {}
        self.extra_products = extra_products or []
        self.requests: list[str] = []
        self.status_counts: dict[int, int] = {}
        self.server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------- per exchange
    def route(self, segs: list[str], q: dict, headers) -> tuple[int, dict, bytes] | None:
        raise NotImplementedError

    def rate_limited(self) -> tuple[int, dict, bytes]:
        return 429, {}, b'{"message":"Public rate limit exceeded"}'

    def special_fault(self, kind: str) -> tuple[int, dict, bytes] | None:
        """An exchange's own fault kinds; None for the shared ones."""
        return None

    def symbol(self, product_id: str) -> str:
        return product_id

    def render(self, book: Book, i: int) -> bytes:
        """The trade's bytes as landed (what the connector asks for)."""
        raise NotImplementedError

    def id_of(self, line: bytes) -> int:
        raise NotImplementedError

    def cursor_of(self, book: Book, i: int) -> int:
        """Where trade i sits in the connector's cursor space (its id, unless the cursor is a time)."""
        return i

    def truth(self, book: Book, i: int) -> dict:
        """The row the table must hold for trade i: trade_id, price, size (Decimal), taker side, time µs."""
        t, price, size, side = book.core(i)
        return {"trade_id": str(i), "price": Decimal(price), "size": Decimal(size), "side": side, "time_us": t}

    def expected_ids(self, book: Book, lo: int, hi: int) -> list[int]:
        """Trade ids whose cursor is in (lo, hi]."""
        return [i for i in range(book.first_id, book.head() + 1) if lo < self.cursor_of(book, i) <= hi]

    def book_for(self, symbol: str) -> Book | None:
        for b in self.books.values():
            if self.symbol(b.product_id) == symbol or b.product_id == symbol:
                return b
        return None

    # ------------------------------------------------------------- server
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        sim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict | None = None, ctype: str = "application/json; charset=utf-8") -> None:
                with sim._lock:
                    sim.status_counts[status] = sim.status_counts.get(status, 0) + 1
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self._write_all(body)

            def _write_all(self, body: bytes) -> None:
                # Headers and body in one write, as real servers do (no Nagle/delayed-ACK stalls).
                self._headers_buffer.append(b"\r\n")
                self.wfile.write(b"".join(self._headers_buffer) + body)
                self._headers_buffer = []

            def do_GET(self) -> None:
                sim.requests.append(self.path)
                if self.path in sim.recorded:
                    status, hdrs, body = sim.recorded[self.path]
                    self.send_response(status)
                    for k, v in hdrs:
                        if k.lower() not in ("connection", "content-length", "transfer-encoding"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self._write_all(body)
                    return
                parts = urlsplit(self.path)
                q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                segs = [s for s in parts.path.split("/") if s]
                answer = sim.route(segs, q, self.headers)
                if answer is None:
                    return self._send(404, b'{"message":"route not found"}')
                status, headers, body = answer
                if status == 200 and sim.bucket is not None and not sim.bucket.take():
                    return self._send(*_swap(sim.rate_limited()))
                fault = sim.faults.pick() if status == 200 else None
                if fault is None:
                    return self._send(status, body, headers)
                special = sim.special_fault(fault)
                if special is not None:
                    return self._send(*_swap(special))
                self._fault(fault, body, headers)

            def _fault(self, kind: str, body: bytes, headers: dict) -> None:
                f = sim.faults
                if kind == "429":
                    status, hdrs, body429 = sim.rate_limited()
                    self._send(status, body429, {**hdrs, "Retry-After": str(f.retry_after_s)})
                elif kind == "429_plain":
                    self._send(*_swap(sim.rate_limited()))
                elif kind == "500":
                    self._send(500, b'{"message":"Internal server error"}')
                elif kind == "502_html":
                    self._send(502, _HTML, ctype="text/html")
                elif kind == "200_html":
                    self._send(200, _HTML, ctype="text/html")
                elif kind == "slow":
                    time.sleep(f.slow_s)
                    self._send(200, body, headers)
                elif kind == "truncated":
                    # Promise the full length, send half, hang up.
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif kind == "truncated_json":
                    self._send(200, body[: max(1, len(body) // 3)], headers)
                elif kind == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                else:
                    self._send(500, b'{"message":"unknown fault"}')

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server((host, port), Handler)
        self._thread = threading.Thread(target=self.server.serve_forever, name=f"{self.exchange}-sim", daemon=True)
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self):
        if self.server is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _swap(answer: tuple[int, dict, bytes]) -> tuple[int, bytes, dict]:
    status, headers, body = answer
    return status, body, headers


def _compact(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _plain(text: str) -> str:
    """A decimal without trailing zeros, as OKX prints it."""
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _first_at_or_after(book: Book, t_us: int) -> int:
    """The first id whose time is >= t_us (head+1 if none); times grow with ids."""
    lo, hi = book.first_id, book.head() + 1
    while lo < hi:
        mid = (lo + hi) // 2
        if book.time_us(mid) < t_us:
            lo = mid + 1
        else:
            hi = mid
    return lo


# ---------------------------------------------------------------- Coinbase

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
        if before is not None and after is None:
            # Undocumented on its own: the connector must not rely on it, so answer the latest page.
            ids = book.ids(None, None, limit)
        else:
            ids = book.ids(before, after, limit)
        body = b"[" + b",".join(book.trade_bytes(i) for i in ids) + b"]"
        headers = {"cb-before": str(ids[0]), "cb-after": str(ids[-1])} if ids else {}
        return 200, headers, body

    def render(self, book: Book, i: int) -> bytes:
        return book.trade_bytes(i)

    def id_of(self, line: bytes) -> int:
        return int(json.loads(line)["trade_id"])


# ---------------------------------------------------------------- Binance

class BinanceSim(ExchangeSim):
    """Binance Spot: exchangeInfo, trades, historicalTrades (fromId, oldest first), aggTrades (startTime).

    Request weight is counted per calendar minute and reported in
    X-MBX-USED-WEIGHT-1M. Over the limit: 429 with Retry-After. A client
    that keeps sending while a Retry-After is pending (more than
    `ban_after` requests) is banned: 418 for `ban_s` seconds, every request.
    Times are ms, or µs with the header X-MBX-TIME-UNIT: MICROSECOND.
    """

    exchange = "binance"
    WEIGHTS = {"exchangeInfo": 20, "trades": 25, "historicalTrades": 25, "aggTrades": 4}

    def __init__(self, books, *, weight_limit: int = 6000, ban_after: int = 4, ban_s: float = 120.0, **kw) -> None:
        super().__init__(books, **kw)
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
            start = max(int(q["fromId"]), book.first_id)
            ids = range(start, min(head, start + limit - 1) + 1)
        else:  # the most recent trades
            ids = range(max(book.first_id, head - limit + 1), head + 1)
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
        return int(json.loads(line)["id"])


# ---------------------------------------------------------------- Kraken

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
        ids = self._after(book, since, count)
        rows = b",".join(self.render(book, i) for i in ids)
        last = str(self.cursor_of(book, ids[-1]) if ids else since)
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
        if isinstance(book, FixedBook):
            return [i for i in range(lo, book.head() + 1) if i in book.trades][:count]
        return list(range(lo, min(book.head(), lo + count - 1) + 1))

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


# ---------------------------------------------------------------- OKX

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
        ids = book.ids(before, after, limit)
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


SIMS = {s.exchange: s for s in (CoinbaseSim, BinanceSim, KrakenSim, OkxSim)}

DEMO_EPOCH = 1_793_491_200.0  # 2026-11-01T00:00:00Z


EXCHANGE_SEED = {"coinbase": 0, "binance": 1, "kraken": 2, "okx": 3}  # each exchange its own trades


def default_books(products: list[str] | None = None, *, initial: int = 20_000, live_per_s: float = 5.0,
                  epoch: float | None = None, exchange: str = "coinbase") -> list[Book]:
    """Realistic books: each product with its own seed and price, and each exchange its own trades.

    With `epoch`, trades have flowed at live_per_s since that moment, so the
    same id has the same content on every start and new ids keep arriving in
    real time: a restarted simulator behaves like the same exchange.
    """
    prices = {"BTC": 6_500_000, "ETH": 350_000, "SOL": 15_000}
    names = products or ["BTC-USD", "ETH-USD", "SOL-USD"]
    interval = int(1e6 / max(live_per_s, 1.0))
    anchored = dict(initial=0, t0=epoch, start_us=int(epoch * 1e6)) if epoch is not None else dict(initial=initial)
    ex = EXCHANGE_SEED.get(exchange, len(exchange))
    return [
        Book(p, first_id=10_000_000 * (k + 1) + 1_000_000_000 * ex, live_per_s=live_per_s, interval_us=interval,
             base_cents=prices.get(p.split("-")[0], 100_000) + 500 * ex, seed=k + 1 + 1000 * ex, **anchored)
        for k, p in enumerate(names)
    ]
