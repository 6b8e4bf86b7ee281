"""Archive-to-table throughput (download not counted), next to a bare pyarrow reference in the same run.

Data: one deterministic BTCUSDT-like daily archive zip (µs times, as files from 2025 print them; default
1,000,000 rows), with its SHA-256 as the .CHECKSUM gives it.
schemahub, wall time from the zip bytes in memory to every curated file written:
  landing: sha256 checked against the checksum, then sources/archive.py's ArchiveSource._unpack (the archive
  engineer's function: unzip, header-row check, ids read with pyarrow, contiguity breaks), then the slicing of
  ArchiveSource.slice (rows_per_object rows per object) and what Lander._archive_group writes: make_header(
  lines="csv", source=...), rawobject.encode, a create-only put into a local store (threads over slices);
  transform: Transformer.transform_object of every slice (threads over slices; zlib and pyarrow release the GIL).
Reference: unzip, pyarrow.csv.read_csv, cast price/qty to decimal(38,12) and time to timestamp, write zstd
Parquet into the same store.

Run: make bench   (or .venv/bin/python bench/bench_archive.py --rows 2000000 --rounds 3)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import statistics
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "functions"))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from schemahub import rawobject  # noqa: E402
from schemahub.layout import raw_key  # noqa: E402
from schemahub.sources.archive import ArchiveSource  # noqa: E402
from schemahub.sources.spec import load_exchange  # noqa: E402
from schemahub.store.local import LocalStore  # noqa: E402
from schemahub.table import DECIMAL, TIMESTAMP  # noqa: E402
from schemahub.transform import Transformer  # noqa: E402

DAY = date(2025, 3, 1)
FIRST_ID = 4_600_000_001
THREADS = 2
REST_TRADES_PER_S = 6000 / 25 * 1000 / 60  # historicalTrades: weight 25 of 6,000/min, 1,000 trades a page


def make_zip(rows: int, seed: int = 7) -> tuple[bytes, str]:
    """(zip bytes, sha256): rows like Binance's spot trades file, µs times over one day."""
    rnd = random.Random(seed)
    price = 8_650_000  # cents
    t = 1_740_787_200_000_000  # 2025-03-01T00:00:00Z in µs
    step = 86_400_000_000 // rows
    out = []
    for i in range(rows):
        price += rnd.randint(-2, 2)
        qty = rnd.choice((1, 2, 5, 10, 12, 50, 100, 150, 1000, 3125)) * rnd.randint(1, 40)  # units of 1e-5
        t += rnd.randint(0, 2 * step)
        quote = price * qty  # 1e-7 units
        out.append(f"{FIRST_ID + i},{price // 100}.{price % 100:02d}000000,{qty // 100000}.{qty % 100000:05d}000,"
                   f"{quote // 10**7}.{quote % 10**7:07d}0,{t},{rnd.random() < 0.5},True\n")
    csv = "".join(out).encode()
    name = f"BTCUSDT-trades-{DAY.isoformat()}"
    buf = io.BytesIO()
    info = zipfile.ZipInfo(name + ".csv", date_time=(2025, 3, 2, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(info, csv)
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def land(store, src: ArchiveSource, data: bytes, want_sha: str, pool) -> list[str]:
    """The archive landing's work for one file, the download excepted (see the module docstring)."""
    got = hashlib.sha256(data).hexdigest()
    assert got == want_sha, "checksum mismatch"
    lf = src._unpack(src.daily("BTCUSDT", DAY), got, data)
    assert not lf.breaks
    per = src.spec.rows_per_object
    fetched = "2025-03-02T08:00:00Z"

    def one(row: int) -> str:
        lines = lf.rows(row, min(lf.count, row + per))
        start = lf.first_id - 1 + row
        first_line = row + 1 + lf.header_lines
        header = rawobject.make_header(
            exchange="binance", product_id="BTC-USDT", symbol="BTCUSDT", base="BTC", quote="USDT", start=start,
            end=start + len(lines), count=len(lines), min_id=start + 1, max_id=start + len(lines),
            fetched_at=fetched, requests=[lf.file.path], lines=rawobject.LINES_CSV,
            source={"file": lf.file.name, "sha256": lf.sha256, "rows": [first_line, first_line + len(lines) - 1]})
        key = raw_key("binance", "BTC-USDT", start)
        store.put(key, rawobject.encode(header, lines), if_none_match=True)
        return key

    return list(pool.map(one, range(0, lf.count, per)))


def ours(root: Path, data: bytes, sha: str, rows: int) -> tuple[float, float, float]:
    """(end-to-end trades/s, landing s, transform s), wall time."""
    store = LocalStore(str(root))
    src = ArchiveSource(load_exchange("binance"), None)
    tr = Transformer(store)
    tr.compiled_csv("binance")
    with ThreadPoolExecutor(THREADS) as pool:
        t0 = time.perf_counter()
        keys = land(store, src, data, sha, pool)
        t1 = time.perf_counter()
        results = list(pool.map(tr.transform_object, keys))
        t2 = time.perf_counter()
    assert sum(r.rows for r in results) == rows and not any(r.quarantined for r in results)
    return rows / (t2 - t0), t1 - t0, t2 - t1


def reference(root: Path, data: bytes, rows: int) -> float:
    store = LocalStore(str(root))
    t0 = time.perf_counter()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        csv = z.read(z.infolist()[0])
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
    store.put("ref/BTCUSDT.parquet", sink.getvalue())
    dt = time.perf_counter() - t0
    assert out.num_rows == rows
    return rows / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    data, sha = make_zip(args.rows)
    pairs, parts = [], []
    with tempfile.TemporaryDirectory() as d:
        for k in range(args.rounds):
            ref = reference(Path(d) / f"ref{k}", data, args.rows)
            e2e, land_s, tr_s = ours(Path(d) / f"ours{k}", data, sha, args.rows)
            pairs.append((ref, e2e))
            parts.append((land_s, tr_s))
    ratios = sorted(o / r for r, o in pairs)
    e2e = statistics.median(o for _, o in pairs)
    print(f"archive benchmark: one {args.rows:,}-row BTCUSDT day ({len(data) / 2**20:.1f} MiB zip), {args.rounds} "
          f"paired rounds (medians), wall time, {THREADS} threads, download not counted")
    print(f"  reference (unzip+read_csv+cast+write)  {statistics.median(r for r, _ in pairs):>12,.0f} trades/s")
    print(f"  schemahub landing + transform          {e2e:>12,.0f} trades/s   (target >= 1,000,000)")
    print(f"    landing {statistics.median(a for a, _ in parts):.2f} s, transform "
          f"{statistics.median(b for _, b in parts):.2f} s")
    print(f"  ratio                                  {statistics.median(ratios):>12.2f}x   (target >= 0.50x; rounds: "
          + " ".join(f"{x:.2f}" for x in ratios) + ")")
    print(f"  Binance REST budget (historicalTrades) {REST_TRADES_PER_S:>12,.0f} trades/s   "
          f"({e2e / REST_TRADES_PER_S:,.0f}x slower than the archive path)")


if __name__ == "__main__":
    main()
