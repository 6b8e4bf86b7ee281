"""Chaos: real CLI processes SIGKILLed at random moments, faults and live trades; then exactly once."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from schemahub.landing import Checkpoints
from schemahub.sim import Book, CoinbaseSim, FaultPlan
from schemahub.store import open_store
from tests.conftest import ROOT
from tests.ingest.helpers import assert_exactly_once

PRODUCTS = ["BTC-USD", "ETH-USD", "SOL-USD"]
INITIAL = 6_000
FAULT_RATES = {"429": 0.02, "429_plain": 0.02, "500": 0.03, "502_html": 0.02, "200_html": 0.01,
               "truncated": 0.02, "truncated_json": 0.01, "drop": 0.02, "slow": 0.01}


def _mappings(tmp: Path, page_size: int) -> Path:
    """A copy of mappings/ with small pages (more crash points) and fast retries."""
    dst = tmp / "mappings"
    shutil.copytree(ROOT / "mappings", dst)
    f = dst / "exchanges" / "coinbase.yaml"
    doc = yaml.safe_load(f.read_text())
    doc["source"]["trades"]["page_size"] = page_size
    doc["source"]["retry"] = {"max_attempts": 15, "base_delay_s": 0.02, "max_delay_s": 0.2}
    f.write_text(yaml.safe_dump(doc))
    (dst / "product_ids_seed.yaml").write_text(yaml.safe_dump({"exchanges": {"coinbase": [
        {"product_id": p, "symbol": p, "base": p.split("-")[0], "quote": "USD"} for p in PRODUCTS]}}))
    return dst


def _env(sim_url: str, mappings: Path) -> dict:
    env = dict(os.environ)
    env.update(SCHEMAHUB_COINBASE_BASE_URL=sim_url, SCHEMAHUB_COINBASE_RATE_LIMIT="400",
               SCHEMAHUB_HTTP_TIMEOUT="0.5", SCHEMAHUB_MAPPINGS=str(mappings),
               PYTHONPATH=str(ROOT / "functions"))
    return env


def _books(live: float) -> list[Book]:
    return [Book(p, first_id=(k + 1) * 1_000_000, initial=INITIAL, live_per_s=live, interval_us=200_000, seed=k + 11)
            for k, p in enumerate(PRODUCTS)]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "schemahub.cli", *args]


def _freeze(book: Book) -> None:
    book.initial, book.live_per_s = book.head() - book.first_id + 1, 0.0


@pytest.mark.slow
@pytest.mark.xdist_group("chaos")
@pytest.mark.parametrize("backend", ["local", "s3"])
def test_sigkilled_runs_with_faults_and_live_trades_land_every_trade_exactly_once(tmp_path, backend, request):
    uri = str(tmp_path / "data") if backend == "local" else f"s3://{request.getfixturevalue('s3_bucket')}/chaos"
    rng = random.Random(20261129 + (backend == "s3"))
    books = _books(live=20.0)
    faults = FaultPlan(rates=dict(FAULT_RATES), seed=3, retry_after_s=1, slow_s=1.0)
    with CoinbaseSim(books, faults=faults) as sim:
        env = _env(sim.url, _mappings(tmp_path, page_size=100))
        # ~60 requests/s: a full run takes seconds, so kills land mid-landing, not just at start-up.
        env["SCHEMAHUB_COINBASE_RATE_LIMIT"] = "60"
        since = datetime.fromtimestamp(books[0].time_us(books[0].first_id + 1000) / 1e6, tz=timezone.utc)
        args = _cli("ingest", "--storage", uri, "--since", since.isoformat(), "--workers", "3")
        kills = attempts = 0
        while kills < 6 and attempts < 40:
            attempts += 1
            proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(rng.uniform(0.5, 2.0))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
            proc.wait()
            proc.stderr.close()
        assert kills >= 5, f"only {kills} runs could be killed mid-flight in {attempts} tries"

        for b in books:
            _freeze(b)
        for _ in range(5):  # rerun until done
            out = subprocess.run([*args, "--json"], env=env, capture_output=True, text=True, timeout=300)
            results = json.loads(out.stdout) if out.stdout.strip().startswith("[") else []
            if out.returncode == 0 and results and all(r["status"] == "ok" and not r.get("more_to_do") for r in results):
                break
        else:
            pytest.fail(f"never finished cleanly: rc={out.returncode} {out.stdout[-500:]} {out.stderr[-500:]}")
    assert sum(faults.served.values()) > 0

    store = open_store(uri)
    cps = Checkpoints(store)
    for b in books:
        cp = cps.load("coinbase", b.product_id)
        assert cp.hi == b.head()
        # The first landed trade is the first at or after --since.
        assert b.time_us(cp.lo) < since.timestamp() * 1e6 <= b.time_us(cp.lo + 1)
        assert_exactly_once(store, b, cp.lo, cp.hi)


@pytest.mark.slow
@pytest.mark.xdist_group("chaos")
@pytest.mark.parametrize("backend", ["local", "s3"])
def test_two_ingest_processes_started_together_land_no_trade_twice(tmp_path, backend, request):
    uri = str(tmp_path / "data") if backend == "local" else f"s3://{request.getfixturevalue('s3_bucket')}/race"
    books = _books(live=0.0)
    with CoinbaseSim(books) as sim:
        env = _env(sim.url, _mappings(tmp_path, page_size=100))
        env["SCHEMAHUB_COINBASE_RATE_LIMIT"] = "150"
        since = datetime.fromtimestamp(books[0].time_us(books[0].first_id) / 1e6, tz=timezone.utc)
        args = _cli("ingest", "--storage", uri, "--since", since.isoformat(), "--workers", "3", "--json", "--lease-ttl", "5")
        procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    results = [r for out, _ in outs for r in json.loads(out)]
    # Each product was landed by one process; the other saw the lease and said so.
    for pid in PRODUCTS:
        mine = [r for r in results if r["product_id"] == pid]
        assert sorted(r["status"] for r in mine) in (["ok", "skipped"], ["ok", "ok"])
        assert sum(r.get("trades", 0) for r in mine) == INITIAL
    store = open_store(uri)
    for b in books:
        assert_exactly_once(store, b, b.first_id - 1, b.head())
