"""The schemahub command line: a thin shell over the core library."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
import traceback
from datetime import date, datetime, timezone

from schemahub import logs
from schemahub.errors import SchemahubError

log = logging.getLogger("schemahub.cli")


def _since(text: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--since {text!r} is not ISO-8601 (e.g. 2026-11-28T00:00:00Z)") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def _base_urls(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        ex, sep, url = pair.partition("=")
        if not sep or not url:
            raise SchemahubError(f"--base-url {pair!r}: expected EXCHANGE=URL")
        out[ex.strip().lower()] = url.strip()
    return out


class Progress:
    """A single status line on a terminal: trades, pages, trades/s and ETA."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.t0 = time.monotonic()
        self.trades = 0
        self.pages = 0
        self.remaining: dict[str, int | None] = {}
        self.lock = threading.Lock()
        self.last = 0.0

    def __call__(self, exchange: str, product_id: str, n: int, cursor: int, head: int) -> None:
        with self.lock:
            self.trades += n
            self.pages += 1
            self.remaining[f"{exchange}/{product_id}"] = None if head is None else max(0, head - cursor)
            now = time.monotonic()
            if not self.enabled or now - self.last < 0.25:
                return
            self.last = now
            rate = self.trades / max(now - self.t0, 1e-6)
            known = None not in self.remaining.values()  # time cursors (Kraken) give no trade count
            left = sum(v for v in self.remaining.values() if v)
            eta = f"ETA {left / rate:,.0f}s" if known and rate > 0 and left else "ETA -"
            sys.stderr.write(f"\r{self.trades:,} trades  {self.pages:,} pages  {rate:,.0f} trades/s  {eta}   ")
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self.pages:
            sys.stderr.write("\n")


def cmd_update_seed(args) -> int:
    from schemahub.ingest import load_seed, make_source, seed_path, write_seed
    from schemahub.sources.spec import available_exchanges

    urls = _base_urls(args.base_url)
    exchanges = [args.exchange] if args.exchange else available_exchanges(args.mappings)
    seed = load_seed(args.mappings)
    if not args.fetch:
        for ex in exchanges:
            for p in seed.get(ex, []):
                print(f"{ex}\t{p.product_id}\t{p.symbol}")
        return 0
    for ex in exchanges:
        source = make_source(ex, base_url=urls.get(ex), mappings_dir=args.mappings)
        products = source.list_products()
        if args.quote:
            products = [p for p in products if p.quote in {q.upper() for q in args.quote}]
        if args.limit:
            products = products[: args.limit]
        seed[ex] = products
        print(f"{ex}: {len(products)} online products" + ("" if args.write else " (not written; add --write)"))
        for p in products:
            print(f"  {p.product_id}\t{p.symbol}")
    if args.write:
        print(f"wrote {write_seed(seed, args.mappings)}")
    else:
        print(f"would write {seed_path(args.mappings)}")
    return 0


def cmd_ingest(args) -> int:
    from schemahub.ingest import ingest, load_seed, make_source, resolve_products
    from schemahub.landing import IngestOptions
    from schemahub.sources.spec import available_exchanges
    from schemahub.store import open_store

    urls = _base_urls(args.base_url)
    store = open_store(args.storage)  # a dry run only reads checkpoints
    seed = load_seed(args.mappings)
    exchanges = [args.exchange] if args.exchange else sorted(set(seed) & set(available_exchanges(args.mappings))) or ["coinbase"]
    opts = IngestOptions(since=args.since, dry_run=args.dry_run, resume=args.resume,
                         lease_ttl_s=args.lease_ttl, wait_for_lease_s=args.wait_lease)
    deadline = time.monotonic() + args.max_seconds if args.max_seconds else None
    progress = Progress(enabled=sys.stderr.isatty() and not args.dry_run)
    results = []
    for ex in exchanges:
        source = make_source(ex, base_url=urls.get(ex), mappings_dir=args.mappings)
        products = resolve_products(source, args.product if args.exchange or len(exchanges) == 1 else None, seed)
        results += ingest(store, source, products, opts, workers=args.workers, deadline=deadline, progress=progress)
    progress.done()
    return _report(results, args.json)


def _report(results, as_json: bool) -> int:
    if as_json:
        print(json.dumps([r.to_dict() for r in results], indent=1))
    else:
        for r in results:
            if r.status == "planned":
                print(f"{r.exchange}/{r.product_id}: plan {json.dumps(r.plan, sort_keys=True)}")
                continue
            more = "  (more to do)" if r.more_to_do else ""
            line = f"{r.exchange}/{r.product_id}: {r.status}  {r.trades} trades in {r.objects} objects  watermark {r.hi}{more}"
            if r.adopted:
                line += f"  adopted {r.adopted} from an earlier run"
            if r.message:
                line += f"  -- {r.message}"
            print(line)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        print(f"schemahub: error: {len(failed)} product(s) failed: " + "; ".join(f"{r.product_id}: {r.message}" for r in failed),
              file=sys.stderr)
        return 1
    return 0


def _start_sims(exchanges: list[str], products: dict[str, list[str]], *, live: float, host: str = "127.0.0.1",
                port: int = 0, faults=None) -> dict:
    """One simulator per exchange, anchored at DEMO_EPOCH (restarts serve the same history)."""
    from schemahub.sim import DEMO_EPOCH, SIMS, FaultPlan, default_books

    sims = {}
    for n, ex in enumerate(exchanges):
        books = default_books(products.get(ex) or None, live_per_s=live, epoch=DEMO_EPOCH, exchange=ex)
        sims[ex] = SIMS[ex](books, faults=FaultPlan(rates=dict(faults or {})))
        sims[ex].start(host, port + n if port else 0)
    return sims


def cmd_sim(args) -> int:
    from schemahub.ingest import load_seed
    from schemahub.sim import SIMS

    rates = {}
    for item in args.fault or []:
        kind, _, p = item.partition("=")
        rates[kind] = float(p or 0.05)
    exchanges = args.exchange or sorted(SIMS)
    seed = load_seed(args.mappings)
    products = {ex: (args.products.split(",") if args.products else [p.product_id for p in seed.get(ex, [])])
                for ex in exchanges}
    sims = _start_sims(exchanges, products, live=args.live, host=args.host, port=args.port, faults=rates)
    for ex, sim in sims.items():
        print(f"{ex} simulator listening on {sim.url}  (export SCHEMAHUB_{ex.upper()}_BASE_URL={sim.url})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        for sim in sims.values():
            sim.stop()
    return 0


def cmd_transform(args) -> int:
    from schemahub.store import open_store
    from schemahub.transform import Transformer

    store = open_store(args.storage)
    prefix = "raw/" + (f"{args.exchange}/" if args.exchange else "") + (f"{args.product}/" if args.exchange and args.product else "")
    deadline = time.monotonic() + args.max_seconds if args.max_seconds else None
    res = Transformer(store, mappings_dir=args.mappings).run(rebuild=args.all, dry_run=args.dry_run, prefix=prefix,
                                                             deadline=deadline)
    if args.dry_run:
        print(f"would transform {len(res.pending)} raw object(s)")
        for key in res.pending:
            print(f"  {key}")
        return 0
    print(f"transformed {res.objects} raw object(s): {res.rows:,} rows into {res.files} file(s), {res.quarantined:,} quarantined"
          + (f"; {len(res.pending)} left for the next run" if res.pending else ""))
    for name, agg in sorted(res.by_product.items()):
        print(f"  {name}: {agg['rows']:,} rows, {agg['quarantined']:,} quarantined")
    if res.quarantined:
        print(f"  quarantined rows and their reasons: {store.uri}/quarantine/")
    return 0


def _print_rows(columns: list[str], rows: list[tuple], fmt: str) -> None:
    import csv
    from decimal import Decimal

    if fmt == "json":
        def enc(v):
            return str(v) if isinstance(v, Decimal) else v.isoformat() if hasattr(v, "isoformat") else v
        print(json.dumps([{c: enc(v) for c, v in zip(columns, r)} for r in rows], indent=1, default=str))
    elif fmt == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(columns)
        w.writerows(rows)
    else:
        cells = [[("" if v is None else str(v)) for v in r] for r in rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
        print("  ".join("-" * w for w in widths))
        for r in cells:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
        print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


def cmd_query(args) -> int:
    import duckdb

    from schemahub.query import connect
    from schemahub.store import open_store

    con = connect(open_store(args.storage))
    try:
        cur = con.execute(args.sql)
    except duckdb.Error as e:
        raise SchemahubError(f"query failed: {str(e).splitlines()[0]}") from None
    _print_rows([d[0] for d in cur.description], cur.fetchall(), args.format)
    return 0


def cmd_stats(args) -> int:
    from schemahub.query import stats
    from schemahub.store import open_store

    out = stats(open_store(args.storage))
    cols = ["exchange", "product_id", "rows", "first_trade", "last_trade", "freshness_s", "raw_bytes", "curated_bytes",
            "compacted_bytes",
            "curated_to_raw", "bytes_per_trade"]
    _print_rows(cols, [tuple(r.get(c) for c in cols) for r in out], args.format)
    return 0


def cmd_compact(args) -> int:
    """Merge each closed product-day's files into one; readers switch per day, atomically."""
    from schemahub.compact import compact
    from schemahub.store import open_store

    before = date.fromisoformat(args.before) if getattr(args, "before", None) else None
    res = compact(open_store(args.storage), before=before, dry_run=args.dry_run,
                  exchange=getattr(args, "exchange", None), product_id=getattr(args, "product", None))
    if args.dry_run:
        print(f"would compact {len(res.planned)} product-day(s)")
        for p in res.planned:
            print(f"  {p}")
    else:
        print(f"compacted {res.partitions} product-day(s): {res.parts:,} files, {res.rows:,} rows "
              f"({res.skipped_open} still open)")
    return 0


def cmd_run(args) -> int:
    """One scheduled cycle: ingest every seeded product of every exchange, transform, compact closed days."""
    args.exchange, args.product, args.dry_run, args.json = None, None, False, False
    code = cmd_ingest(args)
    args.all, args.max_seconds = False, None
    code = cmd_transform(args) or code
    args.before = None
    return cmd_compact(args) or code


def cmd_demo(args) -> int:
    """Offline: simulate every seeded exchange, run a cycle into ./demo-data, print stats and queries."""
    from schemahub.ingest import ingest, load_seed, make_source
    from schemahub.landing import IngestOptions
    from schemahub.query import OHLCV_1M, VWAP_1M_ACROSS, connect
    from schemahub.sim import SIMS
    from schemahub.store import open_store

    args.storage = args.storage or "./demo-data"
    seed = {ex: ps for ex, ps in load_seed(args.mappings).items() if ex in SIMS and ps}
    store = open_store(args.storage)
    sims = _start_sims(sorted(seed), {ex: [p.product_id for p in ps] for ex, ps in seed.items()}, live=1.0)
    results = []
    try:
        for ex, sim in sims.items():
            print(f"== simulated {ex} API at {sim.url}")
        print("== ingest (exactly once, into raw/)")
        progress = Progress(enabled=sys.stderr.isatty())
        opts = IngestOptions(since=args.since)
        for ex, sim in sims.items():
            source = make_source(ex, base_url=sim.url, rate=200, mappings_dir=args.mappings)
            results += ingest(store, source, seed[ex], opts, workers=len(seed[ex]), progress=progress)
        progress.done()
    finally:
        for sim in sims.values():
            sim.stop()
    code = _report(results, False)
    print("== transform (raw/ -> curated/ Parquet)")
    args.exchange = args.product = None
    args.all = args.dry_run = False
    args.max_seconds = None
    cmd_transform(args)
    print("== stats")
    args.format = "table"
    cmd_stats(args)
    con = connect(store)
    ex, product = ("coinbase", "BTC-USD") if "coinbase" in seed else (sorted(seed)[0], seed[sorted(seed)[0]][0].product_id)
    print(f"== 1-minute OHLCV, {ex} {product}, last 5 minutes (DuckDB over {store.uri}/curated)")
    cur = con.execute(OHLCV_1M.format(exchange=ex, product=product, minutes=5))
    _print_rows([d[0] for d in cur.description], cur.fetchall(), "table")
    print("== one table: BTC 1-minute VWAP on every exchange, side by side, last 5 minutes")
    cur = con.execute(VWAP_1M_ACROSS.format(base="BTC", minutes=5))
    _print_rows([d[0] for d in cur.description], cur.fetchall(), "table")
    print(f"try: .venv/bin/schemahub query --storage {args.storage} "
          "\"select exchange, product_id, count(*), sum(price*size) from trades group by all order by all\"")
    return code


def _ingest_options(s: argparse.ArgumentParser) -> None:
    """Options shared by `ingest` and `run`."""
    s.add_argument("--since", type=_since, help="first run: first trade time to land; later: backfill down to it")
    s.add_argument("--workers", type=int, default=4, help="products ingested in parallel (default 4)")
    s.add_argument("--resume", action="store_true", help="only continue products that already have a checkpoint")
    s.add_argument("--max-seconds", type=float, help="stop cleanly at a page boundary after this long")
    s.add_argument("--lease-ttl", type=float, default=60.0, help="seconds a product lease lasts between renewals")
    s.add_argument("--wait-lease", type=float, default=0.0, help="wait up to this long for a held lease (default: skip)")


def cmd_repair_checkpoint(args) -> int:
    from schemahub.landing.repair import repair_checkpoint
    from schemahub.store import open_store

    print(repair_checkpoint(open_store(args.storage), args.exchange, args.product, dry_run=args.dry_run).report())
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--storage", help="PATH or s3://bucket/prefix (default: $SCHEMAHUB_STORAGE or ./data)")
    common.add_argument("--mappings", help="mappings folder (default: $SCHEMAHUB_MAPPINGS or the repo's mappings/)")
    common.add_argument("--base-url", action="append", metavar="EXCHANGE=URL",
                        help="talk to another host for that exchange (also SCHEMAHUB_<EXCHANGE>_BASE_URL)")
    common.add_argument("--verbose", "-v", action="store_true", help="debug logs and tracebacks")

    p = argparse.ArgumentParser(prog="schemahub", description="Exact, gap-free crypto trades in one table.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("update-seed", parents=[common], help="build the product list from the exchange's listing")
    s.add_argument("--exchange")
    s.add_argument("--fetch", action="store_true", help="fetch the listing (otherwise print the current seed)")
    s.add_argument("--write", action="store_true", help="write mappings/product_ids_seed.yaml")
    s.add_argument("--quote", action="append", help="keep only these quote currencies (repeatable)")
    s.add_argument("--limit", type=int, help="keep at most N products")
    s.set_defaults(func=cmd_update_seed)

    s = sub.add_parser("ingest", parents=[common], help="land new trades exactly once into raw/")
    s.add_argument("--exchange")
    s.add_argument("--product", action="append", help="unified product id (BTC-USD) or the exchange's symbol; repeatable")
    _ingest_options(s)
    s.add_argument("--dry-run", action="store_true", help="write nothing; print the plan")
    s.add_argument("--json", action="store_true", help="print results as JSON")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("transform", parents=[common], help="turn new raw objects into curated Parquet")
    s.add_argument("--exchange")
    s.add_argument("--product", help="with --exchange: only this product (unified id)")
    s.add_argument("--all", action="store_true", help="rebuild every raw object, not just new ones")
    s.add_argument("--dry-run", action="store_true", help="write nothing; list what would be transformed")
    s.add_argument("--max-seconds", type=float, help="stop after this long; the rest is done next run")
    s.set_defaults(func=cmd_transform)

    s = sub.add_parser("query", parents=[common], help="run SQL over the `trades` view (DuckDB)")
    s.add_argument("sql")
    s.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s.set_defaults(func=cmd_query)

    s = sub.add_parser("stats", parents=[common], help="rows, time range, freshness and sizes per product")
    s.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s.set_defaults(func=cmd_stats)

    s = sub.add_parser("run", parents=[common], help="one scheduled cycle: ingest every seeded product, then transform")
    _ingest_options(s)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("compact", parents=[common], help="merge each closed product-day into one file, for faster queries")
    s.add_argument("--before", help="compact days before this UTC date, YYYY-MM-DD (default: today)")
    s.add_argument("--exchange")
    s.add_argument("--product", help="with --exchange: only this product (unified id)")
    s.add_argument("--dry-run", action="store_true", help="list the product-days it would compact")
    s.set_defaults(func=cmd_compact)

    s = sub.add_parser("repair-checkpoint", parents=[common], help="rebuild a product's checkpoint from its raw chain")
    s.add_argument("--exchange", required=True)
    s.add_argument("--product", required=True, help="unified product id (BTC-USD)")
    s.add_argument("--dry-run", action="store_true", help="write nothing; print the checkpoint it would write")
    s.set_defaults(func=cmd_repair_checkpoint)

    s = sub.add_parser("demo", parents=[common], help="offline: simulators -> run -> stats and queries, in ./demo-data")
    s.add_argument("--since", type=_since, help="first trade time to land (default: each mapping's first_run_lookback)")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("sim", help="run the offline exchange simulators")
    s.add_argument("--exchange", action="append", help="only this exchange (repeatable; default: every one)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8765, help="first port; the next exchanges take the ports after it")
    s.add_argument("--mappings", help="mappings folder whose seed names the products")
    s.add_argument("--products", help="comma-separated product ids for every exchange (default: the seed's)")
    s.add_argument("--live", type=float, default=1.0, help="trades per second per product (they have flowed since 2026-11-01)")
    s.add_argument("--fault", action="append", metavar="KIND=P", help="inject a fault with probability P (e.g. 429=0.05)")
    s.set_defaults(func=cmd_sim, verbose=False)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(getattr(args, "verbose", False))
    try:
        return args.func(args)
    except (SchemahubError, ValueError, OSError) as e:
        if args.verbose:
            traceback.print_exc()
        print(f"schemahub: error: {e}".splitlines()[0] if "\n" not in str(e) else f"schemahub: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
