"""The one orchestration path the CLI and the Lambda handlers share.

- `ingest_product`: ban check -> Lander.run -> record a ban -> one ProductResult.
- `transform_key`: transform one raw object named by its key, unless its marker says it is done.
- `summarize_cycle`: which planned products failed, which have more to do, and the input that retries them.
- `may_continue`: whether a Step Functions child may start another Ingest and still end inside its limit.
- `audit`: the completeness audit (CLI `schemahub audit` and the daily audit Lambda), with `repair`.
- `compact_closed`: every closed product-day into one file, and the catalog pointed at it (CLI and Lambda).

Plain Python: no AWS code here. The handlers only parse events and map these results.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone

from schemahub.clock import SYSTEM_CLOCK, Clock
from schemahub.errors import ExchangeBanned, GeoBlocked, SchemahubError
from schemahub.landing import IngestOptions, Lander, ProductResult, active_ban, record_ban
from schemahub.layout import marker_key
from schemahub.sources.base import Product, Source
from schemahub.store.base import ObjectStore

log = logging.getLogger("schemahub.pipeline")


def ingest_product(store: ObjectStore, source: Source, product: Product, opts: IngestOptions,
                   deadline: float | None = None, *, clock: Clock = SYSTEM_CLOCK,
                   lander: Lander | None = None) -> ProductResult:
    """Land one product. A recorded ban sends nothing: `skipped` until it ends, or `failed` for a geo-block,
    which only a move to another region ends. A new ban is recorded for every later run and process."""
    exchange, pid = source.exchange, product.product_id
    if not opts.dry_run:
        ban = active_ban(store, exchange, clock)
        if ban:
            return ProductResult(exchange, pid, status="failed" if GeoBlocked.PHRASE in ban else "skipped", message=ban)
    try:
        return (lander or Lander(store, source, clock=clock)).run(product, opts, deadline)
    except ExchangeBanned as e:
        record_ban(store, exchange, e, clock)
        return ProductResult(exchange, pid, status="failed", message=str(e))


def transform_key(transformer, key: str, *, text: bytes | None = None):
    """Transform one raw object; None if its marker exists (a duplicate delivery changes nothing).

    text: the object's text, decompressed, when the caller just stored it (the object is then not read back)."""
    if transformer.store.exists(marker_key(key)):
        return None
    return transformer.transform_object(key, text=text)


class TransformAsLanded:
    """Transform each raw object as it lands, on a small pool, while the next ones land.

    Landing's `on_landed` hook (call it with a raw key: it returns at once). On AWS, S3 events do the same: each
    object is transformed by the transform Lambda as soon as it exists. An object whose transform fails here
    (damaged, an error) is left as it is: the transform pass after ingest finds it pending, transforms it or
    reports it, once. close() waits for the transforms under way and returns their counts.
    """

    def __init__(self, transformer, workers: int = 2, *, max_texts: int | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from schemahub.transform import TransformResult

        self.transformer = transformer
        self.result = TransformResult()
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="transform")
        self._lock = threading.Lock()
        self._closed = False
        # Texts held for transforms not yet done (an archive slice's is ~16 MB): at most this many; past it, an
        # object is queued by key alone and read back from the store. A landing faster than its transforms (a long
        # backfill) then holds keys, never gigabytes.
        self.max_texts = 2 * max(1, workers) if max_texts is None else max_texts
        self._texts = 0

    def __call__(self, key: str, text: bytes | None = None) -> None:
        with self._lock:
            if self._closed:
                return
            if text is not None and self._texts >= self.max_texts:
                text = None
            if text is not None:
                self._texts += 1
            self._pool.submit(self._one, key, text)

    def _one(self, key: str, text: bytes | None) -> None:
        try:
            self._transform(key, text)
        finally:
            if text is not None:
                with self._lock:
                    self._texts -= 1

    def _transform(self, key: str, text: bytes | None) -> None:
        try:
            r = transform_key(self.transformer, key, text=text)
        except SchemahubError:  # damaged, or another per-object error: the pass after ingest reports it
            return
        except Exception:  # noqa: BLE001 - never lost: the pass after ingest transforms it again, and raises there
            log.exception("%s: not transformed as it landed; the transform pass after ingest tries again", key)
            return
        if r is not None:
            with self._lock:
                self.result.add(r)

    def close(self, *, cancel: bool = False):
        """Wait for the transforms under way (cancel: drop those not started; a later pass does them)."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=cancel)
        return self.result


def may_continue(started: datetime | None, again_until_s: float | None, *, now: datetime | None = None) -> bool:
    """True while the child that started at `started` may still start an invocation (the state machine sets
    again_until_s so that one more invocation, its retries included, ends inside the Express limit)."""
    if started is None or again_until_s is None:
        return False
    now = now or datetime.now(timezone.utc)
    if started.tzinfo is None:
        started = started.replace(tzinfo=timezone.utc)
    return (now - started).total_seconds() <= again_until_s


def summarize_cycle(items: list[dict], results: list) -> dict:
    """One cycle's outcome per planned product. A product without a result of its own (its child execution
    failed outright, e.g. timed out) counts as failed, as does one whose Ingest failed and was caught."""
    by_product = {}
    for r in results or []:
        if isinstance(r, dict) and "exchange" in r and "product_id" in r:
            by_product[(r["exchange"], r["product_id"])] = r
    ok, skipped, more, failed = 0, [], [], []
    for it in items:
        key = {"exchange": it["exchange"], "product_id": it["product_id"]}
        r = by_product.get((it["exchange"], it["product_id"]))
        if r is None:
            failed.append({**key, "error": "its child execution failed without a result: see the Map Run's failed items"})
        elif r.get("failed") or r.get("status") == "failed":
            err = r.get("error")
            cause = err.get("Cause") or err.get("Error") if isinstance(err, dict) else r.get("message", "")
            failed.append({**key, "error": str(cause)[:500]})
        elif r.get("status") == "skipped":
            skipped.append({**key, "message": str(r.get("message", ""))[:300]})
        else:
            ok += 1
            if r.get("more_to_do"):
                more.append(key)
    failed.sort(key=lambda f: (f["exchange"], f["product_id"]))
    return {"products": len(items), "ok": ok, "skipped": skipped, "more_to_do": more, "failed": failed,
            "retry_input": {"only": [{"exchange": f["exchange"], "product_id": f["product_id"]} for f in failed]}}


def audit(store: ObjectStore, *, audited_at: str, exchange: str | None = None, product_id: str | None = None,
          start: str | None = None, end: str | None = None, repair: bool = False, source_for=None,
          mappings_dir=None, clock: Clock = SYSTEM_CLOCK, deadline: float | None = None, write: bool = True):
    """Audit every product (or the one asked for) and write one report per product-day under audit/.

    With repair, each `unexplained` hole is asked for again through source_for(exchange) (a Source), landed once
    as an amendment object, transformed, and the product audited again. audited_at (ISO-8601 UTC) is the only time
    a report holds, so the same store and audited_at give the same bytes."""
    from schemahub import audit as au
    from schemahub.compact import read_layout
    from schemahub.transform import Transformer

    transformer = Transformer(store, mappings_dir=mappings_dir)
    result = au.AuditResult(audited_at=audited_at)
    layout = read_layout(store)
    for ex, pid in au.products_in(store, exchange, product_id):
        p = au.audit_product(store, ex, pid, layout=layout, transformer=transformer, start=start, end=end,
                             mappings_dir=mappings_dir, today=audited_at[:10])
        if repair and source_for is not None and au.to_ask(store, p):
            product = au.product_of(store, ex, pid)
            try:
                done = au.repair_product(store, source_for(ex), product, p, clock=clock, deadline=deadline)
            except SchemahubError as e:
                done = [{"exchange": ex, "product_id": pid, "status": f"failed: {e}"}]
            result.repairs += done
            # "already landed": another repair wrote it first (racing this one); transforming it again is safe.
            fresh = [r for r in done if r.get("status") in ("landed", "already landed")]
            for r in fresh:
                try:
                    transformer.transform_object(r["key"])
                except SchemahubError as e:  # a damaged amendment (recorded under damaged/): the audit says so
                    r["status"] += f"; not transformed: {e}"
            if fresh:
                p = au.audit_product(store, ex, pid, layout=read_layout(store), transformer=transformer, start=start,
                                     end=end, mappings_dir=mappings_dir, today=audited_at[:10])
        result.products.append(p)
    if write:
        result.reports = au.write_reports(store, result, start, end)
    return result


def compact_closed(store: ObjectStore, *, catalog=None, clock: Clock = SYSTEM_CLOCK, deadline: float | None = None,
                   dry_run: bool = False, before=None, exchange: str | None = None, product_id: str | None = None,
                   progress=None):
    """Compact every closed product-day (before today, UTC, by `clock`; or before `before`), then point the
    catalog's partitions at what readers read (schemahub.compact). Starts no new day after `deadline`
    (time.monotonic()): the rest is left for the next run, counted in the result's `pending`."""
    from schemahub.compact import compact

    before = before or clock.now().astimezone(timezone.utc).date()
    return compact(store, before=before, dry_run=dry_run, exchange=exchange, product_id=product_id,
                   catalog=catalog, deadline=deadline, progress=progress)
