"""Audit throughput: `schemahub audit` over a landed and transformed store, next to the transform of the same data.

Data: the transform benchmark's Coinbase-shaped raw objects (bench_transform.make_raw), transformed, with a
checkpoint over their range. Reference, measured in the same run: Transformer.transform_object over the same
objects (the audit reads every raw object through the same mapping and reads the table's ids back, so it should
cost about one transform). Reported: trades audited per second and per-million seconds, and the ratio.

Run: .venv/bin/python bench/bench_audit.py --objects 100   (1,000,000 trades)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "functions"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_transform import PER_OBJECT, make_raw  # noqa: E402

from schemahub import pipeline  # noqa: E402
from schemahub.landing.checkpoint import Checkpoint, Checkpoints  # noqa: E402
from schemahub.store.local import LocalStore  # noqa: E402
from schemahub.transform import Transformer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    n = args.objects * PER_OBJECT
    pairs = []
    with tempfile.TemporaryDirectory() as d:
        store = LocalStore(d, fsync=False)
        keys, _ = make_raw(store, args.objects)
        first = int(keys[0].rsplit("/", 1)[-1].split(".")[0])
        Checkpoints(store).create(Checkpoint("coinbase", "BTC-USD", first, first + n))
        for _ in range(args.rounds):
            tr = Transformer(store)
            tr.compiled("coinbase")
            t0 = time.perf_counter()
            for key in keys:
                tr.transform_object(key)
            t_ref = time.perf_counter() - t0
            t0 = time.perf_counter()
            res = pipeline.audit(store, audited_at="2026-12-02T00:00:00Z")
            t_audit = time.perf_counter() - t0
            assert res.exit_code == 0 and sum(d["rows"] for d in res.products[0].days) == n, res.to_dict()
            pairs.append((t_ref, t_audit))
    ref = statistics.median(r for r, _ in pairs)
    aud = statistics.median(a for _, a in pairs)
    print(f"audit benchmark: {n:,} trades in {args.objects} raw objects, {args.rounds} rounds (medians), wall time")
    print(f"  reference: transform of the same objects {n / ref:>12,.0f} trades/s")
    print(f"  schemahub audit                          {n / aud:>12,.0f} trades/s   ({aud / n * 1e6:.2f} s per million)")
    print(f"  ratio (audit speed / transform speed)    {ref / aud:>12.2f}x  (rounds: "
          + " ".join(f"{r / a:.2f}" for r, a in pairs) + ")")


if __name__ == "__main__":
    main()
