"""Exchanges ingested at once versus one after another: the seeded products, against the simulators, with each
exchange's real client rate limit from its mapping (Coinbase 9/s, Binance 3/s with its weight budget, Kraken 1/s,
OKX 5/s with 100-trade pages).

It times a first-run ingest of the last `--hours` of trades (the simulators' books flow at 1 trade/s per
product, as in `schemahub demo`) for each exchange alone, then for all of them through the CLI's one path
(ingest.ingest_exchanges), each into a fresh folder. The issue measured a 2-day window (20.5 min, sequential);
the ratio concurrent/slowest does not depend on the window once pages dominate the first-run search, so the
default is 3 hours (about 3 minutes for both passes). `--hours 48` runs the issue's window.

The simulators run in another process (`schemahub sim`), so the client is measured, not the server.

Run: .venv/bin/python bench/bench_concurrency.py [--hours 3]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "functions"))


def _start_sims() -> tuple[subprocess.Popen, dict[str, str]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "functions"))
    p = subprocess.Popen([sys.executable, "-m", "schemahub.cli", "sim", "--port", "0"], env=env,
                         stdout=subprocess.PIPE, text=True)
    urls: dict[str, str] = {}
    from schemahub.sim import SIMS

    while len(urls) < len(SIMS):
        line = p.stdout.readline()
        if not line:
            raise SystemExit("the simulators did not start")
        m = re.match(r"(\w+) simulator listening on (\S+)", line)
        if m:
            urls[m[1]] = m[2]
    return p, urls


def _ingest(exchanges: list[str], urls: dict[str, str], since: datetime, workers: int) -> tuple[float, int]:
    from schemahub.ingest import ingest_exchanges, load_seed, make_source
    from schemahub.landing import IngestOptions
    from schemahub.store.local import LocalStore

    seed = load_seed()
    with tempfile.TemporaryDirectory() as d:
        jobs = [(make_source(ex, base_url=urls[ex]), seed[ex]) for ex in exchanges]
        t0 = time.perf_counter()
        res = ingest_exchanges(LocalStore(d), jobs, IngestOptions(since=since), workers=workers)
        took = time.perf_counter() - t0
    bad = [r for r in res if r.status != "ok"]
    if bad:
        raise SystemExit(f"ingest failed: {bad}")
    return took, sum(r.trades for r in res)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    from schemahub.ingest import load_seed

    seed = {ex: ps for ex, ps in load_seed().items() if ps}
    exchanges = sorted(seed)
    proc, urls = _start_sims()
    try:
        since = datetime.now(timezone.utc) - timedelta(hours=args.hours)
        alone = {}
        for ex in exchanges:
            alone[ex] = _ingest([ex], urls, since, args.workers)
            print(f"  {ex:<9} alone       {alone[ex][0]:>7.1f} s  ({len(seed[ex])} products, {alone[ex][1]:,} trades)",
                  flush=True)
        since = datetime.now(timezone.utc) - timedelta(hours=args.hours)
        together, trades = _ingest(exchanges, urls, since, args.workers)
    finally:
        proc.terminate()
        proc.wait()
    total = sum(t for t, _ in alone.values())
    slowest_ex = max(alone, key=lambda ex: alone[ex][0])
    slowest = alone[slowest_ex][0]
    n = sum(len(ps) for ps in seed.values())
    print(f"concurrency benchmark: first-run ingest of the last {args.hours:g} h, {n} seeded products on "
          f"{len(exchanges)} exchanges, mapping rate limits, --workers {args.workers}, cores={os.cpu_count()}")
    print(f"  sum of the exchanges alone (one after another)  {total:>7.1f} s")
    print(f"  all exchanges at once                           {together:>7.1f} s  ({trades:,} trades)")
    print(f"  {'slowest alone (' + slowest_ex + ')':<48}{slowest:>7.1f} s")
    print(f"  ratio concurrent/slowest                        {together / slowest:>7.2f}x  (target <= 1.30x)")
    print(f"  ratio sequential/concurrent                     {total / together:>7.2f}x")


if __name__ == "__main__":
    main()
