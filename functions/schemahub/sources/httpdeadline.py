"""A whole-request deadline that also bounds the status line and headers, not only the body.

urllib3 applies the read timeout to each socket read. The body is read in
bounded chunks by HttpClient, which shortens each read to what the request
has left; but http.client reads the status line and headers itself, so a
server that sends one header byte just inside each read timeout (or never
ends its headers) could hold a request forever.

This module gives the pools HttpClient uses a connection whose response reads
through a socket reader that, before every read, shortens the socket timeout
to what the request has left, and refuses to read once it is over (a
`socket.timeout`, which urllib3 reports as a read timeout). The deadline is
the one `HttpClient._fetch` computes (its own, or the run's when sooner) and
passes in with `request_deadline(clock, until)` around the request.
"""

from __future__ import annotations

import http.client
import io
import socket
import threading
from contextlib import contextmanager

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_current = threading.local()  # (clock, until) of the request this thread is sending


@contextmanager
def request_deadline(clock, until: float):
    """Every response read by this thread inside the block stops at clock.monotonic() >= until."""
    old = getattr(_current, "value", None)
    _current.value = (clock, until)
    try:
        yield
    finally:
        _current.value = old


class _DeadlineRaw(socket.SocketIO):
    """socket.SocketIO's reading half, with the socket timeout cut to what the request has left.

    A SocketIO (not a bare RawIOBase) so that the socket counts this reader as a user: urllib3 closing a
    connection that http.client still reads (HTTP/1.0, `Connection: close`) then leaves the descriptor open
    until the reader is closed, exactly as with socket.makefile."""

    def __init__(self, sock: socket.socket, clock, until: float) -> None:
        super().__init__(sock, "rb")
        sock._io_refs += 1  # what socket.makefile does; SocketIO.close() gives it back (_decref_socketios)
        self._clock, self._until = clock, until
        self._read_s = sock.gettimeout()  # urllib3 has just set the read timeout

    def readinto(self, b) -> int:
        left = self._until - self._clock.monotonic()
        if left <= 0:
            raise socket.timeout("the whole request's deadline has passed")
        self._sock.settimeout(left if self._read_s is None else min(self._read_s, left))
        return super().readinto(b)


class _DeadlineSock:
    """What http.client.HTTPResponse needs of a socket (makefile), reading through _DeadlineRaw."""

    def __init__(self, sock: socket.socket, clock, until: float) -> None:
        self._sock, self._clock, self._until = sock, clock, until

    def makefile(self, mode: str = "rb", *args, **kwargs):
        return io.BufferedReader(_DeadlineRaw(self._sock, self._clock, self._until))


class _DeadlineResponse(http.client.HTTPResponse):
    def __init__(self, sock, *args, **kwargs) -> None:
        current = getattr(_current, "value", None)
        if current is not None:
            sock = _DeadlineSock(sock, *current)
        super().__init__(sock, *args, **kwargs)


class _Conn(HTTPConnection):
    response_class = _DeadlineResponse


class _TlsConn(HTTPSConnection):
    response_class = _DeadlineResponse


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Conn


class _TlsPool(HTTPSConnectionPool):
    ConnectionCls = _TlsConn


def install(pool) -> None:
    """Make a PoolManager's new pools use the deadline-bounded connections (other pools are left as they are)."""
    if isinstance(pool, urllib3.PoolManager) and not isinstance(pool, urllib3.ProxyManager):
        pool.pool_classes_by_scheme = {"http": _Pool, "https": _TlsPool}
