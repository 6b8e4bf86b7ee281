"""`schemahub serve`: the live status page and its JSON, on 127.0.0.1, with the standard library's HTTP server.

Routes:
    /                  the page (static/index.html, app.js, style.css: no CDN, works offline)
    /api/stats         per exchange and product: rows, first/last trade, freshness, bytes, quarantined; totals
    /api/coverage      rows per product and UTC day, with holes
    /api/candles       ?exchange=&product=&interval=1m|5m|15m|1h|4h|1d&start=&end=  OHLCV bars

Each request runs on its own thread with its own DuckDB connection (status.py).

The server binds 127.0.0.1 only, and answers only requests whose Host header names it there: 127.0.0.1:PORT,
localhost:PORT or [::1]:PORT. Anything else gets 421: a page elsewhere whose name was made to resolve to 127.0.0.1
(DNS rebinding) cannot read the lake through a visitor's browser.
"""

from __future__ import annotations

import errno
import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from schemahub.clock import SYSTEM_CLOCK, Clock
from schemahub.errors import SchemahubError, StoreError, UsageError
from schemahub.store.base import ObjectStore
from schemahub.web import status

log = logging.getLogger("schemahub.web")

_HTML = "text/html; charset=utf-8"
_STATIC = {"/": ("index.html", _HTML), "/index.html": ("index.html", _HTML),
           "/app.js": ("app.js", "text/javascript; charset=utf-8"),
           "/style.css": ("style.css", "text/css; charset=utf-8")}
# The page loads nothing from anywhere else: a stray CDN link would fail loudly, offline or not.
_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'"


def static_file(name: str) -> bytes:
    return resources.files("schemahub.web").joinpath("static", name).read_bytes()


class StatusServer:
    """The page and its JSON for one store. start() serves on a thread; serve_forever() in the caller's."""

    def __init__(self, store: ObjectStore, *, host: str = "127.0.0.1", port: int = 8000, clock: Clock = SYSTEM_CLOCK,
                 fresh_s: float = status.FRESH_S, stale_s: float = status.STALE_S) -> None:
        if not 0 < fresh_s <= stale_s:
            raise UsageError(f"--fresh {fresh_s:g} and --stale {stale_s:g}: need 0 < fresh <= stale (seconds)")
        self.store, self.clock, self.fresh_s, self.stale_s = store, clock, fresh_s, stale_s
        try:
            self.httpd = ThreadingHTTPServer((host, port), self._handler())
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise UsageError(f"port {port} on {host} is already in use: pass --port N (0 picks a free one)") \
                    from None
            if e.errno in (errno.EACCES, errno.EPERM):
                raise UsageError(f"port {port} on {host}: not allowed to listen there (ports below 1024 need "
                                 "privileges): pass --port N above 1023 (0 picks a free one)") from None
            raise
        bound = self.httpd.server_address[1]
        self.hosts = {f"127.0.0.1:{bound}", f"localhost:{bound}", f"[::1]:{bound}"}
        if bound == 80:  # a browser leaves the default port out
            self.hosts |= {"127.0.0.1", "localhost", "[::1]"}
        self._hosts_text = f"127.0.0.1:{bound}, localhost:{bound} or [::1]:{bound}"
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> str:
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="schemahub-web", daemon=True)
        self._thread.start()
        return self.url

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join()

    def __enter__(self) -> StatusServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ routes

    def api(self, path: str, query: dict[str, str]) -> dict:
        if path == "/api/stats":
            return status.stats_payload(self.store, self.clock.now(), fresh_s=self.fresh_s, stale_s=self.stale_s)
        if path == "/api/coverage":
            return status.coverage_payload(self.store)
        if path == "/api/candles":
            return status.candles_payload(self.store, exchange=query.get("exchange"), product=query.get("product"),
                                          interval=query.get("interval"), start=query.get("start"),
                                          end=query.get("end"))
        raise KeyError(path)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "schemahub"

            def do_GET(self) -> None:
                host = self.headers.get("Host")
                if host is None:
                    return self._json(HTTPStatus.BAD_REQUEST, {"error": "no Host header: ask for "
                                                                        f"{server.url}"})
                if host.strip().lower() not in server.hosts:
                    return self._json(HTTPStatus.MISDIRECTED_REQUEST, {"error": "this server answers requests for "
                                      f"{server._hosts_text}, not {host!r}"})
                url = urlsplit(self.path)
                if url.path in _STATIC:
                    name, ctype = _STATIC[url.path]
                    return self._send(HTTPStatus.OK, static_file(name), ctype)
                if not url.path.startswith("/api/"):
                    return self._json(HTTPStatus.NOT_FOUND, {"error": f"no page at {url.path}"})
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                try:
                    return self._json(HTTPStatus.OK, server.api(url.path, query))
                except KeyError:
                    return self._json(HTTPStatus.NOT_FOUND, {"error": f"no endpoint {url.path}: try /api/stats, "
                                                                      "/api/coverage or /api/candles"})
                except UsageError as e:
                    return self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
                except (StoreError, OSError) as e:
                    log.warning("%s: %s", url.path, e)
                    return self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"{server.store.uri}: {e}"})
                except (SchemahubError, ValueError) as e:
                    log.warning("%s: %s", url.path, e)
                    return self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(e).splitlines()[0]})
                except Exception as e:  # the page keeps polling and shows the line; the server stays up
                    log.exception("%s failed", url.path)
                    return self._json(HTTPStatus.INTERNAL_SERVER_ERROR,
                                      {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})

            def _json(self, code: HTTPStatus, doc: dict) -> None:
                self._send(code, json.dumps(doc, separators=(",", ":")).encode(), "application/json")

            def _send(self, code: HTTPStatus, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Security-Policy", _CSP)
                self.send_header("X-Content-Type-Options", "nosniff")
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the browser left (page reload): nothing to tell it

            def log_message(self, fmt: str, *args) -> None:
                log.debug("%s " + fmt, self.address_string(), *args)

        return Handler
