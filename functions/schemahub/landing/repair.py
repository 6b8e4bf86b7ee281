"""Rebuild a product's checkpoint from its raw chain: the documented repair for a refused checkpoint.

The raw objects are the truth: each covers (start, end] and sits at key(start).
Walking them in key order and following start -> end gives the landed range.
One unbroken run of objects is a plain chain (lo, hi]; two runs are read as a
backfill in progress (target, cursor] below (lo, hi]. Anything else (an
overlap, more gaps, a damaged object) is refused with what was found, since no
checkpoint could describe it without losing or duplicating trades.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from schemahub import rawobject
from schemahub.clock import SYSTEM_CLOCK, Clock
from schemahub.errors import ChainBroken, DamagedObject, NotFound
from schemahub.landing.checkpoint import Checkpoint, Checkpoints
from schemahub.landing.lease import Lease
from schemahub.layout import checkpoint_key, parse_amendment_key, parse_raw_key, raw_prefix
from schemahub.store.base import ObjectStore


@dataclass
class _Run:
    start: int
    end: int
    last: int
    objects: int = 0
    trades: int = 0


@dataclass
class Repair:
    """What repair-checkpoint found and did (or, with --dry-run, would do)."""

    key: str
    before: str | None  # the stored checkpoint's text, if any
    after: Checkpoint | None  # None: no raw object, so no checkpoint is needed
    action: str  # write | delete | unchanged | none
    objects: int = 0
    trades: int = 0
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False

    def report(self) -> str:
        verb = {"write": "would write" if self.dry_run else "wrote",
                "delete": "would delete" if self.dry_run else "deleted",
                "unchanged": "already matches the chain:", "none": "nothing to do:"}[self.action]
        lines = [f"{self.key}: {verb} {self._describe()}",
                 f"  raw chain: {self.objects} object(s), {self.trades} trade line(s)"]
        if self.before is not None and self.action in ("write", "delete"):
            lines.append("  before: " + " ".join(self.before.split())[:400])
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def _describe(self) -> str:
        if self.after is None:
            return "(no checkpoint: the next run starts this product afresh)"
        c = self.after
        text = f"lo {c.lo}, hi {c.hi}"
        if c.backfill_target is not None:
            text += f", backfill target {c.backfill_target} at cursor {c.backfill_cursor}"
        return text


def rebuild(store: ObjectStore, exchange: str, product_id: str) -> tuple[Checkpoint | None, list[str], int, int]:
    """The checkpoint the raw chain implies: (checkpoint or None, notes, objects, trade lines); ChainBroken if none can."""
    runs: list[_Run] = []
    notes: list[str] = []
    for info in store.list(raw_prefix(exchange, product_id)):
        rk = parse_raw_key(info.key)
        if rk is None and parse_amendment_key(info.key) is not None:
            continue  # an audit repair's amendment: outside the chain by design
        if rk is None or rk.product_id != product_id:
            notes.append(f"ignored {info.key} (not a raw object key)")
            continue
        try:
            h = rawobject.read_header(store.get(rk.key).data, rk.key)
        except NotFound:
            continue  # deleted while we listed
        except DamagedObject as e:
            raise ChainBroken(f"{e}: the chain cannot be read past it; restore it from a backup, or move it out of "
                              "raw/ (its range is fetched again) and run repair-checkpoint again") from None
        if (h.exchange, h.product_id, h.start) != (exchange, product_id, rk.start) or h.end <= h.start:
            raise ChainBroken(f"{rk.key}: its header ({h.exchange}/{h.product_id}, ({h.start}, {h.end}]) does not "
                              "belong at this key; move it out of raw/ and run repair-checkpoint again")
        cur = runs[-1] if runs else None
        if cur is not None and h.start < cur.end:
            raise ChainBroken(f"{rk.key} covers ({h.start}, {h.end}], overlapping the object ending at {cur.end} "
                              f"(which starts at {cur.last}): the same trades were landed twice; keep one of the two "
                              "objects (compare their trades), move the other out of raw/, and run repair-checkpoint again")
        if cur is not None and h.start == cur.end:
            cur.end, cur.last = h.end, h.start
        else:
            cur = _Run(h.start, h.end, h.start)
            runs.append(cur)
        cur.objects += 1
        cur.trades += h.count
    objects, trades = sum(r.objects for r in runs), sum(r.trades for r in runs)
    if not runs:
        return None, notes, 0, 0
    if len(runs) > 2:
        gaps = ", ".join(f"({a.end}, {b.start}]" for a, b in zip(runs, runs[1:]))
        raise ChainBroken(f"{raw_prefix(exchange, product_id)}: the raw objects form {len(runs)} separate runs (gaps "
                          f"{gaps}); a checkpoint holds one range and one backfill at most. Keep the runs you trust "
                          "(move the others out of raw/) and run repair-checkpoint again")
    main = runs[-1]
    cp = Checkpoint(exchange, product_id, main.start, main.end, last=main.last, started=True)
    if len(runs) == 2:
        bf = runs[0]
        cp = Checkpoint(exchange, product_id, main.start, main.end, bf.start, bf.end, last=main.last,
                        backfill_last=bf.last, started=True)
        notes.append(f"two runs of objects: read as a backfill from {bf.start} (landed up to {bf.end}) below the "
                     f"range ({main.start}, {main.end}]; the next run continues it")
    return cp, notes, objects, trades


def repair_checkpoint(store: ObjectStore, exchange: str, product_id: str, *, dry_run: bool = False,
                      clock: Clock = SYSTEM_CLOCK, lease_ttl_s: float = 300.0) -> Repair:
    """Rebuild the checkpoint from the raw chain, holding the product's lease so no ingest runs meanwhile."""
    key = checkpoint_key(exchange, product_id)
    lease = None
    if not dry_run:
        lease = Lease(store, exchange, product_id, lease_ttl_s, clock)
        lease.acquire()  # LeaseHeld says who is ingesting: wait for it, or stop it, then repair
    try:
        after, notes, objects, trades = rebuild(store, exchange, product_id)
        try:
            stored = store.get(key)
        except NotFound:
            stored = None
        before = stored.data.decode("utf-8", "replace") if stored is not None else None
        if after is not None and stored is not None:
            try:
                old = Checkpoint.from_json(stored.data, stored.etag, key)
            except DamagedObject:
                old = None
            if old is not None and old.backfill_next is not None and after.backfill_target is not None \
                    and old.backfill_next < after.backfill_target:
                after = replace(after, backfill_next=old.backfill_next)
            if old is not None and _same(old, after):
                return Repair(key, before, after, "unchanged", objects, trades, notes, dry_run)
        if after is None:
            action = "delete" if stored is not None else "none"
        else:
            action = "write"
        if not dry_run:
            if action == "write":
                Checkpoints(store).replace(
                    None if stored is None else Checkpoint(exchange, product_id, 0, 0, etag=stored.etag), after)
            elif action == "delete":
                store.delete(key)
        return Repair(key, before, after, action, objects, trades, notes, dry_run)
    finally:
        if lease is not None:
            lease.release()


def _same(a: Checkpoint, b: Checkpoint) -> bool:
    fields = ("lo", "hi", "backfill_target", "backfill_cursor", "last", "backfill_last", "backfill_next")
    return all(getattr(a, f) == getattr(b, f) for f in fields)
