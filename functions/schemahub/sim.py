"""Loopback exchange simulator speaking the Coinbase Exchange public API.

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

    def ids(self, lo_excl: int | None, hi_excl: int | None, limit: int) -> list[int]:
        """Ids in (lo_excl, hi_excl), newest first, at most limit."""
        top = self.head() if hi_excl is None else min(self.head(), hi_excl - 1)
        bottom = self.first_id if lo_excl is None else max(self.first_id, lo_excl + 1)
        if top < bottom:
            return []
        return list(range(top, max(bottom, top - limit + 1) - 1, -1))


class FixedBook(Book):
    """A book replaying a fixed list of real trades (their exact bytes)."""

    def __init__(self, product_id: str, trades: dict[int, bytes], head: int | None = None) -> None:
        self.product_id = product_id
        self.trades = trades
        self.first_id = min(trades)
        self._head = head if head is not None else max(trades)
        self.trade_bytes = trades.__getitem__

    def head(self) -> int:
        return self._head

    def set_head(self, head: int) -> None:
        self._head = head

    def ids(self, lo_excl, hi_excl, limit):
        return [i for i in super().ids(lo_excl, hi_excl, limit) if i in self.trades]


FAULTS = ("429", "429_plain", "500", "502_html", "200_html", "slow", "truncated", "truncated_json", "drop")


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


class CoinbaseSim:
    """The simulated exchange: books, faults, an optional server-side rate limit, and a request log."""

    def __init__(
        self,
        books: list[Book],
        *,
        faults: FaultPlan | None = None,
        rate_limit: tuple[float, int] | None = None,
        recorded: dict[str, tuple[int, list[tuple[str, str]], bytes]] | None = None,
        extra_products: list[dict] | None = None,
    ) -> None:
        self.books = {b.product_id: b for b in books}
        self.faults = faults or FaultPlan()
        self.bucket = _Bucket(*rate_limit) if rate_limit else None
        self.recorded = recorded or {}
        self.extra_products = extra_products or []
        self.requests: list[str] = []
        self.server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------- API logic
    def products_body(self) -> bytes:
        out = []
        for pid in sorted(self.books):
            base, quote = pid.split("-")
            out.append({"id": pid, "base_currency": base, "quote_currency": quote, "quote_increment": "0.01",
                        "base_increment": "0.00000001", "display_name": f"{base}/{quote}", "status": "online",
                        "trading_disabled": False, "cancel_only": False, "post_only": False, "limit_only": False})
        out.extend(self.extra_products)
        return json.dumps(out, separators=(",", ":")).encode()

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
                if segs == ["products"]:
                    status, headers, body = 200, {}, sim.products_body()
                elif len(segs) == 3 and segs[0] == "products" and segs[2] == "trades":
                    book = sim.books.get(segs[1])
                    if book is None:
                        return self._send(404, b'{"message":"NotFound"}')
                    status, headers, body = sim.trades_response(book, q)
                else:
                    return self._send(404, b'{"message":"route not found"}')
                if sim.bucket is not None and not sim.bucket.take():
                    return self._send(429, b'{"message":"Public rate limit exceeded"}')
                fault = sim.faults.pick() if status == 200 else None
                if fault is None:
                    return self._send(status, body, headers)
                self._fault(fault, body, headers)

            def _fault(self, kind: str, body: bytes, headers: dict) -> None:
                f = sim.faults
                if kind == "429":
                    self._send(429, b'{"message":"Public rate limit exceeded"}', {"Retry-After": str(f.retry_after_s)})
                elif kind == "429_plain":
                    self._send(429, b'{"message":"Public rate limit exceeded"}')
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

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server((host, port), Handler)
        self._thread = threading.Thread(target=self.server.serve_forever, name="coinbase-sim", daemon=True)
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

    def __enter__(self) -> CoinbaseSim:
        if self.server is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


DEMO_EPOCH = 1_793_491_200.0  # 2026-11-01T00:00:00Z


def default_books(products: list[str] | None = None, *, initial: int = 20_000, live_per_s: float = 5.0,
                  epoch: float | None = None) -> list[Book]:
    """Realistic books: BTC, ETH and SOL against USD, each with its own seed and price.

    With `epoch`, trades have flowed at live_per_s since that moment, so the
    same id has the same content on every start and new ids keep arriving in
    real time: a restarted simulator behaves like the same exchange.
    """
    prices = {"BTC-USD": 6_500_000, "ETH-USD": 350_000, "SOL-USD": 15_000, "BTC-USDT": 6_500_500}
    names = products or ["BTC-USD", "ETH-USD", "SOL-USD"]
    interval = int(1e6 / max(live_per_s, 1.0))
    anchored = dict(initial=0, t0=epoch, start_us=int(epoch * 1e6)) if epoch is not None else dict(initial=initial)
    return [
        Book(p, first_id=10_000_000 * (k + 1), live_per_s=live_per_s, interval_us=interval,
             base_cents=prices.get(p, 100_000), seed=k + 1, **anchored)
        for k, p in enumerate(names)
    ]
