"""Ingest orchestration: resolve products, build sources, land products in parallel.

`ingest_exchanges` is the one path of the CLI's ingest, run and demo: every exchange in its own thread with its
own rate budget (its products share the exchange's limiter, `workers` of them at a time), so a run takes about
as long as its slowest exchange. A stop asked through a StoppableClock (Ctrl-C) ends every exchange at an object
boundary. The Lambda lands one product per invocation through pipeline.ingest_product, as `ingest` does here.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from schemahub import seed as seed_file
from schemahub import settings
from schemahub.clock import SYSTEM_CLOCK, Clock
from schemahub.config import default_mappings_dir
from schemahub.errors import ConfigError
from schemahub.landing import IngestOptions, Lander, ProductResult
from schemahub.layout import PRODUCT_ID
from schemahub.pipeline import ingest_product
from schemahub.sources.base import Product, Source
from schemahub.sources.build import build_source
from schemahub.sources.http import HttpClient, RateLimiter, WeightBudget
from schemahub.sources.spec import ExchangeSpec, available_exchanges, load_exchange, with_archive_url, with_base_url
from schemahub.store.base import ObjectStore

SEED_FILE = "product_ids_seed.yaml"


def make_source(
    exchange: str,
    *,
    base_url: str | None = None,
    rate: float | None = None,
    mappings_dir: str | Path | None = None,
    clock: Clock = SYSTEM_CLOCK,
    archive_url: str | None = None,
    archive: bool = True,
) -> Source:
    """A Source for the exchange; base_url and SCHEMAHUB_<EX>_RATE_LIMIT override the mapping.

    The archive's files come from archive_url, else SCHEMAHUB_<EX>_ARCHIVE_URL, else base_url (see
    with_base_url), else the mapping. archive=False pages REST only (the ingest Lambda, which has no pyarrow).
    """
    spec = load_exchange(exchange, mappings_dir)
    if base_url:
        spec = with_base_url(spec, base_url)
    archive_url = archive_url or (settings.archive_url(exchange) if spec.archive is not None else None)
    if archive_url:
        spec = with_archive_url(spec, archive_url)
    if not archive:
        spec = spec.model_copy(update={"archive": None})
    source = source_from_spec(spec, rate=rate, clock=clock)
    source.mappings_dir = mappings_dir  # its listing unifies assets with this folder's assets.yaml
    return source


def source_from_spec(spec: ExchangeSpec, *, rate: float | None = None, clock: Clock = SYSTEM_CLOCK) -> Source:
    """A Source with its HTTP client (rate limit, weight budget, retries) built from the spec."""
    exchange = spec.exchange
    s = spec.source
    rate = rate or settings.rate_limit(exchange) or s.rate_limit.requests_per_second
    burst = max(s.rate_limit.burst, int(rate)) if rate != s.rate_limit.requests_per_second else s.rate_limit.burst
    http = HttpClient(
        name=exchange,
        rate=RateLimiter(rate, burst, clock),
        timeout_s=settings.http_timeout() or s.timeout_s,
        max_attempts=s.retry.max_attempts,
        base_delay_s=s.retry.base_delay_s,
        max_delay_s=s.retry.max_delay_s,
        ban_statuses=frozenset(s.ban_statuses),
        max_retry_after_s=s.retry.max_retry_after_s,
        weight=WeightBudget(s.weight.header, s.weight.limit, s.weight.window_s, s.weight.pause_at, clock) if s.weight else None,
        clock=clock,
    )
    source = build_source(spec, http)
    if spec.archive is not None:
        from schemahub.sources.archive import ArchiveSource

        source.archive = ArchiveSource(spec, source, clock=clock)
    return source


# ----------------------------------------------------------------- the seed

def seed_path(mappings_dir: str | Path | None = None) -> Path:
    return Path(mappings_dir or default_mappings_dir()) / SEED_FILE


def load_seed(mappings_dir: str | Path | None = None) -> dict[str, list[Product]]:
    """The seeded products per exchange (empty if there is no seed file); ConfigError naming file, line and key."""
    path = seed_path(mappings_dir)
    if not path.exists():
        return {}
    return seed_file.load(path, available_exchanges(mappings_dir))


def write_seed(products: dict[str, list[Product]], mappings_dir: str | Path | None = None) -> Path:
    return seed_file.write(seed_path(mappings_dir), products)


def resolve_products(source: Source, wanted: list[str] | None, seed: dict[str, list[Product]]) -> list[Product]:
    """Map --product values (unified id, or the exchange's own symbol) to Products."""
    seeded = seed.get(source.exchange, [])
    if not wanted:
        if not seeded:
            raise ConfigError(
                f"no products seeded for {source.exchange}: pass --product, or run "
                f"`schemahub update-seed --exchange {source.exchange} --fetch --write`"
            )
        return seeded
    by_name = {}
    listing: list[Product] | None = None
    out = []
    for p in seeded:
        by_name[p.product_id.upper()] = p
        by_name[p.symbol.upper()] = p
    for name in wanted:
        key = name.upper()
        if key not in by_name and listing is None:
            listing = source.list_products()
            for p in listing:
                by_name.setdefault(p.product_id.upper(), p)
                by_name.setdefault(p.symbol.upper(), p)
        if key not in by_name:
            raise ConfigError(f"{source.exchange} has no online product {name!r}: check the spelling, or list them "
                              f"with `schemahub update-seed --exchange {source.exchange} --fetch`")
        p = by_name[key]
        if not PRODUCT_ID.match(p.product_id):
            raise ConfigError(f"{source.exchange} lists {name!r} as product id {p.product_id!r}, which is not "
                              "BASE-QUOTE in upper-case letters and digits: it cannot be ingested")
        out.append(p)
    return out


def ingest(
    store: ObjectStore,
    source: Source,
    products: list[Product],
    opts: IngestOptions,
    *,
    workers: int = 1,
    deadline: float | None = None,
    progress=None,
    clock: Clock = SYSTEM_CLOCK,
    on_landed=None,
) -> list[ProductResult]:
    """Land each product; one product's failure never stops the others. on_landed: see Lander."""
    lander = Lander(store, source, clock=clock, progress=progress, on_landed=on_landed)
    banned: list[str] = []
    started = getattr(progress, "started", None)
    finished = getattr(progress, "finished", None)

    def one(p: Product) -> ProductResult:
        try:
            if banned:
                return ProductResult(source.exchange, p.product_id, status="skipped",
                                     message=f"exchange banned us: {banned[0]}")
            if clock.stopped:
                return ProductResult(source.exchange, p.product_id, status="skipped", more_to_do=True,
                                     message="interrupted before it started; a rerun lands it")
            if started:
                started(source.exchange, p.product_id)
            res = ingest_product(store, source, p, opts, deadline, clock=clock, lander=lander)  # the Lambda's path too
            if getattr(source.http, "banned", None) and not banned:  # a source without HTTP (tests) is never banned
                banned.append(source.http.banned)
            return res
        finally:
            if finished:
                finished(source.exchange, p.product_id)

    if workers <= 1 or len(products) <= 1:
        return [one(p) for p in products]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as pool:
        return list(pool.map(one, products))


def ingest_exchanges(
    store: ObjectStore,
    jobs: list[tuple[Source, list[Product]]],
    opts: IngestOptions,
    *,
    workers: int = 1,
    deadline: float | None = None,
    progress=None,
    clock: Clock = SYSTEM_CLOCK,
    on_landed=None,
) -> list[ProductResult]:
    """Every exchange at once, each in its own thread with its own rate budget; results in the jobs' order.

    `workers` products of one exchange at a time (they share its limiter). One exchange failing, unreachable
    or banned never holds up the others. With progress, each source's HTTP waits are reported to
    `progress.waiting(exchange, reason, seconds)`.
    """
    results: list[list[ProductResult] | None] = [None] * len(jobs)
    errors: list[BaseException | None] = [None] * len(jobs)
    waiting = getattr(progress, "waiting", None)

    def run(k: int, source: Source, products: list[Product]) -> None:
        try:
            if waiting is not None and hasattr(source.http, "on_wait"):
                source.http.on_wait = lambda reason, s, ex=source.exchange: waiting(ex, reason, s)
            results[k] = ingest(store, source, products, opts, workers=workers, deadline=deadline,
                                progress=progress, clock=clock, on_landed=on_landed)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread below
            errors[k] = e

    if len(jobs) == 1:
        run(0, *jobs[0])
    else:
        threads = [threading.Thread(target=run, args=(k, src, prods), name=f"ingest-{src.exchange}", daemon=True)
                   for k, (src, prods) in enumerate(jobs)]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)  # short joins: the main thread stays free to take Ctrl-C
    for e in errors:
        if e is not None:
            raise e
    return [r for rs in results for r in (rs or [])]
