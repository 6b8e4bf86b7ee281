"""Checkpoints: the landed cursor range of a product, changed only by create-only and compare-and-swap writes."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from schemahub.errors import NotFound, PreconditionFailed, SchemahubError
from schemahub.layout import checkpoint_key
from schemahub.store.base import ObjectStore


def iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Checkpoint:
    """Landed range (lo, hi] of cursors, plus an in-progress backfill (target, cursor]."""

    exchange: str
    product_id: str
    lo: int
    hi: int
    backfill_target: int | None = None
    backfill_cursor: int | None = None
    etag: str = ""

    def to_json(self) -> bytes:
        doc = {
            "exchange": self.exchange,
            "product_id": self.product_id,
            "lo": str(self.lo),
            "hi": str(self.hi),
            "backfill": None
            if self.backfill_target is None
            else {"target": str(self.backfill_target), "cursor": str(self.backfill_cursor)},
            "updated_at": iso(datetime.now(timezone.utc)),
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, etag: str) -> Checkpoint:
        d = json.loads(data)
        bf = d.get("backfill")
        return cls(
            d["exchange"], d["product_id"], int(d["lo"]), int(d["hi"]),
            int(bf["target"]) if bf else None, int(bf["cursor"]) if bf else None, etag,
        )


class Checkpoints:
    """Checkpoint objects, changed only by create-only and compare-and-swap writes."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def load(self, exchange: str, product_id: str) -> Checkpoint | None:
        try:
            obj = self.store.get(checkpoint_key(exchange, product_id))
        except NotFound:
            return None
        return Checkpoint.from_json(obj.data, obj.etag)

    def create(self, cp: Checkpoint) -> Checkpoint:
        """Create the first checkpoint; if another run won the race, return theirs."""
        key = checkpoint_key(cp.exchange, cp.product_id)
        try:
            etag = self.store.put(key, cp.to_json(), if_none_match=True)
        except PreconditionFailed:
            current = self.load(cp.exchange, cp.product_id)
            assert current is not None
            return current
        return replace(cp, etag=etag)

    def update(self, cp: Checkpoint, change) -> Checkpoint:
        """Apply change(current) -> new|None by compare-and-swap, re-reading on conflict.

        change returns None when the current state already includes the change
        (another run got there first); nothing is written then.
        """
        while True:
            new = change(cp)
            if new is None:
                return cp
            if new.hi < cp.hi or new.lo > cp.lo:
                raise SchemahubError(f"refusing to move checkpoint of {cp.exchange}/{cp.product_id} backward: {cp} -> {new}")
            try:
                etag = self.store.put(checkpoint_key(cp.exchange, cp.product_id), new.to_json(), if_match=cp.etag)
                return replace(new, etag=etag)
            except PreconditionFailed:
                fresh = self.load(cp.exchange, cp.product_id)
                assert fresh is not None
                cp = fresh


