"""The schemahub command line: a thin shell over the core library."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
import threading
import time
import traceback
from datetime import date, datetime, timezone

from schemahub import logs, settings
from schemahub.errors import ConfigError, SchemahubError, UsageError
from schemahub.layout import PRODUCT_ID, raw_prefix
from schemahub.memory import tune_allocator

log = logging.getLogger("schemahub.cli")


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (exit 2) like every other usage error."""

    def error(self, message: str):
        option, _, rest = message.partition(": ")
        if option.startswith("argument ") and rest.startswith(option.removeprefix("argument ").split("/")[0]):
            message = rest  # our checks already name the option
        self.exit(2, f"schemahub: error: {message} (see `{self.prog} --help`)\n")


def _arg(check):
    """An argparse type from a settings check: its UsageError becomes argparse's error, naming the option."""
    def convert(text: str):
        try:
            return check(text)
        except UsageError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return convert


def _since(text: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--since {text!r} is not ISO-8601 (e.g. 2026-11-28T00:00:00Z)") from None
    ts = ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
    if ts > datetime.now(timezone.utc):
        raise argparse.ArgumentTypeError(f"--since {text!r} is in the future: give a past time (UTC), or leave it "
                                         "out to start at each mapping's first_run_lookback")
    return ts


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--before {text!r} is not a date like 2026-11-28") from None


def _day_of(option: str):
    def parse(text: str) -> date:
        try:
            return date.fromisoformat(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} {text!r} is not a date like 2026-11-28") from None
    return parse


def _code(text: str) -> str:
    if not PRODUCT_ID.match(f"{text.strip().upper()}-X"):
        raise argparse.ArgumentTypeError(f"--quote {text!r} is not an asset code (letters and digits, e.g. USD)")
    return text.strip().upper()


def _mappings_folder(path: str, name: str) -> str:
    if not path or not str(path).strip():
        raise UsageError(f"{name} is empty: give a mappings folder, or leave it out for the shipped one")
    if not os.path.isdir(os.path.join(path, "exchanges")):
        what = "does not exist" if not os.path.exists(path) else "has no exchanges/ folder"
        raise UsageError(f"{name} {path!r} {what}: give a folder laid out like the repo's mappings/")
    return path


_positive = {
    "--max-seconds": _arg(lambda t: settings.positive_number(t, "--max-seconds")),
    "--lease-ttl": _arg(lambda t: settings.positive_number(t, "--lease-ttl", maximum=86400)),
    "--wait-lease": _arg(lambda t: settings.positive_number(t, "--wait-lease", zero_ok=True, maximum=86400)),
    "--workers": _arg(lambda t: settings.positive_int(t, "--workers", maximum=256)),
    "--limit": _arg(lambda t: settings.positive_int(t, "--limit")),
    "--port": _arg(lambda t: settings.positive_int(t, "--port", zero_ok=True, maximum=65535)),
    "--live": _arg(lambda t: settings.positive_number(t, "--live", zero_ok=True, maximum=100_000)),
    "--watch": _arg(lambda t: settings.positive_number(t, "--watch", maximum=86400)),
}


def _base_urls(pairs: list[str], known: list[str]) -> dict[str, str]:
    """--base-url EXCHANGE=URL values; an exchange without a mapping is an error, never ignored."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        ex, sep, url = pair.partition("=")
        ex = ex.strip().lower()
        if not sep or not ex or not url.strip():
            raise UsageError(f"--base-url {pair!r}: expected EXCHANGE=URL (e.g. coinbase=http://127.0.0.1:8765)")
        if ex not in known and not (ex.endswith("-archive") and ex.removesuffix("-archive") in known):
            raise UsageError(f"--base-url {pair!r}: no exchange {ex!r} (known: {', '.join(known) or 'none'}); "
                             "EXCHANGE-archive=URL points an exchange's archive files elsewhere")
        url = settings.http_url(url, f"--base-url {ex}=")
        if out.get(ex, url) != url:
            raise UsageError(f"--base-url gives two URLs for {ex}: {out[ex]} and {url}; keep one")
        out[ex] = url
    return out


def _known_exchange(name: str | None, known: list[str], option: str = "--exchange") -> str | None:
    if name is None:
        return None
    if name.strip().lower() not in known:
        raise UsageError(f"{option} {name!r}: unknown exchange {name!r} (known: {', '.join(known) or 'none'})")
    return name.strip().lower()


def _ingest_plan(args, seed: dict, known: list[str]) -> list[tuple[str, list[str] | None]]:
    """Which exchanges to ingest, and which --product values each gets (None: its seeded products).

    --product without --exchange picks the one exchange whose seed has the product, or refuses if none or
    several do: it never means "every product of every exchange".
    """
    exchange = _known_exchange(args.exchange, known)
    if exchange:
        return [(exchange, args.product)]
    if args.product:
        chosen: dict[str, list[str]] = {}
        for name in args.product:
            having = sorted(ex for ex, prods in seed.items() if ex in known and any(
                name.upper() in (p.product_id.upper(), p.symbol.upper()) for p in prods))
            if not having:
                raise UsageError(f"--product {name!r} is not in the seed of any exchange: add --exchange E "
                                 f"(then E's listing is asked; known: {', '.join(known)})")
            if len(having) > 1:
                raise UsageError(f"--product {name!r} is seeded on {' and '.join(having)}: add --exchange to pick one")
            chosen.setdefault(having[0], []).append(name)
        return sorted(chosen.items())
    seeded = sorted(ex for ex, prods in seed.items() if prods and ex in known)
    if not seeded:
        raise ConfigError(f"no products seeded in {_seed_file(args)}: pass --exchange E --product P, or run "
                          "`schemahub update-seed --exchange E --fetch --write`")
    return [(ex, None) for ex in seeded]


def _seed_file(args) -> str:
    from schemahub.ingest import seed_path

    return str(seed_path(args.mappings))


def _table_product(args, store, known: list[str]) -> tuple[str | None, str | None]:
    """(exchange, product) for transform and compact; --product alone picks the one exchange that has it in raw/."""
    exchange = _known_exchange(getattr(args, "exchange", None), known)
    product = getattr(args, "product", None)
    if product is None:
        return exchange, None
    product = product.strip().upper()
    if not PRODUCT_ID.match(product):
        raise UsageError(f"--product {args.product!r} is not a unified product id (BASE-QUOTE, e.g. BTC-USD)")
    if exchange:
        return exchange, product
    having = [ex for ex in known if next(iter(store.list(raw_prefix(ex, product))), None) is not None]
    if len(having) != 1:
        where = "no exchange has" if not having else f"{' and '.join(having)} have"
        raise UsageError(f"--product {product}: {where} raw objects for it in {store.uri}: add --exchange")
    return having[0], product


class _Interruptible:
    """Ctrl-C during an ingest: the first stops every exchange at an object boundary (the objects in flight land
    or are dropped whole), the second exits at once. Both end in exit code 130."""

    def __init__(self, clock, model=None, display=None) -> None:
        self.clock = clock
        self.model, self.display = model, display
        self.old = None

    def __enter__(self):
        import signal

        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)

    def _on_sigint(self, signum, frame) -> None:
        if self.clock.stopped:
            sys.stderr.write("\nschemahub: interrupted again: exiting now; a rerun continues from the last "
                             "checkpoint (an object being written is never half-landed)\n")
            sys.stderr.flush()
            os._exit(130)
        self.clock.stop("interrupted (Ctrl-C)")
        if self.model is not None:
            self.model.stopping = True
        text = "\nschemahub: stopping: landing the objects in flight (Ctrl-C again to quit at once)\n"
        if self.display is not None:
            self.display.say(text)
        else:
            sys.stderr.write(text)
            sys.stderr.flush()


class _counting:
    """Objects done of a total on a terminal (transform, compact); nothing elsewhere or when not shown."""

    def __init__(self, what: str, unit: str, show: bool = True) -> None:
        from schemahub.progress import CountProgress, Display

        self.model = CountProgress(what, unit)
        self.display = Display(self.model) if show and sys.stderr.isatty() else None

    def __enter__(self):
        if self.display:
            self.display.__enter__()
        return self.model

    def __exit__(self, *exc) -> None:
        if self.display:
            self.model(self.model.total, self.model.total)
            self.display.close()


def _ingest_run(store, jobs, opts, *, workers: int, deadline, clock, show: bool, on_landed=None):
    """The CLI's ingest (ingest, run, demo): every exchange at once, progress lines, Ctrl-C handled."""
    from schemahub.ingest import ingest_exchanges
    from schemahub.progress import Display, IngestProgress

    model = IngestProgress({src.exchange: [p.product_id for p in prods] for src, prods in jobs}, clock)
    # Off a terminal, plain lines every 30 s, unless stderr carries JSON log lines only.
    show = show and (sys.stderr.isatty() or settings.log_format() != "json")
    display = Display(model) if show else None
    with _Interruptible(clock, model, display):
        if display:
            display.__enter__()
        try:
            return ingest_exchanges(store, jobs, opts, workers=workers, deadline=deadline, progress=model,
                                    clock=clock, on_landed=on_landed)
        finally:
            if display:
                display.close()


def _known(args) -> list[str]:
    from schemahub.sources.spec import available_exchanges

    return available_exchanges(args.mappings)


def _well_formed(exchange: str, products: list) -> list:
    """The listing's products whose id matches layout.PRODUCT_ID, once each; a warning line names every other one."""
    kept, seen, skipped = [], {}, 0
    for p in products:
        if not PRODUCT_ID.match(p.product_id):
            print(f"schemahub: warning: {exchange} lists {p.symbol!r} as product id {p.product_id!r}, which is not "
                  "BASE-QUOTE in upper-case letters and digits: skipped", file=sys.stderr)
        elif p.product_id in seen:
            print(f"schemahub: warning: {exchange} lists {p.symbol!r} and {seen[p.product_id]!r} as the same product "
                  f"{p.product_id}: kept {seen[p.product_id]!r}, skipped {p.symbol!r}", file=sys.stderr)
        else:
            seen[p.product_id] = p.symbol
            kept.append(p)
            continue
        skipped += 1
    if skipped:
        print(f"schemahub: warning: {exchange}: skipped {skipped} of {len(products)} listed product(s)", file=sys.stderr)
    return kept


def cmd_update_seed(args) -> int:
    from schemahub.ingest import load_seed, make_source, seed_path, write_seed

    known = _known(args)
    urls = _base_urls(args.base_url, known)
    exchanges = [_known_exchange(args.exchange, known)] if args.exchange else known
    if args.write and not args.fetch:
        raise UsageError("--write needs --fetch (the seed is written from the exchanges' listings)")
    seed = load_seed(args.mappings)
    if not args.fetch:
        for ex in exchanges:
            for p in seed.get(ex, []):
                print(f"{ex}\t{p.product_id}\t{p.symbol}")
        return 0
    for ex in exchanges:
        source = make_source(ex, base_url=urls.get(ex), mappings_dir=args.mappings)
        products = _well_formed(ex, source.list_products())
        if args.quote:
            products = [p for p in products if p.quote in set(args.quote)]
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


def cmd_ingest(args, on_landed=None) -> int:
    from schemahub.clock import StoppableClock
    from schemahub.ingest import load_seed, make_source, resolve_products
    from schemahub.landing import IngestOptions
    from schemahub.store import open_store

    known = _known(args)
    urls = _base_urls(args.base_url, known)
    seed = load_seed(args.mappings)
    plan = _ingest_plan(args, seed, known)
    store = open_store(args.storage)  # a dry run only reads checkpoints
    opts = IngestOptions(since=args.since, dry_run=args.dry_run, resume=args.resume,
                         lease_ttl_s=args.lease_ttl, wait_for_lease_s=args.wait_lease)
    deadline = time.monotonic() + args.max_seconds if args.max_seconds else None
    clock = StoppableClock()
    sources = [(make_source(ex, base_url=urls.get(ex), mappings_dir=args.mappings, clock=clock,
                            archive_url=urls.get(f"{ex}-archive")), wanted)
               for ex, wanted in plan]
    jobs = [(source, resolve_products(source, wanted, seed)) for source, wanted in sources]
    results = _ingest_run(store, jobs, opts, workers=args.workers, deadline=deadline, clock=clock,
                          show=not args.dry_run and not args.json, on_landed=on_landed)
    code = _report(results, args.json)
    return _interrupted(results) if clock.stopped else code


def _interrupted(results) -> int:
    landed = sum(r.trades for r in results)
    print(f"schemahub: interrupted: {landed:,} trades landed in this run, every object whole; a rerun continues "
          "from each product's checkpoint", file=sys.stderr)
    return 130


def _when(us: int | None, now: datetime | None = None) -> str:
    """2026-12-01 23:10:04 UTC (3 s behind)."""
    from schemahub.progress import duration

    if us is None:
        return "nothing landed yet"
    t = datetime.fromtimestamp(us / 1e6, timezone.utc)
    behind = ((now or datetime.now(timezone.utc)) - t).total_seconds()
    return f"up to {t:%Y-%m-%d %H:%M:%S} UTC ({duration(max(0.0, behind))} behind)"


def result_line(r, now: datetime | None = None) -> str:
    """One product's outcome for a person: trades landed and up to when, never a raw cursor."""
    if r.status == "planned":
        return f"{r.exchange} {r.product_id}: plan {json.dumps(r.plan, sort_keys=True)}"
    what = {"ok": "", "skipped": "skipped, ", "failed": "FAILED, "}.get(r.status, f"{r.status}, ")
    line = f"{r.exchange} {r.product_id}: {what}{r.trades:,} trades landed, {_when(r.newest_us, now)}"
    if r.more_to_do:
        line += ", more to do"
    if r.adopted:
        line += f"; adopted {r.adopted} object(s) from an earlier run"
    if getattr(r, "archive_objects", 0):
        line += f"; {r.archive_objects} object(s) cut from the exchange's archive files"
    if r.message:
        line += f" -- {r.message}"
    return line


def _report(results, as_json: bool) -> int:
    if as_json:
        print(json.dumps([r.to_dict() for r in results], indent=1))
    else:
        for r in results:
            print(result_line(r))
    failed = [r for r in results if r.status == "failed"]
    replaced = [(r, f) for r in results for f in getattr(r, "replaced", None) or []]
    if replaced:  # an archive file changed after it landed: the run did its work, but someone must look
        print(f"schemahub: error: {len(replaced)} archive file(s) replaced by the exchange after they landed "
              "(kept as landed, the new files not mixed in): " + "; ".join(
                  f"{r.exchange}/{r.product_id}: {f['file']}" for r, f in replaced), file=sys.stderr)
    if failed:
        # The first reason in full; the others only by name: each product's own line above says why (offline, nine
        # products fail alike, and nine reasons again made one unreadable line).
        more = ", ".join(f"{r.exchange} {r.product_id}" for r in failed[1:])
        print(f"schemahub: error: {len(failed)} product(s) failed: {failed[0].product_id}: {failed[0].message}"
              + (f"; also {more} (each one's line above says why)" if more else ""), file=sys.stderr)
        return 1
    return 1 if replaced else 0


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


def _faults(items: list[str] | None) -> dict[str, float]:
    from schemahub.sim.base import FAULTS

    rates = {}
    for item in items or []:
        kind, _, p = item.partition("=")
        if kind not in FAULTS:
            raise UsageError(f"--fault {item!r}: unknown fault {kind!r} (known: {', '.join(FAULTS)})")
        rate = settings.positive_number(p or "0.05", f"--fault {kind}=", zero_ok=True, maximum=1)
        rates[kind] = rate
    return rates


def cmd_sim(args) -> int:
    from schemahub.ingest import load_seed
    from schemahub.sim import SIMS

    rates = _faults(args.fault)
    for ex in args.exchange or []:
        _known_exchange(ex, sorted(SIMS))
    exchanges = args.exchange or sorted(SIMS)
    products = None
    if args.products is not None:
        products = [p.strip().upper() for p in args.products.split(",")]
        bad = [p for p in products if not PRODUCT_ID.match(p)]
        if bad:
            raise UsageError(f"--products {args.products!r}: {', '.join(map(repr, bad))} not BASE-QUOTE (e.g. BTC-USD)")
    seed = load_seed(args.mappings)
    products = {ex: (products or [p.product_id for p in seed.get(ex, [])]) for ex in exchanges}
    try:
        sims = _start_sims(exchanges, products, live=args.live, host=args.host, port=args.port, faults=rates)
    except OSError as e:
        if e.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise
        span = f"ports {args.port}-{args.port + len(exchanges) - 1}" if args.port and len(exchanges) > 1 else \
            f"port {args.port}"
        raise UsageError(f"sim: cannot listen on {args.host} {span} ({e.strerror}): pass another --port "
                         "(0 picks free ones)") from None
    try:
        for ex, sim in sims.items():
            print(f"{ex} simulator listening on {sim.url}", file=sys.stderr)
            if getattr(sim, "archive", None) is not None:
                print(f"{ex} archive files on the same server: {sim.url}/data/spot/  (they follow the base URL, or "
                      f"export SCHEMAHUB_{ex.upper()}_ARCHIVE_URL={sim.url})", file=sys.stderr)
        print("paste the export lines into the shell that runs schemahub; Ctrl-C stops the simulators",
              file=sys.stderr, flush=True)
        # stdout holds the export lines only, together: they paste into another shell as one block.
        print("\n".join(f"export SCHEMAHUB_{ex.upper()}_BASE_URL={sim.url.rstrip('/')}" for ex, sim in sims.items()),
              flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how a simulator stops: quietly, exit 0
    finally:
        for sim in sims.values():
            sim.stop()


def cmd_transform(args, before=None) -> int:
    """before: what was transformed as it landed (run), counted with this pass's objects."""
    from schemahub.store import open_store
    from schemahub.transform import Transformer

    store = open_store(args.storage)
    exchange, product = _table_product(args, store, _known(args))
    prefix = raw_prefix(exchange, product)
    deadline = time.monotonic() + args.max_seconds if args.max_seconds else None
    with _counting("transform", "raw objects", show=not args.dry_run) as progress:
        res = Transformer(store, mappings_dir=args.mappings).run(rebuild=args.all, dry_run=args.dry_run, prefix=prefix,
                                                                 deadline=deadline, progress=progress)
    if before is not None:
        res.merge(before)
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
    if res.duplicates:
        print(f"  {res.duplicates:,} repeated trade(s) kept once (raw keeps every copy)")
    for key in res.stray:
        print(f"  ignored {key}: not a raw object key; move it out of raw/", file=sys.stderr)
    for key, reason in sorted(res.damaged.items()):
        print(f"error: {key}: damaged, set aside ({reason}); restore it from a copy or delete it, then transform "
              "again", file=sys.stderr)
    for key, reason in sorted(res.failed.items()):
        print(f"error: {key}: not transformed: {reason}", file=sys.stderr)
    return 0 if res.ok else 1


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
        from schemahub.output import plain_decimal

        cells = [[("" if v is None else plain_decimal(v) if isinstance(v, Decimal) else str(v)) for v in r] for r in rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
        right = [bool(rows) and all(isinstance(r[i], int | float | Decimal) and not isinstance(r[i], bool)
                                    for r in rows if r[i] is not None) for i in range(len(columns))]
        print("  ".join(c.rjust(w) if a else c.ljust(w) for c, w, a in zip(columns, widths, right)).rstrip())
        print("  ".join("-" * w for w in widths))
        for r in cells:
            print("  ".join(v.rjust(w) if a else v.ljust(w) for v, w, a in zip(r, widths, right)).rstrip())
        print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


# ------------------------------------------------------------------ query, export, candles (schemahub.output streams)

def cmd_query(args) -> int:
    """SQL over `trades` (and the candles macro), streamed in record batches: constant memory for any result."""
    from schemahub.api import Lake
    from schemahub.output import query_batches, write

    lake = Lake(args.storage, mappings=args.mappings)
    write(query_batches(lake.connection, args.sql), args.format)
    _hint_if_empty(lake, args.sql)
    return 0


def cmd_export(args) -> int:
    from schemahub.api import Lake
    from schemahub.output import format_for, query_batches, write

    fmt = format_for(args.output, args.format)
    lake = Lake(args.storage, mappings=args.mappings)
    n = write(query_batches(lake.connection, args.sql), fmt, args.output)
    print(f"wrote {n:,} rows to {args.output} ({fmt})")
    _hint_if_empty(lake, args.sql)
    return 0


def cmd_candles(args) -> int:
    from schemahub.api import Lake
    from schemahub.output import format_for, write

    # Into a file, the name says the format (as for `export`) unless --format does; on stdout, a table.
    fmt = format_for(args.output, args.format) if args.output else args.format or "table"
    lake = Lake(args.storage, mappings=args.mappings)
    bars = lake.candles(args.interval, exchange=args.exchange, product=args.product, start=args.start, end=args.end)
    write(bars.to_reader(), fmt, args.output)
    _hint_if_empty(lake)
    return 0


def _hint_if_empty(lake, sql: str | None = None) -> None:
    """One line on stderr when the storage folder has no table yet: where the data probably is, or how to get some
    (for SQL, only if it reads `trades` or `candles`: `SELECT 1` needs no data)."""
    import re

    if sql is not None and not re.search(r"\b(trades|candles)\b", sql, re.IGNORECASE):
        return
    hint = lake.empty_hint()
    if hint:
        print(f"schemahub: {hint}", file=sys.stderr)


def _query_commands(sub, common) -> None:
    from schemahub.candles import INTERVALS
    from schemahub.output import FORMATS

    s = sub.add_parser("query", parents=[common], help="run SQL over the `trades` view and `candles(...)` (DuckDB)")
    s.add_argument("sql")
    s.add_argument("--format", choices=FORMATS, default="table", help="table (default), csv, json, parquet (piped)")
    s.set_defaults(func=cmd_query)

    s = sub.add_parser("export", parents=[common], help="write a query's result to a Parquet, CSV or JSON file, streamed")
    s.add_argument("sql")
    s.add_argument("--output", "-o", required=True, help="FILE.parquet, FILE.csv or FILE.json")
    s.add_argument("--format", choices=FORMATS[1:], help="override the format the file name implies")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("candles", parents=[common], help="OHLCV bars of one product (or all), exact decimals")
    s.add_argument("--exchange")
    s.add_argument("--product", help="unified product id (BTC-USD) or the exchange's symbol")
    s.add_argument("--interval", choices=list(INTERVALS), default="1m")
    s.add_argument("--start", help="first trade time, inclusive (ISO-8601 date or time, UTC)")
    s.add_argument("--end", help="end, exclusive (ISO-8601 date or time, UTC)")
    s.add_argument("--format", choices=FORMATS, help="table (default on stdout), csv, json, parquet; with --output, "
                   "the file name's ending (.parquet, .csv, .json) unless given")
    s.add_argument("--output", "-o", help="write to this file instead of stdout")
    s.set_defaults(func=cmd_candles)


def cmd_stats(args) -> int:
    """Per product, plus quarantined rows; the table adds a totals row and human-readable sizes (CSV/JSON exact).

    --watch S: again every S seconds until Ctrl-C (exit 0): redrawn in place on a terminal, else repeated blocks."""
    from schemahub.api import Lake, stats_for_people
    from schemahub.output import write

    lake = Lake(args.storage, mappings=args.mappings)

    def table():
        stats = lake.stats()
        return (stats_for_people(stats) if args.format == "table" else stats).to_reader()

    every = getattr(args, "watch", None)  # `demo` prints the stats once
    if every is None:
        write(table(), args.format)
        _hint_if_empty(lake)
        return 0
    return _watch(lake, table, args.format, every)


def _watch(lake, table, fmt: str, every: float) -> int:
    import io

    import duckdb

    from schemahub.output import render, write

    tty = sys.stdout.isatty()
    try:
        while True:
            now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            head = f"schemahub stats: {lake.store.uri}, every {every:g} s, {now} UTC (Ctrl-C stops)\n\n"
            if tty:  # the whole frame at once, over the last one: no flicker, no scrolling
                frame = io.StringIO()
                render(table(), fmt, frame)
                sys.stdout.write("\x1b[H\x1b[2J" + head + frame.getvalue())
            else:
                sys.stdout.write(head)
                write(table(), fmt)
                sys.stdout.write("\n")
            sys.stdout.flush()
            time.sleep(every)
    except (KeyboardInterrupt, duckdb.InterruptException):
        return 0  # Ctrl-C is how --watch ends: quietly, exit 0
    except RuntimeError as e:
        if not _ctrl_c_in_duckdb(e):
            raise
        return 0


def _ctrl_c_in_duckdb(e: BaseException) -> bool:
    """Ctrl-C during a DuckDB call comes back as DuckDB's error, not KeyboardInterrupt: InterruptException, or
    (duckdb 2.0, from `con.execute("SET ...")`) a bare RuntimeError('Query interrupted')."""
    import duckdb

    return isinstance(e, duckdb.InterruptException) or (type(e) is RuntimeError and str(e) == "Query interrupted")


def cmd_serve(args) -> int:
    """The live status page and its JSON on 127.0.0.1 (schemahub.web), until Ctrl-C (then exit 0, quietly)."""
    from schemahub.api import Lake
    from schemahub.web.server import StatusServer

    store = Lake(args.storage, mappings=args.mappings).store  # a storage folder that does not exist is an error
    server = StatusServer(store, port=args.port, fresh_s=args.fresh, stale_s=args.stale)
    print(f"schemahub status page for {server.store.uri} on {server.url}  (JSON: {server.url}api/stats; Ctrl-C stops)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        return 0
    finally:
        server.httpd.server_close()
    return 0


def cmd_compact(args) -> int:
    """Merge each closed product-day's files into one; readers switch per day, atomically."""
    from schemahub.pipeline import compact_closed
    from schemahub.store import open_store

    store = open_store(args.storage)
    exchange, product = _table_product(args, store, _known(args))
    with _counting("compact", "product-days", show=not args.dry_run) as progress:
        res = compact_closed(store, before=getattr(args, "before", None), dry_run=args.dry_run, exchange=exchange,
                             product_id=product, progress=progress)
    if args.dry_run:
        print(f"would compact {len(res.planned)} product-day(s)")
        for p in res.planned:
            print(f"  {p}")
    else:
        print(f"compacted {res.partitions} product-day(s): {res.parts:,} files, {res.rows:,} rows "
              f"({res.skipped_open} still open)")
        if res.catalog:
            print("catalog: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in res.catalog.items()))
    return 0


def cmd_run(args) -> int:
    """One scheduled cycle: ingest every seeded product of every exchange, transform, compact closed days."""
    from schemahub.pipeline import TransformAsLanded
    from schemahub.store import open_store
    from schemahub.transform import Transformer

    args.exchange, args.product, args.dry_run, args.json = None, None, False, False
    # Each object is transformed as it lands (as S3 events do on AWS); the transform pass after ingest does the
    # rest (objects of earlier runs, any that failed here) and reports the whole.
    early = TransformAsLanded(Transformer(open_store(args.storage), mappings_dir=args.mappings),
                              workers=min(4, os.cpu_count() or 1))
    try:
        code = cmd_ingest(args, on_landed=early)
    finally:
        done = early.close(cancel=True)  # after Ctrl-C: the transforms under way end whole, the rest wait
    if code == 130:
        return code  # interrupted: transform and compact wait for the next run
    args.all, args.max_seconds = False, None
    code = cmd_transform(args, before=done) or code
    args.before = None
    return cmd_compact(args) or code


def cmd_demo(args) -> int:
    """Offline: simulate every seeded exchange, run a cycle into ./demo-data, print stats and queries."""
    from schemahub.clock import StoppableClock
    from schemahub.ingest import load_seed, make_source
    from schemahub.landing import IngestOptions
    from schemahub.query import OHLCV_1M, VWAP_1M_ACROSS, connect
    from schemahub.sim import SIMS
    from schemahub.store import open_store

    args.storage = args.storage or "./demo-data"
    seed = {ex: ps for ex, ps in load_seed(args.mappings).items() if ex in SIMS and ps}
    store = open_store(args.storage)
    sims = _start_sims(sorted(seed), {ex: [p.product_id for p in ps] for ex, ps in seed.items()}, live=1.0)
    clock = StoppableClock()
    try:
        for ex, sim in sims.items():
            print(f"== simulated {ex} API at {sim.url}")
        print("== ingest (exactly once, into raw/)", flush=True)
        jobs = [(make_source(ex, base_url=sim.url, rate=200, mappings_dir=args.mappings, clock=clock), seed[ex])
                for ex, sim in sims.items()]
        results = _ingest_run(store, jobs, IngestOptions(since=args.since), workers=max(map(len, seed.values())),
                              deadline=None, clock=clock, show=True)
    finally:
        for sim in sims.values():
            sim.stop()
    code = _report(results, False)
    if clock.stopped:
        return _interrupted(results)
    print("== transform (raw/ -> curated/ Parquet)")
    args.exchange = args.product = None
    args.all = args.dry_run = False
    args.max_seconds = None
    cmd_transform(args)
    print("== compact (each closed product-day into one file)")
    args.before = None
    cmd_compact(args)
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
    print(f"try: {_invoked_as()} query --storage {args.storage} "
          "\"select exchange, product_id, count(*), sum(price*size) from trades group by all order by all\"")
    return code


def _invoked_as(argv0: str | None = None) -> str:
    """How the user can run this command again from where they are: `schemahub` when that is the one on PATH,
    else the path they ran (`.venv/bin/schemahub` from `make demo`), else `python -m schemahub.cli`."""
    import shlex
    import shutil

    argv0 = argv0 if argv0 is not None else sys.argv[0]
    if os.path.basename(argv0) != "schemahub":
        return f"{shlex.quote(sys.executable)} -m schemahub.cli"
    on_path = shutil.which("schemahub")
    if on_path and os.path.realpath(on_path) == os.path.realpath(argv0):
        return "schemahub"
    return shlex.quote(argv0 if os.sep in argv0 else os.path.abspath(argv0))


def _ingest_options(s: argparse.ArgumentParser) -> None:
    """Options shared by `ingest` and `run`."""
    s.add_argument("--since", type=_since, help="first run: first trade time to land; later: backfill down to it")
    s.add_argument("--workers", type=_positive["--workers"], default=4, help="products ingested in parallel (default 4)")
    s.add_argument("--resume", action="store_true", help="only continue products that already have a checkpoint")
    s.add_argument("--max-seconds", type=_positive["--max-seconds"], help="stop cleanly at a page boundary after this long")
    s.add_argument("--lease-ttl", type=_positive["--lease-ttl"], default=60.0, help="seconds a product lease lasts between renewals")
    s.add_argument("--wait-lease", type=_positive["--wait-lease"], default=0.0, help="wait up to this long for a held lease (default: skip)")


def cmd_repair_checkpoint(args) -> int:
    from schemahub.landing.repair import repair_checkpoint
    from schemahub.store import open_store

    print(repair_checkpoint(open_store(args.storage), args.exchange, args.product, dry_run=args.dry_run).report())
    return 0


def cmd_audit(args) -> int:
    """Per product and UTC day: rows, ids, holes classified; reports under audit/. Exit 0 only if all is explained."""
    import json

    import pyarrow as pa

    from schemahub import audit as au
    from schemahub import pipeline
    from schemahub.ingest import make_source
    from schemahub.output import write
    from schemahub.store import open_store

    store = open_store(args.storage)
    known = _known(args)
    exchange, product = _table_product(args, store, known)
    urls = _base_urls(args.base_url, known)
    if args.start and args.end and args.start > args.end:
        raise UsageError(f"--start {args.start} is after --end {args.end}: no day lies between them; give --start "
                         "on or before --end")
    for opt in ("start", "end"):
        v = getattr(args, opt)
        setattr(args, opt, v.isoformat() if v else None)
    res = pipeline.audit(store, audited_at=au.now_iso(), exchange=exchange, product_id=product, start=args.start,
                         end=args.end, repair=args.repair, mappings_dir=args.mappings,
                         source_for=lambda ex: make_source(ex, base_url=urls.get(ex), mappings_dir=args.mappings))
    if args.format == "json":
        print(json.dumps(res.to_dict(), sort_keys=True, indent=1, default=str))
        return res.exit_code
    cols = ["exchange", "product_id", "date", "rows", "first_id", "last_id", "first_time", "last_time", "raw_lines",
            "quarantined", "raw_duplicates", "duplicates", "parts_rows", "compacted_rows", "ids_expected", "coverage"]
    rows = [{c: d.get(c) for c in cols} | {"holes": ", ".join(f"{h['from']}..{h['to']} {h['class']}" for h in d["holes"]),
                                           "ok": "ok" if d["ok"] else "FAIL"} for p in res.products for d in p.days]
    if rows:
        table = pa.Table.from_pylist([{k: (None if v is None else str(v)) for k, v in r.items()} for r in rows])
        write(table.to_reader(), "table")
    for p in res.products:
        for line in p.damaged:
            print(f"{p.exchange}/{p.product_id}: unreadable: {line}")
        if p.error:
            print(f"{p.exchange}/{p.product_id}: not audited: {p.error}")
    for r in res.repairs:
        print(f"repair {r['exchange']}/{r['product_id']} ids {r.get('from')}..{r.get('to')}: {r['status']}"
              + (f" ({r['trades']} trades, {r['confirmed_missing']} confirmed missing)" if "trades" in r else "")
              + ("; a gap the landing confirmed, asked once more" if r.get("was") == au.CONFIRMED else ""))
    total = {c: sum(p.missing[c] for p in res.products) for c in au.CLASSES}
    dups = sum(p.duplicates for p in res.products)
    print(f"audited {len(res.products)} product(s), {sum(len(p.days) for p in res.products)} day(s); missing ids: "
          + ", ".join(f"{total[c]:,} {c}" for c in au.CLASSES) + f"; duplicates {dups:,}; "
          + ("all explained" if res.exit_code == 0 else
             "LOST rows (landed in raw, missing from the table): a bug, please report it" if res.exit_code == au.EXIT_LOST
             else "some product(s) not audited (see above); the others are all explained"
             if res.exit_code == au.EXIT_NOT_AUDITED
             else "unexplained holes or duplicates: `schemahub audit --repair` asks the exchange for the holes"))
    return res.exit_code


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--storage", type=_arg(settings.storage_location), help="PATH or s3://bucket/prefix (default: $SCHEMAHUB_STORAGE or ./data)")
    common.add_argument("--mappings", type=_arg(lambda t: _mappings_folder(t, "--mappings")), help="mappings folder (default: $SCHEMAHUB_MAPPINGS or the repo's mappings/)")
    common.add_argument("--base-url", action="append", metavar="EXCHANGE=URL",
                        help="talk to another host for that exchange (also SCHEMAHUB_<EXCHANGE>_BASE_URL)")
    common.add_argument("--verbose", "-v", action="store_true", help="debug logs and tracebacks")

    p = _Parser(prog="schemahub", description="Exact, gap-free crypto trades in one table.")
    from schemahub import __version__

    p.add_argument("--version", action="version", version=f"schemahub {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("update-seed", parents=[common], help="build the product list from the exchange's listing")
    s.add_argument("--exchange")
    s.add_argument("--fetch", action="store_true", help="fetch the listing (otherwise print the current seed)")
    s.add_argument("--write", action="store_true", help="write mappings/product_ids_seed.yaml")
    s.add_argument("--quote", action="append", type=_code, help="keep only these quote currencies (repeatable)")
    s.add_argument("--limit", type=_positive["--limit"], help="keep at most N products")
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
    s.add_argument("--product", help="only this product (unified id); alone, the one exchange that has it")
    s.add_argument("--all", action="store_true", help="rebuild every raw object, not just new ones")
    s.add_argument("--dry-run", action="store_true", help="write nothing; list what would be transformed")
    s.add_argument("--max-seconds", type=_positive["--max-seconds"], help="stop after this long; the rest is done next run")
    s.set_defaults(func=cmd_transform)

    _query_commands(sub, common)

    s = sub.add_parser("stats", parents=[common], help="rows, time range, freshness and sizes per product")
    s.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s.add_argument("--watch", nargs="?", const=2.0, type=_positive["--watch"], metavar="SECONDS",
                   help="show it again every SECONDS (default 2) until Ctrl-C; redrawn in place on a terminal")
    s.set_defaults(func=cmd_stats)

    s = sub.add_parser("serve", parents=[common], help="a live status page on http://127.0.0.1:PORT (and its JSON)")
    s.add_argument("--port", type=_positive["--port"], default=8000,
                   help="port on 127.0.0.1 (default 8000; 0 picks a free one)")
    s.add_argument("--fresh", type=float, default=900, help="seconds a last trade counts as fresh (default 900)")
    s.add_argument("--stale", type=float, default=7200, help="seconds after which it is stale (default 7200)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("run", parents=[common], help="one scheduled cycle: ingest every seeded product, then transform")
    _ingest_options(s)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("compact", parents=[common], help="merge each closed product-day into one file, for faster queries")
    s.add_argument("--before", type=_day, help="compact days before this UTC date, YYYY-MM-DD (default: today)")
    s.add_argument("--exchange")
    s.add_argument("--product", help="only this product (unified id); alone, the one exchange that has it")
    s.add_argument("--dry-run", action="store_true", help="list the product-days it would compact")
    s.set_defaults(func=cmd_compact)

    s = sub.add_parser("repair-checkpoint", parents=[common], help="rebuild a product's checkpoint from its raw chain")
    s.add_argument("--exchange", required=True)
    s.add_argument("--product", required=True, help="unified product id (BTC-USD)")
    s.add_argument("--dry-run", action="store_true", help="write nothing; print the checkpoint it would write")
    s.set_defaults(func=cmd_repair_checkpoint)

    s = sub.add_parser("audit", parents=[common], help="prove completeness per product-day: holes classified, duplicates")
    s.add_argument("--exchange")
    s.add_argument("--product", help="only this product (unified id); alone, the one exchange that has it")
    s.add_argument("--start", type=_day_of("--start"), help="first UTC day to report, YYYY-MM-DD")
    s.add_argument("--end", type=_day_of("--end"), help="last UTC day to report, YYYY-MM-DD")
    s.add_argument("--format", choices=["table", "json"], default="table")
    s.add_argument("--repair", action="store_true", help="ask the exchange again for unexplained holes; land them once")
    s.set_defaults(func=cmd_audit)

    s = sub.add_parser("demo", parents=[common], help="offline: simulators -> run -> stats and queries, in ./demo-data")
    s.add_argument("--since", type=_since, help="first trade time to land (default: each mapping's first_run_lookback)")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("sim", help="run the offline exchange simulators")
    s.add_argument("--exchange", action="append", help="only this exchange (repeatable; default: every one)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=_positive["--port"], default=8765, help="first port; the next exchanges take the ports after it")
    s.add_argument("--mappings", type=_arg(lambda t: _mappings_folder(t, "--mappings")),
                   help="mappings folder whose seed names the products")
    s.add_argument("--products", help="comma-separated product ids for every exchange (default: the seed's)")
    s.add_argument("--live", type=_positive["--live"], default=1.0, help="trades per second per product (they have flowed since 2026-11-01)")
    s.add_argument("--fault", action="append", metavar="KIND=P", help="inject a fault with probability P (e.g. 429=0.05)")
    s.set_defaults(func=cmd_sim, verbose=False)
    return p


def _check_environment(args) -> None:
    """Every SCHEMAHUB_* variable and the mappings folder, checked once before any work; errors name them."""
    from schemahub.config import default_mappings_dir

    if getattr(args, "mappings", None) is None:
        env = settings.mappings()
        _mappings_folder(str(default_mappings_dir()), settings.MAPPINGS if env else "the default mappings folder")
    settings.check_environment(_known(args))


def _say(e: BaseException, verbose: bool) -> None:
    if verbose:
        traceback.print_exc()
    print(f"schemahub: error: {e}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done; 1 an operation failed (a product, the store, an exchange); 2 bad usage or configuration;
    130 interrupted. Every error is one line (one per problem in a mapping); --verbose adds the traceback."""
    args = build_parser().parse_args(argv)  # argparse errors exit 2, in one line
    verbose = getattr(args, "verbose", False)
    try:
        logs.setup(verbose)
        tune_allocator()
        _check_environment(args)
        return args.func(args)
    except (UsageError, ConfigError) as e:
        _say(e, verbose)
        return 2
    except SchemahubError as e:
        _say(e, verbose)
        return 1
    except KeyboardInterrupt:
        print("schemahub: interrupted; a later run continues where this one stopped", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): nothing more to say, as schemahub.output does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's exit-time flush must not fail again
        return 0
    except Exception as e:  # a bug: still one line, the traceback on request
        if _ctrl_c_in_duckdb(e):
            print("schemahub: interrupted; a later run continues where this one stopped", file=sys.stderr)
            return 130
        _say(RuntimeError(f"internal error: {type(e).__name__}: {e} (rerun with --verbose for the traceback, "
                          "and please report it)"), verbose)
        return 1


if __name__ == "__main__":
    sys.exit(main())
