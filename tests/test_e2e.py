"""End to end: simulators of every exchange -> killed ingests -> killed transform -> DuckDB equals ground truth."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from datetime import datetime, timezone

import pytest

from schemahub.landing import Checkpoints
from schemahub.query import connect
from schemahub.sim import SIMS, Book, FaultPlan
from schemahub.store import open_store
from tests.ingest.test_chaos import QUOTE, _cli, _env, _freeze, _mappings

EXCHANGES = ["coinbase", "binance", "kraken", "okx"]
BASES = ["BTC", "ETH"]


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
def test_pipeline_under_kills_yields_exactly_the_ground_truth_table_for_every_exchange(tmp_path, backend, request):
    """Four exchanges, two products each, one table: killed ingests, a killed transform, then DuckDB == truth."""
    uri = str(tmp_path / "data") if backend == "local" else f"s3://{request.getfixturevalue('s3_bucket')}/e2e"
    rng = random.Random(7 + (backend == "s3"))
    t0 = time.time()
    products = {ex: [f"{b}-{QUOTE[ex]}" for b in BASES] for ex in EXCHANGES}
    books = {ex: [Book(p, first_id=(k + 1) * 5_000_000, initial=3_000, live_per_s=10.0, interval_us=100_000,
                       seed=k + 40 + 3 * n, t0=t0) for k, p in enumerate(products[ex])]
             for n, ex in enumerate(EXCHANGES)}
    faults = {"500": 0.02, "truncated": 0.02, "429": 0.01}
    extra = {"kraken": {"kraken_rate": 0.02}, "okx": {"okx_busy": 0.02}}
    mappings = _mappings(tmp_path, page_size=100, exchanges=EXCHANGES, products=products, pages_per_object=1)
    sims = {ex: SIMS[ex](books[ex], faults=FaultPlan(rates={**faults, **extra.get(ex, {})}, retry_after_s=0))
            for ex in EXCHANGES}
    for s in sims.values():
        s.start()
    try:
        env = _env({ex: s.url for ex, s in sims.items()}, mappings, rate=40)
        first = books["coinbase"][0]
        since = datetime.fromtimestamp(first.time_us(first.first_id + 500) / 1e6, tz=timezone.utc)
        ingest = _cli("ingest", "--storage", uri, "--since", since.isoformat(), "--workers", "4")
        kills = attempts = 0
        while kills < 3 and attempts < 15:
            attempts += 1
            kills += _kill_after(ingest, env, rng.uniform(0.6, 2.0))
        assert kills >= 3, f"only {kills} ingest runs could be killed mid-flight"
        for bs in books.values():
            for b in bs:
                _freeze(b)
        done = subprocess.run(ingest, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    finally:
        for s in sims.values():
            s.stop()

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
    for ex, s in sims.items():
        for b in books[ex]:
            cp = Checkpoints(store).load(ex, b.product_id)
            assert cp.hi == s.cursor_of(b, b.head())
            want = s.expected_ids(b, cp.lo, cp.hi)
            truth += len(want)
            rows = con.execute("SELECT trade_id, price, size, side, trade_time, symbol FROM trades "
                               "WHERE exchange = ? AND product_id = ? ORDER BY trade_time, trade_id", [ex, b.product_id]).fetchall()
            assert sorted(int(r[0]) for r in rows) == want, (ex, b.product_id)
            for tid, price, size, side, ts, symbol in rows:
                w = s.truth(b, int(tid))
                assert (price, size, side) == (w["price"], w["size"], w["side"]), (ex, tid)
                assert ts == datetime.fromtimestamp(w["time_us"] // 10**6, tz=timezone.utc).replace(microsecond=w["time_us"] % 10**6)
                assert symbol == s.symbol(b.product_id)
    assert n == distinct == truth
    # One table: the same asset on every exchange, side by side, from one query.
    per_ex = dict(con.execute("SELECT exchange, count(*) FROM trades WHERE base_asset = 'BTC' GROUP BY 1").fetchall())
    assert set(per_ex) == set(EXCHANGES)
    # A full rebuild on top changes nothing: same files, same rows.
    before = sorted((o.key, o.size) for o in store.list("curated/"))
    again = subprocess.run([*transform, "--all"], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert sorted((o.key, o.size) for o in store.list("curated/")) == before
    assert connect(store).execute("SELECT count(*) FROM trades").fetchone()[0] == truth
