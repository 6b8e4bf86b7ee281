"""Transform throughput and curated size, next to a bare pyarrow reference on the same raw objects.

Reference: gunzip (with the same library as schemahub's transform: ISA-L, so the ratio is the mapping's and the
checks' cost, not a faster gunzip's), drop the header line, pyarrow.json.read_json with an explicit
schema, cast price/size to decimal(38,12) and time to timestamp, write zstd
Parquet into the same store. schemahub: Transformer.transform_object (mapping
engine with validation and quarantine, sort, day partitioning, marker).
Data: realistic Coinbase-shaped trades from the simulator (20 trades/s).

Run: make bench   (or .venv/bin/python bench/bench_transform.py --objects 60)
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "functions"))

import pyarrow as pa  # noqa: E402
import pyarrow.json as pj  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from schemahub.layout import raw_key
from schemahub.rawobject import decompress as decompress_raw  # noqa: E402
from schemahub.rawobject import encode as encode_raw  # noqa: E402
from schemahub.sim import Book  # noqa: E402
from schemahub.store.local import LocalStore  # noqa: E402
from schemahub.table import DECIMAL, TIMESTAMP  # noqa: E402
from schemahub.transform import Transformer  # noqa: E402

PER_OBJECT = 10_000
REF_SCHEMA = pa.schema([("time", pa.string()), ("trade_id", pa.int64()), ("price", pa.string()),
                        ("size", pa.string()), ("side", pa.string())])


def make_raw(store: LocalStore, objects: int) -> tuple[list[str], int]:
    book = Book("BTC-USD", first_id=100_000_001, initial=objects * PER_OBJECT, interval_us=50_000, seed=3)
    keys, jsonl = [], 0
    for k in range(objects):
        start = book.first_id - 1 + k * PER_OBJECT
        # Newest first within each page, as Coinbase serves them.
        lines = [book.trade_bytes(i) for p in range(10) for i in range(start + (p + 1) * 1000, start + p * 1000, -1)]
        jsonl += sum(len(x) + 1 for x in lines)
        # Fetched just after its newest trade, as landing records it (the transform refuses trades more than a
        # day after fetched_at).
        fetched = datetime.fromtimestamp(book.time_us(start + PER_OBJECT) // 1_000_000 + 1, tz=timezone.utc)
        header = {"format": "schemahub.raw/1", "exchange": "coinbase", "product_id": "BTC-USD", "symbol": "BTC-USD",
                  "cursor_start": str(start), "cursor_end": str(start + PER_OBJECT), "count": PER_OBJECT,
                  "fetched_at": fetched.isoformat(), "requests": []}
        key = raw_key("coinbase", "BTC-USD", start)
        store.put(key, encode_raw(header, lines))
        keys.append(key)
    return keys, jsonl


def reference(store: LocalStore, keys: list[str]) -> float:
    t0 = time.process_time()
    for key in keys:
        body = decompress_raw(store.get(key).data)
        rest = body.partition(b"\n")[2]
        t = pj.read_json(pa.BufferReader(rest), parse_options=pj.ParseOptions(explicit_schema=REF_SCHEMA))
        t = pa.table({
            "trade_id": t["trade_id"].cast(pa.string()), "price": t["price"].cast(DECIMAL), "size": t["size"].cast(DECIMAL),
            "side": t["side"], "trade_time": t["time"].cast(TIMESTAMP),
        })
        sink = io.BytesIO()
        pq.write_table(t, sink, compression="zstd")
        store.put("ref/" + key, sink.getvalue())
    return len(keys) * PER_OBJECT / (time.process_time() - t0)


def ours(store: LocalStore, keys: list[str]) -> float:
    tr = Transformer(store)
    tr.compiled("coinbase")
    t0 = time.process_time()
    for key in keys:
        r = tr.transform_object(key)
        assert r.rows == PER_OBJECT and r.quarantined == 0
    return len(keys) * PER_OBJECT / (time.process_time() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        store = LocalStore(d, fsync=False)
        keys, jsonl = make_raw(store, args.objects)
        raw_gz = sum(o.size for o in store.list("raw/"))
        pairs = [(reference(store, keys), ours(store, keys)) for _ in range(args.rounds)]
        curated = sum(o.size for o in store.list("curated/"))
        ref_bytes = sum(o.size for o in store.list("ref/"))
    n = args.objects * PER_OBJECT
    ratios = sorted(o / r for r, o in pairs)
    print(f"transform benchmark: {n:,} trades in {args.objects} raw objects, {args.rounds} paired rounds (medians), "
          "CPU time of one process")
    print(f"  reference (read_json+cast+write)  {statistics.median(r for r, _ in pairs):>10,.0f} trades/s")
    print(f"  schemahub transform               {statistics.median(o for _, o in pairs):>10,.0f} trades/s")
    print(f"  ratio                             {statistics.median(ratios):>10.2f}x   (target >= 0.70x; rounds: "
          + " ".join(f"{x:.2f}" for x in ratios) + ")")
    print("size per trade:")
    print(f"  raw JSONL (uncompressed)          {jsonl / n:>10.1f} bytes")
    print(f"  raw JSONL.gz (as landed)          {raw_gz / n:>10.1f} bytes")
    print(f"  reference Parquet (zstd defaults) {ref_bytes / n:>10.1f} bytes")
    print(f"  curated Parquet                   {curated / n:>10.1f} bytes   (target <= 12; "
          f"{jsonl / curated:.1f}x smaller than raw JSONL, target >= 10x)")


if __name__ == "__main__":
    main()
