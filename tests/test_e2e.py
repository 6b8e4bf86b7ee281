"""End to end: simulator -> killed ingests -> killed transform -> DuckDB equals ground truth."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from datetime import datetime, timezone
from decimal import Decimal

import pytest
import yaml

from schemahub.landing import Checkpoints
from schemahub.query import connect
from schemahub.sim import Book, CoinbaseSim, FaultPlan
from schemahub.store import open_store
from tests.ingest.test_chaos import _cli, _env, _freeze, _mappings

PRODUCTS = ["BTC-USD", "ETH-USD"]


def _kill_after(args, env, delay) -> bool:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return killed


@pytest.mark.slow
@pytest.mark.xdist_group("chaos")
@pytest.mark.parametrize("backend", ["local", "s3"])
def test_pipeline_under_kills_yields_exactly_the_ground_truth_table(tmp_path, backend, request):
    uri = str(tmp_path / "data") if backend == "local" else f"s3://{request.getfixturevalue('s3_bucket')}/e2e"
    rng = random.Random(7 + (backend == "s3"))
    books = [Book(p, first_id=(k + 1) * 5_000_000, initial=5_000, live_per_s=10.0, interval_us=300_000, seed=k + 40)
             for k, p in enumerate(PRODUCTS)]
    mappings = _mappings(tmp_path, page_size=100)
    spec = mappings / "exchanges" / "coinbase.yaml"
    doc = yaml.safe_load(spec.read_text())
    doc["source"]["trades"]["pages_per_object"] = 1  # many small objects: more places to die in
    spec.write_text(yaml.safe_dump(doc))
    (mappings / "product_ids_seed.yaml").write_text(yaml.safe_dump({"exchanges": {"coinbase": [
        {"product_id": p, "symbol": p, "base": p.split("-")[0], "quote": "USD"} for p in PRODUCTS]}}))
    with CoinbaseSim(books, faults=FaultPlan(rates={"500": 0.02, "truncated": 0.02, "429": 0.01}, retry_after_s=0)) as sim:
        env = _env(sim.url, mappings)
        env["SCHEMAHUB_COINBASE_RATE_LIMIT"] = "40"
        since = datetime.fromtimestamp(books[0].time_us(books[0].first_id + 500) / 1e6, tz=timezone.utc)
        ingest = _cli("ingest", "--storage", uri, "--since", since.isoformat(), "--workers", "2")
        kills = attempts = 0
        while kills < 3 and attempts < 15:
            attempts += 1
            kills += _kill_after(ingest, env, rng.uniform(0.6, 2.0))
        assert kills >= 3, f"only {kills} ingest runs could be killed mid-flight"
        for b in books:
            _freeze(b)
        done = subprocess.run(ingest, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr

    transform = _cli("transform", "--storage", uri)
    store = open_store(uri)
    total = sum(1 for _ in store.list("raw/"))
    proc = subprocess.Popen(transform, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and sum(1 for _ in store.list("transformed/")) < 3:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # mid-run: some objects are done, the rest are not
    proc.wait()
    done_before = sum(1 for _ in store.list("transformed/"))
    assert proc.returncode == -signal.SIGKILL and 0 < done_before < total, (proc.returncode, done_before, total)
    done = subprocess.run(transform, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr

    con = connect(store)
    n, distinct = con.execute("SELECT count(*), count(DISTINCT (exchange, product_id, trade_id)) FROM trades").fetchone()
    truth = 0
    for b in books:
        cp = Checkpoints(store).load("coinbase", b.product_id)
        assert cp.hi == b.head()
        truth += cp.hi - cp.lo
        rows = con.execute("SELECT trade_id, price, size, side, trade_time FROM trades WHERE product_id = ? ORDER BY trade_time",
                           [b.product_id]).fetchall()
        assert [int(r[0]) for r in rows] == list(range(cp.lo + 1, cp.hi + 1))
        for tid, price, size, side, ts in rows:
            w = b.fields(int(tid))
            assert price == Decimal(w["price"]) and size == Decimal(w["size"])
            assert side == {"buy": "sell", "sell": "buy"}[w["side"]]
            assert ts == datetime.fromisoformat(w["time"].replace("Z", "+00:00"))
    assert n == distinct == truth
    # A full rebuild on top changes nothing: same files, same rows.
    before = sorted((o.key, o.size) for o in store.list("curated/"))
    again = subprocess.run([*transform, "--all"], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert sorted((o.key, o.size) for o in store.list("curated/")) == before
    assert connect(store).execute("SELECT count(*) FROM trades").fetchone()[0] == truth
