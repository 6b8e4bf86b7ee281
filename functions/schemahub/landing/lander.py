"""Exactly-once landing of raw trades: lease, checkpoint, create-only raw objects.

Why it holds:
- A raw object's key is derived from the cursor it starts at, and it covers
  the cursor range (start, end] written in its header line. It is written
  create-only, so each start cursor has at most one object.
- The checkpoint's `hi` only ever moves from `start` to the `end` of an object
  that exists at key(start), by compare-and-swap. An empty cursor range (a
  confirmed gap) still lands an object, header only, so every step of the chain
  start -> end -> end' ... is an object. Each key holds at most one object, so
  the chain is unique whoever walks it, however often they crash and whether
  or not the lease holds: a run that finds key(start) already written adopts
  that object's end instead of writing a second one, and a run whose object
  lost the race follows the winner's chain.
- A checkpoint read back is checked before it is trusted: `lo` must be the
  start of the chain (the lowest raw key) and `hi` the end of the object at
  key(last) (one header read). Anything else is refused, naming the key;
  `schemahub repair-checkpoint` rebuilds it from the chain.
- Backfill walks its own chain from an older target up to `lo`, through keys
  that are all below `lo`, so the two chains never share a key or a trade.
- The lease only saves duplicate work between concurrent runs; correctness
  does not depend on it.
- A chain on which nothing was ever landed (`started` false) may move its
  start earlier (a first run that landed nothing, then an earlier --since on a
  source that cannot backfill). The first write of a chain marks it started by
  compare-and-swap before its object is put, so a stale run can never land an
  object at a start that was moved away.
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

from schemahub import rawobject
from schemahub.clock import SYSTEM_CLOCK, Clock
from schemahub.errors import (
    ArchiveReplaced,
    DamagedObject,
    DeadlineReached,
    ExchangeBanned,
    Interrupted,
    InvalidCheckpoint,
    LeaseHeld,
    NotFound,
    PreconditionFailed,
    SchemahubError,
)
from schemahub.landing.checkpoint import Checkpoint, Checkpoints, repair_hint
from schemahub.landing.checkpoint import iso as _iso
from schemahub.landing.lease import Lease
from schemahub.layout import RawKey, checkpoint_key, parse_raw_key, raw_key, raw_prefix
from schemahub.sources.base import Chunk, Product, Source, parse_time
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
    newest_us: int | None = None  # time of the newest trade landed (µs UTC), this run or before it
    message: str = ""
    plan: dict = field(default_factory=dict)
    # Page checks (sources/, see Chunk): ids the exchange confirmed missing, ids that went backwards, rows
    # printed twice (kept verbatim in raw), and a line for each.
    missing_ids: int = 0
    ids_backwards: int = 0
    duplicates: int = 0
    warnings: list = field(default_factory=list)
    # The archive (sources/archive.py): objects landed from archive files, and files found replaced since they
    # landed ({"file", "landed_sha256", "now_sha256"}): reported, never mixed in; the CLI exits non-zero.
    archive_objects: int = 0
    replaced: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, {}, "", []) and (k != "archive_objects" or v)}


@dataclass
class IngestOptions:
    since: datetime | None = None
    dry_run: bool = False
    resume: bool = False
    lease_ttl_s: float = 60.0
    wait_for_lease_s: float = 0.0


class Lander:
    """Lands one exchange's products into a store, exactly once."""

    def __init__(self, store: ObjectStore, source: Source, *, clock: Clock = SYSTEM_CLOCK, progress=None,
                 on_landed=None) -> None:
        self.store = store
        self.source = source
        self.clock = clock
        self.checkpoints = Checkpoints(store)
        self.progress = progress
        # on_landed(raw key, text): told of each object this lander wrote, just after it exists (e.g. to transform
        # it while the next lands, as S3 events do on AWS), with its text (rawobject.split_text reads it) where the
        # lander has it, else None. It must return at once and never raise.
        self.on_landed = on_landed

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
            archive = self.source.archive
            try:
                if archive is not None:
                    archive.begin(product.product_id)
                self._run(product, opts, res, lease, deadline)
            finally:
                if archive is not None:
                    archive.end(product.product_id)
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
        except Exception as e:  # noqa: BLE001 - one product's trouble (OSError, a bad value) never stops the others
            res.status, res.message = "failed", f"{type(e).__name__}: {e}"
            log.error("%s/%s failed: %s: %s", self.exchange, product.product_id, type(e).__name__, e,
                      exc_info=log.isEnabledFor(logging.DEBUG))
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
        if cp is not None:
            self._check_chain(cp)
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
                if cp.backfill_next is not None:
                    res.plan["backfill_in_progress"]["then"] = cp.backfill_next
            elif opts.since is not None:
                start = self.source.start_cursor(product.symbol, opts.since, head, deadline)
                if start < cp.lo:
                    res.plan["backfill"] = {"target": start, "to_land": cp.lo - start}
        if "backfill" in res.plan and not self.source.supports_backfill:
            if cp is not None and cp.lo == cp.hi and not cp.started and cp.backfill_target is None:
                res.plan["backfill"] = {"moves_start_to": res.plan["backfill"]["target"],
                                        "why": "nothing has landed yet, so the chain starts at the earlier --since"}
            else:
                res.plan["backfill"] = {"refused": f"{self.exchange}'s cursor cannot bound a backfill below the landed range"}
        if self.source.archive is not None:  # trades up to the end of this day come from archive files
            res.plan["archive_through"] = self.source.archive.newest_published_day().isoformat()
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
            existing = self._first_raw(pid)
            if existing is not None:
                raise SchemahubError(
                    f"{checkpoint_key(self.exchange, pid)} is missing but raw objects exist (e.g. {existing.key}); "
                    f"new objects could overlap them: {repair_hint(self.exchange, pid)}"
                )
            start = self.source.start_cursor(product.symbol, self._since(opts), head, deadline)
            cp = self.checkpoints.create(Checkpoint(self.exchange, pid, start, start))
        self._hi_header = None
        first = self._check_chain(cp)
        if self._hi_header is not None and self._hi_header.max_id is not None:
            # The newest trade id landed so far: an exchange whose cursor is a time (Kraken) needs it to tell a
            # repeat or a hole at the start of this run's first page from new trades.
            self.source.landed_before(product.symbol, cp.hi, self._hi_header.max_id)
        if opts.since is not None:
            start = self.source.start_cursor(product.symbol, opts.since, head, deadline)
            if start < cp.lo:
                cp = self._earlier(cp, start, first is None, res)
        if self.source.archive is not None:
            self._recheck_archive(product, res, deadline)
        for _ in range(3):
            try:
                cp = self._walk(product, cp, head, res, lease, deadline)
                break
            except _ChainDiverged as e:
                # Another run landed a different object at one of our keys (only
                # possible after a lease expiry): follow its chain from the checkpoint.
                log.warning("%s/%s: %s; continuing from the checkpoint", self.exchange, pid, e)
                cp = self.checkpoints.reload(self.exchange, pid)
        else:
            raise SchemahubError(f"{self.exchange}/{pid}: another run keeps landing the same keys; stopping")
        res.lo, res.hi = cp.lo, cp.hi
        if res.newest_us is None and cp.hi > cp.lo and cp.last is not None:
            res.newest_us = self._newest_landed(raw_key(self.exchange, pid, cp.last))

    def _newest_landed(self, key: str) -> int | None:
        """The newest trade time in the object at key (for the result line); None if it cannot be told."""
        try:
            _, lines = rawobject.decode(self.store.get(key).data, key)
        except SchemahubError:
            return None
        return self._newest_us(lines, every=True)  # an object's pages may each run newest-first

    def _newest_us(self, lines: list[bytes], every: bool = False) -> int | None:
        """The newest trade time of a page: its first or last line (pages run oldest- or newest-first)."""
        t = self.source.spec.source.trades
        best = None
        for line in lines if every else (lines[0], lines[-1]) if lines else ():
            try:
                ts = parse_time(json.loads(line)[t.time_field], t.time_format)
            except (ValueError, KeyError, IndexError, TypeError, OverflowError):
                continue  # a line the page format does not describe (an archive's CSV row): no time to tell
            us = (ts - _EPOCH) // _US
            best = us if best is None else max(best, us)
        return best

    def _recheck_archive(self, product: Product, res: ProductResult, deadline) -> None:
        """Report archive files landed recently whose checksum has changed since (replaced by the exchange)."""
        notes: list[str] = []
        replaced = self.source.archive.recheck(self.store, product, deadline, notes)
        _warn(res, notes)
        if replaced:
            res.replaced += replaced
            _warn(res, [f"{self.exchange}: {product.symbol}: archive file {r['file']} was replaced after it landed "
                        f"(SHA-256 {r['landed_sha256']} landed, {r['now_sha256']} now): the landed rows are kept and "
                        "the new file is not mixed in; compare them before re-ingesting that day elsewhere"
                        for r in replaced])

    # ------------------------------------------------------------ checks of what the store holds
    def _raw_keys(self, pid: str):
        """The product's raw keys in cursor order; stray keys (temporary files, foreign names) are skipped."""
        for info in self.store.list(raw_prefix(self.exchange, pid)):
            rk = parse_raw_key(info.key)
            if rk is not None and rk.product_id == pid:
                yield rk

    def _first_raw(self, pid: str) -> RawKey | None:
        return next(self._raw_keys(pid), None)

    def _check_chain(self, cp: Checkpoint) -> RawKey | None:
        """Refuse a checkpoint whose lo is not the chain's start or whose hi is not an object's end.

        Costs one listing (its first page) and one header read per chain end;
        returns the lowest raw key (None if the product has no raw object).
        """
        pid, key = cp.product_id, checkpoint_key(cp.exchange, cp.product_id)
        hint = repair_hint(cp.exchange, pid)
        first = self._first_raw(pid)
        bf, bcur = cp.backfill_target, cp.backfill_cursor
        if first is None:
            if cp.hi > cp.lo or (bf is not None and bcur > bf):
                raise InvalidCheckpoint(key, f"says cursors up to {cp.hi} landed, but there is no raw object under "
                                             f"{raw_prefix(cp.exchange, pid)}; {hint}")
            return None
        starts = {cp.lo} if bf is None else ({bf} if bcur > bf else {bf, cp.lo})
        if first.start not in starts:
            raise InvalidCheckpoint(key, f"lo {cp.lo} is not the start of the raw chain, whose lowest object is "
                                         f"{first.key}; {hint}")
        if cp.hi > cp.lo:
            self._check_end(cp, cp.last, cp.lo, cp.hi, "hi")
        if bf is not None and bcur > bf:
            self._check_end(cp, cp.backfill_last, bf, bcur, "backfill cursor")
        return first

    def _check_end(self, cp: Checkpoint, last: int | None, lo: int, end: int, what: str) -> None:
        pid, key = cp.product_id, checkpoint_key(cp.exchange, cp.product_id)
        hint = repair_hint(cp.exchange, pid)
        if last is None:  # a checkpoint written before `last` was recorded: the object below `end` by listing
            last = max((rk.start for rk in self._raw_keys(pid) if lo <= rk.start < end), default=None)
            if last is None:
                raise InvalidCheckpoint(key, f"{what} {end} is not the end of a raw object: none starts in "
                                             f"[{lo}, {end}); {hint}")
        okey = raw_key(cp.exchange, pid, last)
        try:
            obj = self.store.get(okey)
        except NotFound:
            raise InvalidCheckpoint(key, f"{what} {end} should be the end of {okey}, which does not exist; {hint}") from None
        try:
            h = rawobject.read_header(obj.data, okey)
        except DamagedObject as e:
            raise DamagedObject(okey, f"{e.reason}; it is the object the checkpoint's {what} ends at: restore it "
                                      f"from a backup, or move it out of raw/ and {hint}") from None
        if (h.start, h.end) != (last, end):
            raise InvalidCheckpoint(key, f"{what} {end} is not an object boundary: {okey} covers "
                                         f"({h.start}, {h.end}]; {hint}")
        if what == "hi":
            self._hi_header = h

    def _earlier(self, cp: Checkpoint, start: int, chain_empty: bool, res: ProductResult) -> Checkpoint:
        """Act on a --since before the landed range: backfill, queue behind a backfill, or move an empty start."""
        pid = cp.product_id
        if not self.source.supports_backfill:
            refused = SchemahubError(
                f"{self.exchange}/{pid}: --since is before the landed range, and {self.exchange}'s cursor cannot "
                "bound a backfill; ingest that period into another storage instead"
            )
            if not chain_empty:
                raise refused

            def rebase(c: Checkpoint) -> Checkpoint | None:
                if c.lo <= start:
                    return None
                if c.started or c.lo != c.hi or c.backfill_target is not None:
                    raise refused  # an object was landed meanwhile: the chain's start is fixed now
                return replace(c, lo=start, hi=start, last=None)

            # Nothing was ever landed on this chain (e.g. a first run offline): start it earlier instead.
            res.message = f"nothing had landed yet: the chain now starts at cursor {start} instead of {cp.lo}"
            return self.checkpoints.update(cp, rebase, backward=True)

        def want(c: Checkpoint) -> Checkpoint | None:
            if start >= c.lo:
                return None
            if c.backfill_target is None:
                return replace(c, backfill_target=start, backfill_cursor=start, backfill_last=None)
            if start >= c.backfill_target or (c.backfill_next is not None and c.backfill_next <= start):
                return None
            return replace(c, backfill_next=start)  # one chain at a time: it starts where this one ends

        cp = self.checkpoints.update(cp, want)
        if cp.backfill_next is not None:
            res.message = (f"a backfill down to cursor {cp.backfill_target} is in progress (at {cp.backfill_cursor}); "
                           f"the earlier --since (cursor {cp.backfill_next}) is queued and starts when it completes")
        return cp

    # ------------------------------------------------------------ the walk
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
                if self.clock.stopped:  # Ctrl-C: the objects fetched are landed, nothing more is fetched
                    res.more_to_do, res.message = True, "interrupted; a rerun continues from here"
                    break
                first = False
                lease.renew_if_due()
                group = self._fetch_group(product, cursor, upper, head, res, deadline)
                writer.submit(group, advance)
                cursor = group.end
                stuck = group.end <= group.start  # nothing more to fetch below this head
                if (upper is None and group.caught_up) or (upper is not None and (cursor >= upper or stuck)):
                    cp = writer.drain()
                    if cp.backfill_target is None or (upper is not None and stuck):
                        break
                    # Walk the backfill chain (or, once one completes, the earlier one queued behind it).
                    cursor, upper, advance = cp.backfill_cursor, cp.lo, _advance_backfill
                elif stuck:
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
        existing = self._existing_end(key, start)
        if existing is not None:
            # A crashed or concurrent run already landed this object: adopt it.
            return _Group(key, start, existing, None, caught_up=False)
        if self.source.archive is not None:
            group = self._archive_group(product, key, start, upper, head, res, deadline)
            if group is not None:
                return group
        lines: list[bytes] = []
        requests: list[str] = []
        spans: list[int | None] = [None, None]  # min and max trade id landed
        newest = None  # the newest trade time fetched (µs), page by page
        gaps: list[list[int]] = []  # confirmed gaps (inclusive id ranges), recorded in the header for the audit
        cursor, caught_up = start, False
        for n in range(self.source.spec.source.trades.pages_per_object):
            if n and deadline is not None and self.clock.monotonic() + self._chunk_estimate() > deadline:
                break
            if n and self.clock.stopped:
                break  # Ctrl-C: land the pages fetched so far as one whole object
            t0 = self.clock.monotonic()
            try:
                chunk = self.source.fetch(product.symbol, cursor, head=head, upper=upper, deadline=deadline)
            except Interrupted:  # Ctrl-C (a DeadlineReached too): checked first
                if not n:
                    raise
                break  # the page in flight is dropped whole; the pages before it land
            except DeadlineReached:
                if not n:
                    raise
                break  # the run's time is strict (sources/http.py): land the whole pages already fetched
            self._last_chunk_s = self.clock.monotonic() - t0
            cursor, caught_up = self._take(chunk, res, product, head, lines, requests, spans)
            gaps += [[a, b] for a, b in chunk.gaps]
            t = self._newest_us(chunk.lines)
            newest = t if newest is None or (t is not None and t > newest) else newest
            if caught_up or (upper is not None and cursor >= upper):
                break
        # An empty range (a confirmed gap) still lands an object, header only: the chain's every step is an object.
        header = self._header(product, start, cursor, len(lines), spans[0], spans[1], requests,
                              gaps) if cursor > start else None
        return _Group(key, start, cursor, header, lines, caught_up, newest_us=newest)

    def _archive_group(self, product: Product, key: str, start: int, upper, head: int, res: ProductResult, deadline):
        """The next object cut from an archive file (verified, ids contiguous from start + 1), or None: REST."""
        notes: list[str] = []
        try:
            sl = self.source.archive.slice(self.store, product, start, upper, head, notes, deadline)
        except ArchiveReplaced as e:  # reported (exit 1), never mixed in: REST pages the rest of the file's days
            log.warning("%s", e)
            if e.entry.get("file") not in {r.get("file") for r in res.replaced}:  # the recheck may have seen it
                res.replaced.append(e.entry)
            notes.append(str(e))
            sl = None
        if notes:
            _warn(res, notes)
        if sl is None:
            return None
        res.pages += sl.sent
        header = self._header(product, start, sl.end, sl.count, sl.min_id, sl.max_id, sl.requests,
                              lines=rawobject.LINES_CSV, source=sl.source)
        if self.progress:
            self.progress(self.exchange, product.product_id, sl.count, sl.end, head)
        # Compressed on a small pool while the writer lands the object before it (ISA-L and zlib release the
        # GIL): a busy day's slices compress side by side, still landed strictly in order.
        text = rawobject.text_of_parts(header, sl.parts)
        body = _encoder().submit(rawobject.compress, text)
        return _Group(key, start, sl.end, header, None, caught_up=sl.end >= head, archive=True, body=body,
                      count=sl.count, text=text)

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
            # (exchange, product, trades, cursor, head, whether head - cursor counts trades or is a time span)
            self.progress(self.exchange, product.product_id, len(chunk.lines), chunk.end, head,
                          self.source.counts_trades)
        return chunk.end, chunk.caught_up

    def _existing_end(self, key: str, start: int) -> int | None:
        """The end of the object already at key (the chain's next step), None if there is none."""
        try:
            obj = self.store.get(key)
        except NotFound:
            return None
        try:
            h = rawobject.read_header(obj.data, key)
            if h.start != start or h.end <= start:
                raise DamagedObject(key, f"its header covers ({h.start}, {h.end}], which does not start at its key")
        except DamagedObject as e:
            raise DamagedObject(key, f"{e.reason}. This object sits where the checkpoint's next object lands, and "
                                     "schemahub never overwrites a raw object: inspect it, then move it out of raw/ "
                                     "(the next run fetches its range again)") from None
        return h.end

    def _header(self, product: Product, start: int, end: int, count: int, min_id, max_id, requests: list[str],
                gaps: list | None = None, **extra) -> dict:
        # `gaps`: ids in (start, end] the exchange confirmed it never served (`schemahub audit` reads them).
        if gaps:
            extra["gaps"] = sorted(gaps)
        return rawobject.make_header(
            exchange=self.exchange, product_id=product.product_id, symbol=product.symbol, base=product.base,
            quote=product.quote, start=start, end=end, count=count, min_id=min_id, max_id=max_id,
            fetched_at=_iso(self.clock.now()), requests=requests, **extra,
        )


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


@dataclass
class _Group:
    """One raw object's worth of fetched pages, or (header None, lines None) an object already landed."""

    key: str
    start: int
    end: int
    header: dict | None
    lines: list[bytes] | None = None
    caught_up: bool = False
    archive: bool = False  # cut from an archive file
    newest_us: int | None = None
    body: Future | None = None  # the object's bytes, being compressed (archive slices: lines None, count given)
    count: int | None = None  # trade lines, where lines is None but header is not (an archive slice)
    text: bytes | None = None  # the object's text before compression, where kept (archive slices), for on_landed

    @property
    def adopted(self) -> bool:
        """An object already landed (no header, nothing of ours to write)."""
        return self.header is None and self.lines is None

    @property
    def n(self) -> int:
        return self.count if self.count is not None else len(self.lines or ())


_ENCODER: ThreadPoolExecutor | None = None
_ENCODER_LOCK = threading.Lock()


def _encoder() -> ThreadPoolExecutor:
    """The threads that compress archive slices (one process-wide pool of two: this machine's cores)."""
    global _ENCODER
    with _ENCODER_LOCK:
        if _ENCODER is None:
            _ENCODER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="encode")
        return _ENCODER


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
        if g.adopted:
            res.adopted += 1
        elif g.end > g.start:
            if not self.cp.started:
                # Fix the chain's start before its first object exists (see the module docstring).
                self.cp = lander.checkpoints.update(self.cp, lambda c: _start_chain(c, g.start, advance))
            try:
                body = g.body.result() if g.body is not None else rawobject.encode(g.header, g.lines)
                lander.store.put(g.key, body, if_none_match=True)
                if lander.on_landed is not None:
                    lander.on_landed(g.key, g.text)  # the text: exactly what the store now holds, decompressed
                res.objects += 1
                res.trades += g.n
                res.archive_objects += g.archive
                if g.newest_us is not None:
                    res.newest_us = max(res.newest_us or g.newest_us, g.newest_us)
            except PreconditionFailed:
                existing = lander._existing_end(g.key, g.start)
                res.adopted += 1
                if existing != g.end:
                    raise _ChainDiverged(f"{g.key} ends at {existing}, not {g.end}") from None
        else:
            return  # nothing fetched and no range covered: the checkpoint stays
        start, end = g.start, g.end
        self.cp = lander.checkpoints.update(self.cp, lambda c: advance(c, start, end))


def _page_checks(chunk: Chunk, res: ProductResult, requests: list[str], exchange: str, product_id: str) -> None:
    """Add a chunk's further requests and page-check findings to the object's header and the product's result."""
    res.pages += len(chunk.more_requests)
    requests += chunk.more_requests
    res.missing_ids += chunk.missing
    res.ids_backwards += chunk.backwards
    res.duplicates += chunk.duplicates
    for w in chunk.warnings:
        log.warning("%s", w)
    _warn(res, chunk.warnings)


def _warn(res: ProductResult, texts: list[str]) -> None:
    """Add warnings to the product's result (a bounded sample; the counts are exact) and its message."""
    res.warnings += texts[: max(0, 100 - len(res.warnings))]
    if res.warnings and (not res.message or res.message.startswith("warning:")):
        res.message = f"warning: {res.warnings[0]}" + (f" (+{len(res.warnings) - 1} more)" if len(res.warnings) > 1 else "")


def _advance_hi(c: Checkpoint, start: int, end: int) -> Checkpoint | None:
    """Move hi from start to the end of the object at key(start), or nothing if another run already did."""
    if c.hi >= end:
        return None
    if c.hi != start:
        raise _ChainDiverged(f"the checkpoint's hi is {c.hi}, not {start} where this object starts")
    return replace(c, hi=end, last=start, started=True)


def _advance_backfill(c: Checkpoint, start: int, end: int) -> Checkpoint | None:
    if c.backfill_target is None or c.backfill_cursor >= end:
        return None
    if c.backfill_cursor != start:
        raise _ChainDiverged(f"the backfill cursor is {c.backfill_cursor}, not {start} where this object starts")
    if end >= c.lo:  # the chains meet: the landed range now starts at the target (and a queued backfill begins)
        nxt = c.backfill_next
        return replace(c, lo=c.backfill_target, backfill_target=nxt, backfill_cursor=nxt, backfill_last=None,
                       backfill_next=None, started=True)
    return replace(c, backfill_cursor=end, backfill_last=start, started=True)


def _start_chain(c: Checkpoint, start: int, advance) -> Checkpoint | None:
    at = c.hi if advance is _advance_hi else c.backfill_cursor
    if at != start:  # e.g. the empty chain's start was moved while we fetched: follow the checkpoint instead
        raise _ChainDiverged(f"the checkpoint moved to {at} before the object at {start} was landed")
    return None if c.started else replace(c, started=True)


def iter_raw(store: ObjectStore, exchange: str, product_id: str):
    """Yield (key, header, lines) for every raw object of a product, in key order."""
    for info in store.list(raw_prefix(exchange, product_id)):
        header, lines = rawobject.decode(store.get(info.key).data, info.key)
        yield info.key, header.doc, lines
