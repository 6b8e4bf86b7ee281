"""Checkpoints: the landed cursor range of a product, changed only by create-only and compare-and-swap writes.

A checkpoint read back from the store is checked before it is trusted: it must
be a JSON object of the right product with `lo <= hi` (and a backfill inside
`target <= cursor <= lo`). Whether `lo` and `hi` are boundaries of the raw
chain is checked against the store by the lander (see `lander.py`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from schemahub.errors import InvalidCheckpoint, NotFound, PreconditionFailed, SchemahubError
from schemahub.layout import checkpoint_key
from schemahub.store.base import ObjectStore


def iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def repair_hint(exchange: str, product_id: str) -> str:
    return (f"rebuild it from the raw chain with `schemahub repair-checkpoint --exchange {exchange} "
            f"--product {product_id} --dry-run` (then without --dry-run)")


@dataclass(frozen=True)
class Checkpoint:
    """Landed range (lo, hi] of cursors, plus an in-progress backfill (target, cursor].

    `last` is the start of the raw object that ends at `hi` (None while the chain
    is empty, or in a checkpoint written before it was recorded), so one header
    read proves `hi` is an object boundary; `backfill_last` is the same for the
    backfill cursor. `started` says an object is being or has been landed on this
    chain (its start is then fixed). `backfill_next` is an earlier target asked
    for while a backfill was in progress: it starts when that one completes.
    """

    exchange: str
    product_id: str
    lo: int
    hi: int
    backfill_target: int | None = None
    backfill_cursor: int | None = None
    etag: str = ""
    last: int | None = None
    backfill_last: int | None = None
    started: bool = False
    backfill_next: int | None = None

    def to_json(self) -> bytes:
        doc = {
            "exchange": self.exchange,
            "product_id": self.product_id,
            "lo": str(self.lo),
            "hi": str(self.hi),
            "last": None if self.last is None else str(self.last),
            "started": self.started,
            "backfill": None
            if self.backfill_target is None
            else {"target": str(self.backfill_target), "cursor": str(self.backfill_cursor),
                  "last": None if self.backfill_last is None else str(self.backfill_last)},
            "backfill_next": None if self.backfill_next is None else str(self.backfill_next),
            "updated_at": iso(datetime.now(timezone.utc)),
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, etag: str, key: str = "checkpoint") -> Checkpoint:
        """Parse and check a checkpoint; raise InvalidCheckpoint naming the key and what is wrong."""
        try:
            d = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidCheckpoint(key, f"not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise InvalidCheckpoint(key, f"not a JSON object but {type(d).__name__}")

        def cursor(doc: dict, name: str, where: str = "", optional: bool = False) -> int | None:
            v = doc.get(name)
            if v is None and optional:
                return None
            if isinstance(v, bool) or not isinstance(v, (str, int)) or not str(v).isdigit():
                raise InvalidCheckpoint(key, f"{where}{name} is {v!r}, not a non-negative integer cursor")
            return int(v)

        for name in ("exchange", "product_id"):
            if not isinstance(d.get(name), str):
                raise InvalidCheckpoint(key, f"{name} is missing or not a string")
        lo, hi, last = cursor(d, "lo"), cursor(d, "hi"), cursor(d, "last", optional=True)
        if hi < lo:
            raise InvalidCheckpoint(key, f"hi {hi} is below lo {lo}")
        if last is not None and not lo <= last < hi:
            raise InvalidCheckpoint(key, f"last {last} is not inside (lo {lo}, hi {hi}]")
        bf = d.get("backfill")
        target = bcur = blast = None
        if bf is not None:
            if not isinstance(bf, dict):
                raise InvalidCheckpoint(key, f"backfill is {bf!r}, not an object")
            target, bcur = cursor(bf, "target", "backfill."), cursor(bf, "cursor", "backfill.")
            blast = cursor(bf, "last", "backfill.", optional=True)
            if not target <= bcur <= lo:
                raise InvalidCheckpoint(key, f"backfill target {target} <= cursor {bcur} <= lo {lo} does not hold")
            if blast is not None and not target <= blast < bcur:
                raise InvalidCheckpoint(key, f"backfill.last {blast} is not inside (target {target}, cursor {bcur}]")
        nxt = cursor(d, "backfill_next", optional=True)
        if nxt is not None and (target is None or nxt >= target):
            raise InvalidCheckpoint(key, f"backfill_next {nxt} is not below an in-progress backfill's target")
        started = d.get("started", hi > lo or bf is not None)
        if not isinstance(started, bool):
            raise InvalidCheckpoint(key, f"started is {started!r}, not true or false")
        return cls(str(d["exchange"]), str(d["product_id"]), lo, hi, target, bcur, etag, last, blast,
                   started or hi > lo, nxt)


class Checkpoints:
    """Checkpoint objects, changed only by create-only and compare-and-swap writes."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def load(self, exchange: str, product_id: str) -> Checkpoint | None:
        """The product's checkpoint, or None; InvalidCheckpoint if it is unreadable or not this product's."""
        key = checkpoint_key(exchange, product_id)
        try:
            obj = self.store.get(key)
        except NotFound:
            return None
        try:
            cp = Checkpoint.from_json(obj.data, obj.etag, key)
            if (cp.exchange, cp.product_id) != (exchange, product_id):
                raise InvalidCheckpoint(key, f"holds {cp.exchange}/{cp.product_id}, not {exchange}/{product_id}")
        except InvalidCheckpoint as e:
            raise InvalidCheckpoint(key, f"{e.reason}; {repair_hint(exchange, product_id)}") from None
        return cp

    def reload(self, exchange: str, product_id: str) -> Checkpoint:
        current = self.load(exchange, product_id)
        if current is None:
            raise SchemahubError(f"{checkpoint_key(exchange, product_id)} disappeared while this run used it; "
                                 "another process deleted it: stopping this product")
        return current

    def create(self, cp: Checkpoint) -> Checkpoint:
        """Create the first checkpoint; if another run won the race, return theirs."""
        key = checkpoint_key(cp.exchange, cp.product_id)
        try:
            etag = self.store.put(key, cp.to_json(), if_none_match=True)
        except PreconditionFailed:
            return self.reload(cp.exchange, cp.product_id)
        return replace(cp, etag=etag)

    def update(self, cp: Checkpoint, change, *, backward: bool = False) -> Checkpoint:
        """Apply change(current) -> new|None by compare-and-swap, re-reading on conflict.

        change returns None when the current state already includes the change
        (another run got there first); nothing is written then. Only `backward`
        changes (a rebase of an empty chain, see Lander) may lower hi or raise lo.
        """
        while True:
            new = change(cp)
            if new is None:
                return cp
            if not backward and (new.hi < cp.hi or new.lo > cp.lo):
                raise SchemahubError(f"refusing to move checkpoint of {cp.exchange}/{cp.product_id} backward: {cp} -> {new}")
            try:
                etag = self.store.put(checkpoint_key(cp.exchange, cp.product_id), new.to_json(), if_match=cp.etag)
                return replace(new, etag=etag)
            except PreconditionFailed:
                cp = self.reload(cp.exchange, cp.product_id)

    def replace(self, cp: Checkpoint | None, new: Checkpoint) -> Checkpoint:
        """Write `new` over exactly the checkpoint `cp` that was read (create-only if there was none)."""
        key = checkpoint_key(new.exchange, new.product_id)
        if cp is None:
            etag = self.store.put(key, new.to_json(), if_none_match=True)
        else:
            etag = self.store.put(key, new.to_json(), if_match=cp.etag)
        return replace(new, etag=etag)
