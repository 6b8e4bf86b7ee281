"""A scripted HTTP server on loopback: every request is answered from a script, however hostile.

The exchange simulators (schemahub.sim) model how exchanges behave; this server
models how any HTTP peer can misbehave, one answer at a time: any status and
headers (a `Retry-After: inf`), a body that drips a byte at a time, a body far
larger than promised or than anyone should accept, a hang-up mid-body. Tests
script answers per path (or for every path) and read back what was asked and
how much of each answer the client really took.

    with ScriptedServer() as srv:
        srv.script("/trades", Answer(429, {"Retry-After": "86400"}), Answer(200, body=b"[]"))
        ... client.get(srv.url + "/trades") ...
        assert [s.path for s in srv.seen] == ["/trades"]
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from schemahub.sim.base import LoopbackHandler


@dataclass(frozen=True)
class Answer:
    """One scripted answer.

    status, headers, body: what is sent (Content-Type defaults to JSON).
    length: "declared" sends Content-Length of the body (or `content_length` if
        given, which may lie), "chunked" uses chunked transfer encoding, "close"
        sends no length and ends the body by closing the connection.
    drip_s, drip_bytes: send the body `drip_bytes` at a time, `drip_s` apart.
    stream_bytes: instead of `body`, stream this many bytes (`body` repeated).
    delay_s: wait before sending anything (headers included).
    header_drip_s: send the status line and headers one byte at a time, this far apart.
    hang_up_after: close the connection after this many body bytes.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"[]"
    length: str = "declared"
    content_length: int | None = None
    drip_s: float = 0.0
    drip_bytes: int = 1
    stream_bytes: int = 0
    delay_s: float = 0.0
    header_drip_s: float = 0.0
    hang_up_after: int | None = None


@dataclass
class Seen:
    """One request as the server saw it, and what became of its answer."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    answer: Answer | None = None
    sent: int = 0  # body bytes written
    finished: bool = False  # the whole answer was written
    head_sent: int = 0  # bytes of the status line and headers written (with header_drip_s)
    head_total: int = 0  # bytes the status line and headers have in all
    done: threading.Event = field(default_factory=threading.Event)  # the handler is through with this request
    aborted: bool = False  # the client hung up before the end


NOT_SCRIPTED = Answer(404, body=b'{"message":"not scripted"}')


class ScriptedServer:
    """A ThreadingHTTPServer on 127.0.0.1:0 answering from per-path queues of Answers.

    script(path, *answers): answers for requests to that path (without the query), in order;
    path "*" serves any path without a queue of its own. When a queue runs dry its
    last answer repeats if `repeat_last` is set, else `default` is served.
    responder: alternatively, a function (Seen) -> Answer deciding every answer.
    """

    def __init__(self, *, default: Answer = NOT_SCRIPTED, repeat_last: bool = False,
                 responder: Callable[[Seen], Answer] | None = None) -> None:
        self.default = default
        self.repeat_last = repeat_last
        self.responder = responder
        self.seen: list[Seen] = []
        self._queues: dict[str, deque[Answer]] = {}
        self._last: dict[str, Answer] = {}
        self._lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------ scripting

    def script(self, path: str, *answers: Answer) -> ScriptedServer:
        with self._lock:
            self._queues.setdefault(path, deque()).extend(answers)
        return self

    def requests_to(self, path: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path == path]

    def _answer(self, seen: Seen) -> Answer:
        if self.responder is not None:
            return self.responder(seen)
        with self._lock:
            for key in (seen.path, "*"):
                q = self._queues.get(key)
                if q is None:
                    continue
                if q:
                    self._last[key] = q.popleft()
                    return self._last[key]
                if self.repeat_last and key in self._last:
                    return self._last[key]
            return self.default

    # ------------------------------------------------------------ serving

    def start(self) -> str:
        srv = self

        class Handler(LoopbackHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                seen = Seen(parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}, dict(self.headers))
                with srv._lock:
                    srv.seen.append(seen)
                a = seen.answer = srv._answer(seen)
                try:
                    seen.finished = self._serve(a, seen)
                except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout):
                    seen.aborted = True
                    self.close_connection = True
                finally:
                    seen.done.set()

            def _serve(self, a: Answer, seen: Seen) -> bool:
                if a.delay_s:
                    time.sleep(a.delay_s)
                total = a.stream_bytes or len(a.body)
                self.send_response(a.status)
                headers = {"Content-Type": "application/json; charset=utf-8", **a.headers}
                for k, v in headers.items():
                    self.send_header(k, v)
                if a.length == "declared":
                    self.send_header("Content-Length", str(total if a.content_length is None else a.content_length))
                elif a.length == "chunked":
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                if a.header_drip_s:
                    head = b"".join(self._headers_buffer) + b"\r\n"
                    self._headers_buffer = []
                    seen.head_total = len(head)
                    for i in range(len(head)):
                        self.wfile.write(head[i:i + 1])
                        self.wfile.flush()
                        seen.head_sent += 1
                        time.sleep(a.header_drip_s)
                else:
                    self.end_headers()
                step = a.drip_bytes if a.drip_s else 1 << 16
                for piece in _pieces(a.body, total, step):
                    if a.hang_up_after is not None and seen.sent + len(piece) > a.hang_up_after:
                        piece = piece[: a.hang_up_after - seen.sent]
                        self._write(piece, a, seen)
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return False
                    self._write(piece, a, seen)
                    if a.drip_s:
                        time.sleep(a.drip_s)
                if a.length == "chunked":
                    self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                return True

            def _write(self, piece: bytes, a: Answer, seen: Seen) -> None:
                if not piece:
                    return
                if a.length == "chunked":
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                else:
                    self.wfile.write(piece)
                self.wfile.flush()
                seen.sent += len(piece)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request, client_address) -> None:
                pass  # a client hanging up mid-answer is the point of most scripts

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, name="scripted-http", daemon=True).start()
        return self.url

    @property
    def url(self) -> str:
        assert self.server is not None, "start() the server first"
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> ScriptedServer:
        if self.server is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _pieces(body: bytes, total: int, step: int):
    """`total` bytes, `step` at a time: the body, then (for a streamed answer) filler repeating it."""
    if total <= len(body):
        for i in range(0, total, step):
            yield body[i:i + step]
        return
    unit = (body or b" ") * (step // max(1, len(body)) + 1)
    sent = 0
    while sent < total:
        n = min(step, total - sent)
        yield unit[:n]
        sent += n
