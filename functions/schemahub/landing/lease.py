"""A product's lease: saves duplicate work between concurrent runs (correctness does not depend on it)."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import uuid

from schemahub.clock import Clock
from schemahub.errors import LeaseHeld, NotFound, PreconditionFailed
from schemahub.layout import lease_key
from schemahub.store.base import ObjectStore

log = logging.getLogger("schemahub.landing")


def _parse(data: bytes) -> dict | None:
    """A lease document with a numeric expires_at, or None if it is not one."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    exp = doc.get("expires_at")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)) or not math.isfinite(exp):
        return None
    return doc


class Lease:
    """A product's lease: a conditional write with an expiry, renewed as the run goes."""

    def __init__(self, store: ObjectStore, exchange: str, product_id: str, ttl_s: float, clock: Clock) -> None:
        self.store = store
        self.key = lease_key(exchange, product_id)
        self.ttl_s = ttl_s
        self.clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.etag: str | None = None
        self.renewed_at = 0.0

    def _doc(self, expires_at: float) -> bytes:
        return json.dumps(
            {"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(), "expires_at": expires_at}
        ).encode()

    def acquire(self) -> None:
        """Take the lease or raise LeaseHeld naming the holder."""
        doc = self._doc(self.clock.time() + self.ttl_s)
        try:
            self.etag = self.store.put(self.key, doc, if_none_match=True)
        except PreconditionFailed:
            try:
                cur = self.store.get(self.key)
            except NotFound:
                return self.acquire()
            held = _parse(cur.data)
            if held is None:
                # Unreadable (a torn write by another tool, a hand edit): the lease only saves work, so take it over.
                log.warning("lease %s is unreadable; taking it over", self.key)
                held = {}
            if not self._stale(held):
                raise LeaseHeld(
                    f"lease {self.key} is held by {held.get('owner')} for {held['expires_at'] - self.clock.time():.0f}s more"
                ) from None
            try:
                self.etag = self.store.put(self.key, doc, if_match=cur.etag)
            except PreconditionFailed:
                raise LeaseHeld(f"lease {self.key} was taken by another run just now") from None
        self.renewed_at = self.clock.monotonic()

    def _stale(self, held: dict) -> bool:
        if held.get("expires_at", 0) <= self.clock.time():
            return True
        # A holder on this machine whose process is gone cannot be running: take over now.
        if held.get("host") == socket.gethostname() and isinstance(held.get("pid"), int):
            try:
                os.kill(held["pid"], 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        return False

    def renew_if_due(self) -> None:
        if self.clock.monotonic() - self.renewed_at < self.ttl_s / 3:
            return
        try:
            self.etag = self.store.put(self.key, self._doc(self.clock.time() + self.ttl_s), if_match=self.etag)
        except PreconditionFailed:
            raise LeaseHeld(f"lease {self.key} was lost (expired and taken over); stopping this product") from None
        self.renewed_at = self.clock.monotonic()

    def release(self) -> None:
        if self.etag is None:
            return
        try:
            self.store.put(self.key, self._doc(0.0), if_match=self.etag)
        except PreconditionFailed:
            pass
        self.etag = None


