"""The simulator core: books of deterministic trades, fault plans and the HTTP server every exchange shares.

Loopback exchange simulators speaking the public trade APIs of Coinbase, Binance, Kraken and OKX.

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
        missing=(),
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
        # Ids the exchange never printed (a confirmed gap): no request ever serves them, and `truth` skips them.
        self.missing = frozenset(missing)

    def exists(self, i: int) -> bool:
        return self.first_id <= i <= self.head() and i not in self.missing

    def forward(self, start: int, limit: int) -> list[int]:
        """Up to limit existing ids from start on, oldest first (up to the head)."""
        head = self.head()
        start = max(start, self.first_id)
        if not self.missing:
            return list(range(start, min(head, start + limit - 1) + 1))
        out, i = [], start
        while i <= head and len(out) < limit:
            if i not in self.missing:
                out.append(i)
            i += 1
        return out

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
        if not self.missing:
            return list(range(top, max(bottom, top - limit + 1) - 1, -1))
        out, i = [], top
        while i >= bottom and len(out) < limit:
            if i not in self.missing:
                out.append(i)
            i -= 1
        return out


class FixedBook(Book):
    """A book replaying a fixed list of real trades (their exact bytes)."""

    def __init__(self, product_id: str, trades: dict[int, bytes], head: int | None = None, *,
                 cursors: dict[int, int] | None = None, times: dict[int, int] | None = None) -> None:
        self.product_id = product_id
        self.trades = trades
        self.first_id = min(trades)
        self._head = head if head is not None else max(trades)
        self.trade_bytes = trades.__getitem__
        self.missing = frozenset()
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

    def exists(self, i: int) -> bool:
        return i in self.trades and i <= self._head

    def forward(self, start: int, limit: int) -> list[int]:
        out = []
        for i in range(max(start, self.first_id), self._head + 1):
            if i in self.trades:
                out.append(i)
                if len(out) >= limit:
                    break
        return out


FAULTS = ("429", "429_plain", "500", "502_html", "200_html", "slow", "truncated", "truncated_json", "drop",
          "418", "kraken_rate", "kraken_unavailable", "kraken_busy", "okx_busy")

# Faults in what a well-formed page says (served with HTTP 200, in the exchange's own shape). They apply to the
# paging requests (a cursor or window in the query), not to the head request, the listing or helper endpoints:
#   empty        []: nothing, although the trades exist
#   hole         ids missing from the middle of the page (this answer only)
#   dup          one trade printed twice inside the page
#   dup_across   the page also repeats the last trade of the page before it (the id just below the range)
#   below        the page also holds the three trades below the range (ids going backwards past the cursor)
#   backwards    two neighbouring trades swapped (ids out of order)
#   misprint_cursor  Kraken: `last` a day ahead of the page's newest trade
PAGE_FAULTS = ("empty", "hole", "dup", "dup_across", "below", "backwards", "misprint_cursor")


@dataclass
class FaultPlan:
    """Which faults to inject: `rates` by probability per request, `script` for the next requests in order."""

    rates: dict[str, float] = field(default_factory=dict)
    script: deque = field(default_factory=deque)
    seed: int = 7
    retry_after_s: int = 1
    slow_s: float = 3.0
    served: dict[str, int] = field(default_factory=dict)
    # Page-content faults (PAGE_FAULTS): by probability per paging request, or scripted for the next ones
    # (None in a script serves that page as it should be).
    page_rates: dict[str, float] = field(default_factory=dict)
    page_script: deque = field(default_factory=deque)
    page_cap: int | None = None  # serve at most this many trades per page, whatever limit is asked for
    head_script: deque = field(default_factory=deque)  # "misprint": the next head answer's newest id is misprint_id
    misprint_id: int = 10**12

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
        unknown = (set(self.page_rates) | {k for k in self.page_script if k is not None}) - set(PAGE_FAULTS)
        if unknown:
            raise ValueError(f"unknown page faults {sorted(unknown)}; known: {PAGE_FAULTS}")
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def pick(self) -> str | None:
        """The next response fault: scripted first, else drawn by probability."""
        return self._draw(self.script, self.rates)

    def pick_page(self) -> str | None:
        """The next page-content fault: scripted first, else drawn by probability."""
        return self._draw(self.page_script, self.page_rates)

    def _draw(self, script, rates: dict) -> str | None:
        with self._lock:
            if script:
                kind = script.popleft()
            else:
                kind = None
                r = self._rng.random() if rates else 1.0
                for k, p in rates.items():
                    if r < p:
                        kind = k
                        break
                    r -= p
            if kind:
                self.served[kind] = self.served.get(kind, 0) + 1
            return kind

    def pick_head(self) -> str | None:
        with self._lock:
            kind = self.head_script.popleft() if self.head_script else None
            if kind:
                self.served["head_" + kind] = self.served.get("head_" + kind, 0) + 1
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


class LoopbackHandler(BaseHTTPRequestHandler):
    """A quiet HTTP/1.1 handler for loopback servers (the simulators, the tests' scripted servers): keep-alive like
    a real exchange, no Nagle delay on small answers, no access log."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args) -> None:
        pass


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
        """Trade ids whose cursor is in (lo, hi] (the ids the exchange never printed excluded)."""
        return [i for i in range(book.first_id, book.head() + 1)
                if lo < self.cursor_of(book, i) <= hi and i not in book.missing]

    # ------------------------------------------------------------- hostile pages
    def head_ids(self, ids: list[int]) -> list[int]:
        """The ids a head answer serves: a misprinted newest id when the plan says so."""
        if ids and self.faults.pick_head() == "misprint":
            return [self.faults.misprint_id] + ids[1:]
        return ids

    def hostile(self, book: Book, ids: list[int], *, newest_first: bool) -> tuple[list[int], str | None]:
        """The ids a paging request serves, after the plan's page cap and page faults (in the exchange's order)."""
        f = self.faults
        kind = f.pick_page()
        if kind == "empty":
            return [], kind
        if f.page_cap is not None:
            ids = ids[: f.page_cap]
        ids = list(ids)
        n = len(ids)
        if kind == "hole" and n >= 3:
            k = n // 3
            del ids[k:k + max(1, n // 10)]
        elif kind == "dup" and n:
            ids.insert(n // 2, ids[n // 2])
        elif kind in ("dup_across", "below") and n:
            low = min(ids)
            extra = [i for i in range(low - (1 if kind == "dup_across" else 3), low) if book.exists(i)]
            ids = ids + extra[::-1] if newest_first else extra + ids
        elif kind == "backwards" and n >= 2:
            k = n // 2
            ids[k - 1], ids[k] = ids[k], ids[k - 1]
        return ids, kind

    def book_for(self, symbol: str) -> Book | None:
        for b in self.books.values():
            if self.symbol(b.product_id) == symbol or b.product_id == symbol:
                return b
        return None

    # ------------------------------------------------------------- server
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        sim = self

        class Handler(LoopbackHandler):
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


