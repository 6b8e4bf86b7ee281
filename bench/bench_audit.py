"""Audit throughput: `schemahub audit` over a landed and transformed store, next to the transform of the same data.

Data: the transform benchmark's Coinbase-shaped raw objects (bench_transform.make_raw), transformed, with a
checkpoint over their range. Reference, measured in the same run: Transformer.transform_object over the same
objects (the audit reads every raw object through the same mapping and reads the table's ids back, so it should
cost about one transform). Reported: trades audited per second and per-million seconds, and the ratio.

Run: .venv/bin/python bench/bench_audit.py --objects 100   (1,000,000 trades)

`--quarantine-every K` makes every K-th trade unreadable (a price that is not a number): the mapping quarantines
it, so the audit has a one-id `quarantined` hole every K trades (100,000 holes for K=10 at 1M trades). The
holes are classified against as many labelled intervals: this shows that costs holes x log(intervals).
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
    ap.add_argument("--quarantine-every", type=int, default=0)
    args = ap.parse_args()
    n = args.objects * PER_OBJECT
    pairs = []
    with tempfile.TemporaryDirectory() as d:
        store = LocalStore(d, fsync=False)
        keys, _ = make_raw(store, args.objects)
        if args.quarantine_every:
            quarantine_every(store, keys, args.quarantine_every)
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
            bad = -(-n // args.quarantine_every) if args.quarantine_every else 0
            assert res.exit_code == 0 and sum(d["rows"] for d in res.products[0].days) == n - bad, res.to_dict()
            assert res.products[0].missing["quarantined"] == bad
            pairs.append((t_ref, t_audit))
    ref = statistics.median(r for r, _ in pairs)
    aud = statistics.median(a for _, a in pairs)
    print(f"audit benchmark: {n:,} trades in {args.objects} raw objects, {args.rounds} rounds (medians), wall time"
          + (f"; every {args.quarantine_every}th trade quarantined" if args.quarantine_every else ""))
    print(f"  reference: transform of the same objects {n / ref:>12,.0f} trades/s")
    print(f"  schemahub audit                          {n / aud:>12,.0f} trades/s   ({aud / n * 1e6:.2f} s per million)")
    print(f"  ratio (audit speed / transform speed)    {ref / aud:>12.2f}x  (rounds: "
          + " ".join(f"{r / a:.2f}" for r, a in pairs) + ")")


def quarantine_every(store, keys: list[str], k: int) -> None:
    """Rewrite the objects with every k-th trade's price not a number (quarantined by the mapping)."""
    from schemahub import rawobject

    i = 0
    for key in keys:
        header, lines = rawobject.decode(store.get(key).data, key)
        out = []
        for ln in lines:
            if i % k == 0:
                ln = ln.replace(b'"price":"', b'"price":"x', 1)
            out.append(ln)
            i += 1
        store.put(key, rawobject.encode(header.doc, out))


if __name__ == "__main__":
    main()
