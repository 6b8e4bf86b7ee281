"""Ingest client cost per 1000-trade page, next to a bare reference measured in the same run.

Reference: plain urllib3 GET of the same pages + json.loads.
schemahub: the real landing path (lease, head request, rate limiter, retry
wrapper, verbatim split, gzip raw objects written create-only with fsync,
checkpoint compare-and-swap) into a local folder, from an existing checkpoint
(the steady state of a scheduled run; the first-run search is not timed). The simulator runs in another process and serves
pages from a warm cache, so both sides pay the same server cost.

Run: make bench   (or .venv/bin/python bench/bench_ingest.py --pages 200 --rounds 9)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "functions"))

FIRST = 50_000_001


def _serve(pages: int, q) -> None:
    from schemahub.sim import Book, CoinbaseSim

    book = Book("BTC-USD", first_id=FIRST, initial=pages * 1000, interval_us=10_000)
    for i in range(book.first_id, book.head() + 1):
        book.trade_bytes(i)  # warm the cache: measure the client, not the generator
    sim = CoinbaseSim([book])
    q.put((sim.start(), book.time_us(FIRST) / 1e6))
    while True:
        time.sleep(3600)


def reference(url: str, pages: int) -> float:
    import urllib3

    pool = urllib3.PoolManager(retries=False)
    n = 0
    t0 = time.perf_counter()
    for k in range(pages):
        lo = FIRST - 1 + k * 1000
        r = pool.request("GET", f"{url}/products/BTC-USD/trades?before={lo}&after={lo + 1001}&limit=1000")
        n += len(json.loads(r.data))
    dt = time.perf_counter() - t0
    assert n == pages * 1000, n
    return n / dt


def schemahub_run(url: str, pages: int, start_s: float) -> tuple[float, float]:
    from schemahub.ingest import make_source
    from schemahub.landing import Checkpoint, Checkpoints, IngestOptions, Lander
    from schemahub.sources.base import Product
    from schemahub.store.local import LocalStore

    with tempfile.TemporaryDirectory() as d:
        src = make_source("coinbase", base_url=url, rate=1e9)
        store = LocalStore(d)
        # Steady state: the product is already initialised, so no first-run search is timed.
        Checkpoints(store).create(Checkpoint("coinbase", "BTC-USD", FIRST - 1, FIRST - 1))
        lander = Lander(store, src)
        cpu0, t0 = time.process_time(), time.perf_counter()
        res = lander.run(Product("BTC-USD", "BTC-USD", "BTC", "USD"), IngestOptions())
        dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        assert res.status == "ok" and res.trades == pages * 1000, res
        return res.trades / dt, res.trades / cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    server = ctx.Process(target=_serve, args=(args.pages, q), daemon=True)
    server.start()
    url, start_s = q.get(timeout=300)
    try:
        reference(url, 5)  # warm connections
        rounds = []
        for _ in range(args.rounds):
            # Paired rounds, back to back: machine drift hits both sides of a pair alike.
            ref = reference(url, args.pages)
            wall, cpu = schemahub_run(url, args.pages, start_s)
            rounds.append((ref, wall, cpu))
    finally:
        server.terminate()
    ratios = sorted(w / r for r, w, _ in rounds)
    ratio = statistics.median(ratios)
    ref = statistics.median(r for r, _, _ in rounds)
    me = statistics.median(w for _, w, _ in rounds)
    cpu = statistics.median(c for _, _, c in rounds)
    print(f"ingest benchmark: {args.pages} pages x 1000 trades, {args.rounds} paired rounds (medians), "
          f"simulator on loopback in another process, cores={os.cpu_count()}")
    print(f"  reference  (GET + json.loads)              {ref:>10,.0f} trades/s")
    print(f"  schemahub  (fetch, split, gzip, land, CAS) {me:>10,.0f} trades/s   ({cpu:,.0f} trades per CPU-second)")
    print(f"  ratio schemahub/reference                  {ratio:>10.2f}x   (target >= 0.50x; rounds: "
          + " ".join(f"{r:.2f}" for r in ratios) + ")")
    print(f"  absolute target 50,000 trades/s on one core: {'met' if me >= 50_000 else 'NOT met'}")
    print(f"  exchange budget for comparison: 10 req/s x 1000 = 10,000 trades/s -> client headroom {me / 10_000:.1f}x")


if __name__ == "__main__":
    main()
