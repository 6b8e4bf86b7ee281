"""Archive-to-table throughput through the real path, next to a bare pyarrow reference in the same run.

Data: the archive simulator (schemahub.sim BinanceSim with its archive, served over loopback HTTP) holds a
deterministic busy BTCUSDT book: `--days` whole UTC days from 2025-03-01 (µs times, as files from 2025
print them) of `--rows` trades each (default 1,200,000), and a few trades after the last day, which REST
pages. The clock stands where every day's file is published.

Download not counted, served from memory: before the timed part, each day's zip and .CHECKSUM are
downloaded from the simulator over loopback (that time is printed, not counted); in the timed part the
archive's HttpClient answers those two URLs from memory (every other request, REST's probes and pages,
goes to the simulator over loopback and is counted).

schemahub (timed, wall time): the real ingest, Lander.run(since=the first day) with the real ArchiveSource
(checksum compared with the .CHECKSUM's SHA-256, unzip, header check, ids read with pyarrow, slices of
archive.source.rows_per_object rows, make_header(lines="csv"), rawobject.encode, create-only puts, the
checkpoint), into a local store; then the real transform, Transformer.transform_object of every raw object
landed (threads over objects, as the transform Lambda's fan-out runs objects side by side), checked: every
trade of the book in the table, none quarantined.
Reference (timed): unzip (with schemahub's inflate, ISA-L: the ratio is schemahub's own cost), pyarrow.csv.read_csv, cast price/qty to decimal(38,12) and time to timestamp,
write zstd Parquet into a local store.

Rounds are paired (reference, then ours, alternating which goes first); medians are printed with the
machine's load average.

Run: make bench   (or .venv/bin/python bench/bench_archive.py --rows 1200000 --rounds 5)
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import statistics
import sys
import tempfile
import time
import zipfile
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "functions"))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from schemahub.clock import FakeClock  # noqa: E402
from schemahub.ingest import source_from_spec  # noqa: E402
from schemahub.landing import IngestOptions, Lander  # noqa: E402
from schemahub.memory import tune_allocator  # noqa: E402
from schemahub.pipeline import TransformAsLanded  # noqa: E402
from schemahub.sim import BinanceSim, Book  # noqa: E402
from schemahub.sim.archive import _day_us  # noqa: E402
from schemahub.sources.archive import read_member  # noqa: E402
from schemahub.sources.base import Product  # noqa: E402
from schemahub.sources.http import Response  # noqa: E402
from schemahub.sources.spec import load_exchange, with_archive_url, with_base_url  # noqa: E402
from schemahub.store.local import LocalStore  # noqa: E402
from schemahub.table import DECIMAL, TIMESTAMP  # noqa: E402
from schemahub.transform import Transformer  # noqa: E402

PRODUCT = Product("BTC-USDT", "BTCUSDT", "BTC", "USDT")
FIRST_DAY = date(2025, 3, 1)
FIRST_ID = 4_600_000_001
TAIL = 100  # trades after the last day: REST's
THREADS = 2
REST_TRADES_PER_S = 6000 / 25 * 1000 / 60  # historicalTrades: weight 25 of 6,000/min, 1,000 trades a page


class Prefetched:
    """The archive's HttpClient, except that the URLs fetched beforehand are answered from memory."""

    def __init__(self, http, bodies: dict[str, bytes]) -> None:
        self.http, self.bodies = http, bodies

    def get(self, url, params=None, **kw):
        body = self.bodies.get(url) if not params else None
        if body is None:
            return self.http.get(url, params, **kw)
        return Response(200, {}, body, url)

    def __getattr__(self, name):
        return getattr(self.http, name)


def make_world(rows: int, days: int):
    interval = 86_400_000_000 // rows
    n = rows * days + TAIL
    end = datetime.combine(FIRST_DAY + timedelta(days=days), datetime.min.time(), tzinfo=timezone.utc)
    now = (end + timedelta(hours=9)).timestamp()
    book = Book(PRODUCT.product_id, first_id=FIRST_ID, initial=n, interval_us=interval, start_us=_day_us(FIRST_DAY),
                t0=now, clock=lambda: now, seed=7, base_cents=8_650_000)
    clock = FakeClock(now)
    sim = BinanceSim([book], weight_limit=10**9, archive={"now": clock.time})
    return book, sim, clock, now


def make_source(url: str, clock: FakeClock):
    spec = with_archive_url(with_base_url(load_exchange("binance"), url), url)
    return source_from_spec(spec, rate=1000.0, clock=clock)


def prefetch(url: str, clock: FakeClock, days: int) -> tuple[dict[str, bytes], float, list[bytes]]:
    """({url: body} of every day's zip and checksum, seconds the download took, the zips)."""
    src = make_source(url, clock).archive
    bodies, zips = {}, []
    for k in range(days):  # the simulator builds each zip on its first request (not the download's time)
        f = src.daily(PRODUCT.symbol, FIRST_DAY + timedelta(days=k))
        src.http.get(src.base_url + f.path + src.spec.checksum_suffix)
    t0 = time.perf_counter()
    for k in range(days):
        f = src.daily(PRODUCT.symbol, FIRST_DAY + timedelta(days=k))
        for u in (src.base_url + f.path, src.base_url + f.path + src.spec.checksum_suffix):
            bodies[u] = src.http.get(u).body
        zips.append(bodies[src.base_url + f.path])
    return bodies, time.perf_counter() - t0, zips


def ours(root: Path, url: str, clock: FakeClock, bodies: dict[str, bytes], total: int) -> tuple[float, float, float]:
    """(end-to-end trades/s, landing s, transform s), wall time."""
    store = LocalStore(str(root))
    source = make_source(url, clock)
    source.archive.http = Prefetched(source.archive.http, bodies)
    since = datetime.combine(FIRST_DAY, datetime.min.time(), tzinfo=timezone.utc)
    tr = Transformer(store)
    tr.compiled_csv("binance")
    t0 = time.perf_counter()
    early = TransformAsLanded(tr, workers=THREADS)  # as `schemahub run` does (and S3 events on AWS)
    res = Lander(store, source, clock=clock, on_landed=early).run(PRODUCT, IngestOptions(since=since))
    t1 = time.perf_counter()
    done = early.close()
    rest = tr.run()  # the pass after ingest: nothing is left, unless a transform failed as it landed
    done.merge(rest)
    t2 = time.perf_counter()
    assert res.status == "ok" and not res.more_to_do and res.trades == total, res
    assert rest.ok and res.archive_objects and done.rows == total and done.objects == res.objects, (res, done)
    assert not done.quarantined and not done.duplicates
    return total / (t2 - t0), t1 - t0, t2 - t1


def reference(root: Path, zips: list[bytes], rows: int) -> float:
    store = LocalStore(str(root))
    t0 = time.perf_counter()
    n = 0
    for k, data in enumerate(zips):
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            csv = read_member(z, data, z.infolist()[0])  # ISA-L's inflate, as schemahub's (zipfile's zlib: ~2x slower)
        names = ["id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"]
        t = pacsv.read_csv(pa.BufferReader(csv), read_options=pacsv.ReadOptions(column_names=names),
                           convert_options=pacsv.ConvertOptions(
                               column_types={"id": pa.int64(), "price": pa.string(), "qty": pa.string(),
                                             "time": pa.int64(), "is_buyer_maker": pa.bool_()},
                               include_columns=["id", "price", "qty", "time", "is_buyer_maker"]))
        out = pa.table({
            "trade_id": t["id"].cast(pa.string()), "price": t["price"].cast(DECIMAL), "size": t["qty"].cast(DECIMAL),
            "side": pc.if_else(t["is_buyer_maker"], "sell", "buy"), "trade_time": t["time"].cast(TIMESTAMP),
        })
        sink = io.BytesIO()
        pq.write_table(out, sink, compression="zstd")
        store.put(f"ref/BTCUSDT-{k}.parquet", sink.getvalue())
        n += out.num_rows
    dt = time.perf_counter() - t0
    assert n == rows
    return rows / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_200_000, help="trades per day")
    ap.add_argument("--days", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tuned = tune_allocator()  # as `schemahub` and the Lambda handlers do at start (both sides of the ratio run with it)
    book, sim, clock, _ = make_world(args.rows, args.days)
    total = args.rows * args.days + TAIL
    url = sim.start()
    try:
        bodies, download_s, zips = prefetch(url, clock, args.days)
        # The simulator's book (millions of Python objects) lives in this process: keep it out of the garbage
        # collector's full passes, which would otherwise walk it during both timed paths (not a cost of either).
        gc.collect()
        gc.freeze()
        in_files = total - TAIL
        pairs, parts = [], []
        with tempfile.TemporaryDirectory() as d:
            for k in range(args.rounds):
                first_ref = k % 2 == 0
                if first_ref:
                    ref = reference(Path(d) / f"ref{k}", zips, in_files)
                e2e, land_s, tr_s = ours(Path(d) / f"ours{k}", url, clock, bodies, total)
                if not first_ref:
                    ref = reference(Path(d) / f"ref{k}", zips, in_files)
                pairs.append((ref, e2e))
                parts.append((land_s, tr_s))
    finally:
        sim.stop()
    ratios = sorted(o / r for r, o in pairs)
    e2e = statistics.median(o for _, o in pairs)
    zbytes = sum(len(z) for z in zips)
    load = os.getloadavg()
    print(f"archive benchmark: {args.days} simulated BTCUSDT day(s) of {args.rows:,} trades ({zbytes / 2**20:.1f} MiB "
          f"of zip) + {TAIL} REST trades, {args.rounds} paired rounds (medians), wall time, {THREADS} threads, "
          f"{os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}, "
          f"allocator {'tuned' if tuned else 'as is'} (schemahub.memory)")
    print(f"  download from the simulator (not counted) {download_s:.2f} s")
    print(f"  reference (unzip+read_csv+cast+write)  {statistics.median(r for r, _ in pairs):>12,.0f} trades/s")
    print(f"  schemahub ingest + transform           {e2e:>12,.0f} trades/s   (target >= 1,000,000)")
    print(f"    landing {statistics.median(a for a, _ in parts):.2f} s (objects transformed as they land), then "
          f"{statistics.median(b for _, b in parts):.2f} s to finish the transforms   (rounds: "
          + " ".join(f"{o:,.0f}" for _, o in pairs) + ")")
    print(f"  ratio                                  {statistics.median(ratios):>12.2f}x   (target >= 0.50x; rounds: "
          + " ".join(f"{x:.2f}" for x in ratios) + ")")
    print(f"  Binance REST budget (historicalTrades) {REST_TRADES_PER_S:>12,.0f} trades/s   "
          f"(the archive path is {e2e / REST_TRADES_PER_S:,.0f}x faster)")


if __name__ == "__main__":
    main()
