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

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime

from schemahub import rawobject
from schemahub.clock import SYSTEM_CLOCK, Clock
from schemahub.errors import DeadlineReached, ExchangeBanned, LeaseHeld, NotFound, PreconditionFailed, SchemahubError
from schemahub.landing.checkpoint import Checkpoint, Checkpoints
from schemahub.landing.checkpoint import iso as _iso
from schemahub.landing.lease import Lease
from schemahub.layout import checkpoint_key, raw_key, raw_prefix
from schemahub.sources.base import Chunk, Product, Source
from schemahub.store.base import ObjectStore

log = logging.getLogger("schemahub.landing")


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
    # Page checks (sources/, see Chunk): ids the exchange confirmed missing, ids that went backwards, rows
    # printed twice (kept verbatim in raw), and a line for each.
    missing_ids: int = 0
    ids_backwards: int = 0
    duplicates: int = 0
    warnings: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, {}, "", [])}


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
        if chunk.more_requests or chunk.warnings:  # page checks: re-asks, gaps, ids backwards (sources/base.py)
            _page_checks(chunk, res, requests, self.exchange, product.product_id)
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
        return rawobject.read_header(obj.data, key).end

    def _header(self, product: Product, start: int, end: int, count: int, min_id, max_id, requests: list[str]) -> dict:
        return rawobject.make_header(
            exchange=self.exchange, product_id=product.product_id, symbol=product.symbol, base=product.base,
            quote=product.quote, start=start, end=end, count=count, min_id=min_id, max_id=max_id,
            fetched_at=_iso(self.clock.now()), requests=requests,
        )


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
                lander.store.put(g.key, rawobject.encode(g.header, g.lines), if_none_match=True)
                res.objects += 1
                res.trades += len(g.lines)
            except PreconditionFailed:
                existing = lander._existing_end(g.key)
                res.adopted += 1
                if existing != g.end:
                    raise _ChainDiverged(f"{g.key} ends at {existing}, not {g.end}") from None
        end = g.end
        self.cp = lander.checkpoints.update(self.cp, lambda c: advance(c, end))


def _page_checks(chunk: Chunk, res: ProductResult, requests: list[str], exchange: str, product_id: str) -> None:
    """Add a chunk's further requests and page-check findings to the object's header and the product's result."""
    res.pages += len(chunk.more_requests)
    requests += chunk.more_requests
    res.missing_ids += chunk.missing
    res.ids_backwards += chunk.backwards
    res.duplicates += chunk.duplicates
    for w in chunk.warnings:
        log.warning("%s", w)
    res.warnings += chunk.warnings[: max(0, 100 - len(res.warnings))]  # a bounded sample; the counts are exact
    if res.warnings and (not res.message or res.message.startswith("warning:")):
        res.message = f"warning: {res.warnings[0]}" + (f" (+{len(res.warnings) - 1} more)" if len(res.warnings) > 1 else "")


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
        header, lines = rawobject.decode(store.get(info.key).data, info.key)
        yield info.key, header.doc, lines
