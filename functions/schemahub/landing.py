"""Exactly-once landing of raw trades: lease, checkpoint, create-only raw objects.

Why it holds:
- A raw object's key is derived from the cursor it starts at, and it covers
  the cursor range (start, end] written in its header line. It is written
  create-only, so each start cursor has at most one object.
- The checkpoint's `hi` only ever moves to the `end` of the object at key(hi),
  by compare-and-swap. The chain start -> end -> end' ... is therefore unique,
  whoever walks it and however often they crash: a rerun that finds key(hi)
  already written adopts that object's end instead of writing a second one.
- Backfill walks its own chain from an older target up to `lo`, through keys
  that are all below `lo`, so the two chains never share a key or a trade.
- The lease only saves duplicate work between concurrent runs; correctness
  does not depend on it.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import socket
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from schemahub.clock import SYSTEM_CLOCK, Clock
from schemahub.errors import ExchangeBanned, LeaseHeld, NotFound, PreconditionFailed, SchemahubError
from schemahub.sources.base import Chunk, Product, Source
from schemahub.sources.http import DeadlineReached
from schemahub.store.base import ObjectStore

log = logging.getLogger("schemahub.landing")

RAW_FORMAT = "schemahub.raw/1"
GZIP_LEVEL = 1  # raw JSONL compresses ~8x even at level 1; higher levels cost CPU on the hot path


def raw_prefix(exchange: str, product_id: str) -> str:
    return f"raw/{exchange}/{product_id}/"


def raw_key(exchange: str, product_id: str, cursor: int) -> str:
    return f"{raw_prefix(exchange, product_id)}{cursor:020d}.jsonl.gz"


def checkpoint_key(exchange: str, product_id: str) -> str:
    return f"checkpoints/{exchange}/{product_id}.json"


def lease_key(exchange: str, product_id: str) -> str:
    return f"leases/{exchange}/{product_id}.json"


def ban_key(exchange: str) -> str:
    return f"bans/{exchange}.json"


DEFAULT_BAN_S = 300.0  # when a ban comes without Retry-After (Binance bans last 2 minutes to 3 days)


def record_ban(store: ObjectStore, exchange: str, error: ExchangeBanned, clock: Clock = SYSTEM_CLOCK) -> None:
    """Remember a ban in the store, so later runs (other processes, other Lambdas) send nothing until it ends."""
    until = clock.time() + (error.retry_after_s if error.retry_after_s is not None else DEFAULT_BAN_S)
    doc = {"exchange": exchange, "until": until, "until_iso": _iso(datetime.fromtimestamp(until, timezone.utc)),
           "reason": str(error)[:500]}
    store.put(ban_key(exchange), json.dumps(doc, indent=1).encode())


def active_ban(store: ObjectStore, exchange: str, clock: Clock = SYSTEM_CLOCK) -> str | None:
    """A message if the exchange banned us and the ban has not ended yet."""
    try:
        doc = json.loads(store.get(ban_key(exchange)).data)
    except NotFound:
        return None
    if doc.get("until", 0) <= clock.time():
        return None
    return f"{exchange} banned this IP until {doc.get('until_iso')}; sending nothing until then ({doc.get('reason', '')[:200]})"


def _iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------- raw objects

def encode_raw(header: dict, lines: list[bytes]) -> bytes:
    """gzip(header line + one verbatim trade per line); deterministic bytes (mtime=0)."""
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    body = b"\n".join([head, *lines]) + b"\n"
    return gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)


def read_raw(data: bytes) -> tuple[dict, list[bytes]]:
    """Split a raw object into its header and its verbatim trade lines."""
    text = gzip.decompress(data)
    head, _, rest = text.partition(b"\n")
    lines = rest.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return json.loads(head), lines


def read_raw_header(data: bytes) -> dict:
    """Decode only as much of the object as the header line needs."""
    d = zlib.decompressobj(wbits=31)
    buf = b""
    for i in range(0, len(data), 4096):
        buf += d.decompress(data[i : i + 4096])
        if b"\n" in buf:
            break
    return json.loads(buf.partition(b"\n")[0])


# ----------------------------------------------------------------- checkpoint

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
            "updated_at": _iso(datetime.now(timezone.utc)),
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


# ---------------------------------------------------------------------- lease

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
            held = json.loads(cur.data)
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


# ---------------------------------------------------------------------- runs

@dataclass
class ProductResult:
    """What one product's run did; the CLI prints it and the Lambda returns it."""

    exchange: str
    product_id: str
    status: str = "ok"  # ok | skipped | failed | planned
    trades: int = 0
    objects: int = 0
    adopted: int = 0
    pages: int = 0
    more_to_do: bool = False
    lo: int | None = None
    hi: int | None = None
    head: int | None = None
    message: str = ""
    plan: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, {}, "")}


@dataclass
class IngestOptions:
    since: datetime | None = None
    dry_run: bool = False
    resume: bool = False
    lease_ttl_s: float = 60.0
    wait_for_lease_s: float = 0.0


class Lander:
    """Lands one exchange's products into a store, exactly once."""

    def __init__(self, store: ObjectStore, source: Source, *, clock: Clock = SYSTEM_CLOCK, progress=None) -> None:
        self.store = store
        self.source = source
        self.clock = clock
        self.checkpoints = Checkpoints(store)
        self.progress = progress

    @property
    def exchange(self) -> str:
        return self.source.exchange

    def run(self, product: Product, opts: IngestOptions, deadline: float | None = None) -> ProductResult:
        """Ingest one product until caught up or the deadline; never raises for exchange trouble."""
        res = ProductResult(self.exchange, product.product_id)
        try:
            if opts.dry_run:
                return self._plan(product, opts, res, deadline)
            lease = Lease(self.store, self.exchange, product.product_id, opts.lease_ttl_s, self.clock)
            self._acquire(lease, opts, deadline)
            try:
                self._run(product, opts, res, lease, deadline)
            finally:
                lease.release()
        except LeaseHeld as e:
            res.status, res.message = "skipped", str(e)
        except DeadlineReached as e:
            res.more_to_do, res.message = True, str(e)
        except ExchangeBanned:
            raise
        except SchemahubError as e:
            res.status, res.message = "failed", str(e)
            log.error("%s/%s failed: %s", self.exchange, product.product_id, e)
        return res

    def _acquire(self, lease: Lease, opts: IngestOptions, deadline: float | None) -> None:
        give_up = self.clock.monotonic() + opts.wait_for_lease_s
        while True:
            try:
                return lease.acquire()
            except LeaseHeld:
                now = self.clock.monotonic()
                if now >= give_up or (deadline is not None and now + 1 > deadline):
                    raise
                self.clock.sleep(min(1.0, give_up - now))

    def _since(self, opts: IngestOptions) -> datetime:
        return opts.since or (self.clock.now() - self.source.spec.source.lookback)

    def _plan(self, product: Product, opts: IngestOptions, res: ProductResult, deadline) -> ProductResult:
        res.status = "planned"
        cp = self.checkpoints.load(self.exchange, product.product_id)
        head = self.source.head(product.symbol, deadline)
        res.head = head
        if cp is None:
            if opts.resume:
                res.status, res.message = "skipped", "no checkpoint and --resume given: would not start this product"
                return res
            start = self.source.start_cursor(product.symbol, self._since(opts), head, deadline)
            res.plan = {"first_run": True, "since": _iso(self._since(opts)), "start_cursor": start, "to_land": head - start}
        else:
            res.lo, res.hi = cp.lo, cp.hi
            res.plan = {"first_run": False, "from_cursor": cp.hi, "to_land": max(0, head - cp.hi)}
            if cp.backfill_target is not None:
                res.plan["backfill_in_progress"] = {"target": cp.backfill_target, "cursor": cp.backfill_cursor}
            elif opts.since is not None:
                start = self.source.start_cursor(product.symbol, opts.since, head, deadline)
                if start < cp.lo:
                    res.plan["backfill"] = {"target": start, "to_land": cp.lo - start}
        if "backfill" in res.plan and not self.source.supports_backfill:
            res.plan["backfill"] = {"refused": f"{self.exchange}'s cursor cannot bound a backfill below the landed range"}
        if not self.source.counts_trades:  # a time cursor: the number of trades is unknown until fetched
            res.plan["to_land"] = None
            res.plan["head_cursor"] = head
            return res
        res.plan["pages"] = -(-(res.plan.get("to_land", 0) + res.plan.get("backfill", {}).get("to_land", 0)) // self.source.spec.source.trades.page_size)
        return res

    def _run(self, product: Product, opts: IngestOptions, res: ProductResult, lease: Lease, deadline) -> None:
        pid = product.product_id
        head = self.source.head(product.symbol, deadline)
        res.head = head
        cp = self.checkpoints.load(self.exchange, pid)
        if cp is None:
            if opts.resume:
                res.status, res.message = "skipped", "no checkpoint and --resume given"
                return
            existing = next(iter(self.store.list(raw_prefix(self.exchange, pid))), None)
            if existing is not None:
                raise SchemahubError(
                    f"{checkpoint_key(self.exchange, pid)} is missing but raw objects exist (e.g. {existing.key}); "
                    "restore the checkpoint before ingesting, or new objects could overlap old ones"
                )
            start = self.source.start_cursor(product.symbol, self._since(opts), head, deadline)
            cp = self.checkpoints.create(Checkpoint(self.exchange, pid, start, start))
        elif opts.since is not None and cp.backfill_target is None:
            start = self.source.start_cursor(product.symbol, opts.since, head, deadline)
            if start < cp.lo and not self.source.supports_backfill:
                raise SchemahubError(
                    f"{self.exchange}/{pid}: --since is before the landed range, and {self.exchange}'s cursor cannot "
                    "bound a backfill; ingest that period into another storage instead"
                )
            if start < cp.lo:
                target = start
                cp = self.checkpoints.update(
                    cp,
                    lambda c: None
                    if c.backfill_target is not None or target >= c.lo
                    else replace(c, backfill_target=target, backfill_cursor=target),
                )
        for _ in range(3):
            try:
                cp = self._walk(product, cp, head, res, lease, deadline)
                break
            except _ChainDiverged as e:
                # Another run landed a different object at one of our keys (only
                # possible after a lease expiry): follow its chain from the checkpoint.
                log.warning("%s/%s: %s; continuing from the checkpoint", self.exchange, pid, e)
                cp = self.checkpoints.load(self.exchange, pid)
        else:
            raise SchemahubError(f"{self.exchange}/{pid}: another run keeps landing the same keys; stopping")
        res.lo, res.hi = cp.lo, cp.hi

    def _walk(self, product: Product, cp: Checkpoint, head: int, res: ProductResult, lease: Lease, deadline) -> Checkpoint:
        """Fetch objects in order here while a writer thread lands them and advances the checkpoint."""
        writer = _Writer(self, cp, res)
        try:
            cursor, upper, advance = cp.hi, None, _advance_hi
            first = True
            while True:
                # The first object always gets a try while any time is left, so every run makes progress
                # (a run that only ever said "more to do" would loop forever in Step Functions).
                margin = 0.0 if first else self._chunk_estimate()
                if deadline is not None and self.clock.monotonic() + margin > deadline:
                    res.more_to_do = True
                    break
                first = False
                lease.renew_if_due()
                group = self._fetch_group(product, cursor, upper, head, res, deadline)
                writer.submit(group, advance)
                cursor = group.end
                if upper is None and group.caught_up:
                    cp = writer.drain()
                    if cp.backfill_target is None:
                        break
                    cursor, upper, advance = cp.backfill_cursor, cp.lo, _advance_backfill
                elif upper is not None and cursor >= upper:
                    break
            return writer.drain()
        finally:
            writer.close()

    _last_chunk_s = 0.5  # seconds one page took; sizes the margin kept before a deadline

    def _chunk_estimate(self) -> float:
        return max(1.0, 2 * self._last_chunk_s)

    def _fetch_group(self, product: Product, start: int, upper: int | None, head: int, res: ProductResult, deadline) -> _Group:
        """Fetch up to pages_per_object pages from `start`, or adopt the object already landed there."""
        key = raw_key(self.exchange, product.product_id, start)
        existing = self._existing_end(key)
        if existing is not None:
            # A crashed or concurrent run already landed this object: adopt it.
            return _Group(key, start, existing, None, caught_up=False)
        lines: list[bytes] = []
        requests: list[str] = []
        spans: list[int | None] = [None, None]  # min and max trade id landed
        cursor, caught_up = start, False
        for n in range(self.source.spec.source.trades.pages_per_object):
            if n and deadline is not None and self.clock.monotonic() + self._chunk_estimate() > deadline:
                break
            t0 = self.clock.monotonic()
            chunk = self.source.fetch(product.symbol, cursor, head=head, upper=upper, deadline=deadline)
            self._last_chunk_s = self.clock.monotonic() - t0
            cursor, caught_up = self._take(chunk, res, product, head, lines, requests, spans)
            if caught_up or (upper is not None and cursor >= upper):
                break
        header = self._header(product, start, cursor, len(lines), spans[0], spans[1], requests) if lines else None
        return _Group(key, start, cursor, header, lines, caught_up)

    def _take(self, chunk: Chunk, res: ProductResult, product: Product, head: int, lines, requests, spans):
        if chunk.request:
            res.pages += 1
            requests.append(chunk.request)
        lines += chunk.lines
        if chunk.min_id is not None:
            spans[0] = chunk.min_id if spans[0] is None else min(spans[0], chunk.min_id)
            spans[1] = chunk.max_id if spans[1] is None else max(spans[1], chunk.max_id)
        if self.progress:
            self.progress(self.exchange, product.product_id, len(chunk.lines), chunk.end,
                          head if self.source.counts_trades else None)
        return chunk.end, chunk.caught_up

    def _existing_end(self, key: str) -> int | None:
        try:
            obj = self.store.get(key)
        except NotFound:
            return None
        return int(read_raw_header(obj.data)["cursor_end"])

    def _header(self, product: Product, start: int, end: int, count: int, min_id, max_id, requests: list[str]) -> dict:
        return {
            "format": RAW_FORMAT,
            "exchange": self.exchange,
            "product_id": product.product_id,
            "symbol": product.symbol,
            "cursor_start": str(start),
            "cursor_end": str(end),
            "count": count,
            "min_id": min_id,
            "max_id": max_id,
            "fetched_at": _iso(self.clock.now()),
            "requests": requests,
        }


@dataclass
class _Group:
    """One raw object's worth of fetched pages, or (header None, lines None) an object already landed."""

    key: str
    start: int
    end: int
    header: dict | None
    lines: list[bytes] | None = None
    caught_up: bool = False


class _ChainDiverged(SchemahubError):
    """The object at one of our keys ends elsewhere than the pages we fetched after it assumed."""


class _Writer:
    """Lands fetched objects strictly in order on one background thread.

    Compressing and writing an object (and, on S3, uploading it) overlaps the
    fetch of the next one. At most one object is in flight; the checkpoint is
    only ever advanced by this thread, after its object is durable.
    """

    def __init__(self, lander: Lander, cp: Checkpoint, res: ProductResult) -> None:
        self.lander, self.cp, self.res = lander, cp, res
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="land")
        self.pending = None

    def submit(self, group: _Group, advance) -> None:
        self._wait()
        self.pending = self.pool.submit(self._land, group, advance)

    def drain(self) -> Checkpoint:
        self._wait()
        return self.cp

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def _wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def _land(self, g: _Group, advance) -> None:
        lander, res = self.lander, self.res
        if g.lines is None:
            res.adopted += 1
        elif g.lines:
            try:
                lander.store.put(g.key, encode_raw(g.header, g.lines), if_none_match=True)
                res.objects += 1
                res.trades += len(g.lines)
            except PreconditionFailed:
                existing = lander._existing_end(g.key)
                res.adopted += 1
                if existing != g.end:
                    raise _ChainDiverged(f"{g.key} ends at {existing}, not {g.end}") from None
        end = g.end
        self.cp = lander.checkpoints.update(self.cp, lambda c: advance(c, end))


def _advance_hi(c: Checkpoint, end: int) -> Checkpoint | None:
    return None if c.hi >= end else replace(c, hi=end)


def _advance_backfill(c: Checkpoint, end: int) -> Checkpoint | None:
    if c.backfill_target is None or c.backfill_cursor >= end:
        return None
    if end >= c.lo:
        return replace(c, lo=c.backfill_target, backfill_target=None, backfill_cursor=None)
    return replace(c, backfill_cursor=end)


def iter_raw(store: ObjectStore, exchange: str, product_id: str):
    """Yield (key, header, lines) for every raw object of a product, in key order."""
    for info in store.list(raw_prefix(exchange, product_id)):
        header, lines = read_raw(store.get(info.key).data)
        yield info.key, header, lines
