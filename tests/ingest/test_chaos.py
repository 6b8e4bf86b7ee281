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
from schemahub.sim import SIMS, Book, CoinbaseSim, FaultPlan
from schemahub.store import open_store
from tests.conftest import ROOT
from tests.contract.harness import assert_exactly_once

PRODUCTS = ["BTC-USD", "ETH-USD", "SOL-USD"]
INITIAL = 6_000
FAULT_RATES = {"429": 0.02, "429_plain": 0.02, "500": 0.03, "502_html": 0.02, "200_html": 0.01,
               "truncated": 0.02, "truncated_json": 0.01, "drop": 0.02, "slow": 0.01}
# Each exchange's own faults on top: Kraken's errors inside HTTP 200, OKX's non-zero codes.
EXCHANGE_FAULTS = {"coinbase": {}, "binance": {},
                   "kraken": {"kraken_rate": 0.03, "kraken_unavailable": 0.02, "kraken_busy": 0.01},
                   "okx": {"okx_busy": 0.03}}
QUOTE = {"coinbase": "USD", "binance": "USDT", "kraken": "USD", "okx": "USDT"}


def products_of(exchange: str) -> list[str]:
    return [p.replace("-USD", "-" + QUOTE[exchange]) for p in PRODUCTS]


def _mappings(tmp: Path, page_size: int, exchanges=("coinbase",), products=None, pages_per_object=None) -> Path:
    """A copy of mappings/ with small pages (more crash points), fast retries and a seed of the test products."""
    dst = tmp / "mappings"
    if not dst.exists():
        shutil.copytree(ROOT / "mappings", dst)
    seed = {}
    for ex in exchanges:
        f = dst / "exchanges" / f"{ex}.yaml"
        doc = yaml.safe_load(f.read_text())
        doc["source"]["trades"]["page_size"] = page_size
        if pages_per_object:
            doc["source"]["trades"]["pages_per_object"] = pages_per_object
        doc["source"]["retry"] = {"max_attempts": 15, "base_delay_s": 0.02, "max_delay_s": 0.2}
        f.write_text(yaml.safe_dump(doc))
        sim = SIMS[ex]([])
        seed[ex] = [{"product_id": p, "symbol": sim.symbol(p), "base": p.split("-")[0], "quote": p.split("-")[1]}
                    for p in (products or {}).get(ex, products_of(ex))]
    (dst / "product_ids_seed.yaml").write_text(yaml.safe_dump({"exchanges": seed}))
    return dst


def _env(urls, mappings: Path, rate: int = 400) -> dict:
    """Environment for CLI processes: each exchange pointed at its simulator."""
    if isinstance(urls, str):
        urls = {"coinbase": urls}
    env = dict(os.environ)
    for ex, url in urls.items():
        env[f"SCHEMAHUB_{ex.upper()}_BASE_URL"] = url
        env[f"SCHEMAHUB_{ex.upper()}_RATE_LIMIT"] = str(rate)
    env.update(SCHEMAHUB_HTTP_TIMEOUT="0.5", SCHEMAHUB_MAPPINGS=str(mappings), PYTHONPATH=str(ROOT / "functions"))
    return env


def _books(live: float, exchange: str = "coinbase") -> list[Book]:
    # Trade times keep pace with the wall clock (Kraken's cursor is a time, and runs walk up to "now").
    interval = int(1e6 / live) if live else 200_000
    return [Book(p, first_id=(k + 1) * 1_000_000, initial=INITIAL, live_per_s=live, interval_us=interval, seed=k + 11)
            for k, p in enumerate(products_of(exchange))]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "schemahub.cli", *args]


def _freeze(book: Book) -> None:
    book.initial, book.live_per_s = book.head() - book.first_id + 1, 0.0


def check_landed(store, sim, books, since: datetime) -> None:
    """Exactly once from the first trade at or after --since up to the head, for every book."""
    cps = Checkpoints(store)
    for b in books:
        cp = cps.load(sim.exchange, b.product_id)
        assert cp.hi == sim.cursor_of(b, b.head()), (b.product_id, cp)
        got = assert_exactly_once(store, sim, b, cp.lo, cp.hi)
        first, t = min(got), since.timestamp() * 1e6
        assert sim.truth(b, first)["time_us"] >= t - 1000 and sim.truth(b, first - 1)["time_us"] < t


@pytest.mark.slow
@pytest.mark.xdist_group("chaos")
@pytest.mark.parametrize("exchange,backend", [("coinbase", "local"), ("coinbase", "s3"), ("binance", "local"),
                                              ("kraken", "local"), ("okx", "s3")])
def test_sigkilled_runs_with_faults_and_live_trades_land_every_trade_exactly_once(tmp_path, exchange, backend, request):
    uri = str(tmp_path / "data") if backend == "local" else f"s3://{request.getfixturevalue('s3_bucket')}/chaos"
    rng = random.Random(20261129 + (backend == "s3") + len(exchange))
    books = _books(live=20.0, exchange=exchange)
    faults = FaultPlan(rates={**FAULT_RATES, **EXCHANGE_FAULTS[exchange]}, seed=3, retry_after_s=1, slow_s=1.0)
    # Binance: the test runs ~60 requests/s (~90,000 weight a minute) to be quick, so the simulator's weight
    # budget is lifted here (it has its own contract test); 429s and the scripted 418 ban stay.
    extra = {"ban_s": 2.0, "weight_limit": 10**9} if exchange == "binance" else {}
    with SIMS[exchange](books, faults=faults, **extra) as sim:
        # Runs must take seconds, so kills land mid-landing, not just at start-up. Kraken needs no
        # start-up requests at all (its cursor is a time), so it gets smaller pages and a lower rate.
        page, rate = (20, 15) if exchange == "kraken" else (100, 60)
        env = _env({exchange: sim.url}, _mappings(tmp_path, page_size=page, exchanges=[exchange]))
        env[f"SCHEMAHUB_{exchange.upper()}_RATE_LIMIT"] = str(rate)
        since = datetime.fromtimestamp(books[0].time_us(books[0].first_id + 1000) / 1e6, tz=timezone.utc)
        args = _cli("ingest", "--storage", uri, "--since", since.isoformat(), "--workers", "3")
        kills = attempts = 0
        while kills < 6 and attempts < 40:
            attempts += 1
            if exchange == "binance" and attempts == 3:
                faults.script.extend(["429", "418"])  # a ban mid-run: the exchange stops; after it lifts, reruns go on
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
        time.sleep(2.0)  # let any ban lift
        for attempt in range(5):  # rerun until done
            if attempt:
                time.sleep(1.5)  # e.g. a ban (remembered in the store) still has a moment to run
            out = subprocess.run([*args, "--json"], env=env, capture_output=True, text=True, timeout=300)
            results = json.loads(out.stdout) if out.stdout.strip().startswith("[") else []
            if out.returncode == 0 and results and all(r["status"] == "ok" and not r.get("more_to_do") for r in results):
                break
        else:
            pytest.fail(f"never finished cleanly: rc={out.returncode} {out.stdout[-500:]} {out.stderr[-500:]}")
    assert sum(faults.served.values()) > 0
    if exchange == "binance":
        assert sim.status_counts.get(418, 0) >= 1 and faults.served.get("418") == 1
    check_landed(open_store(uri), sim, books, since)


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
        assert_exactly_once(store, sim, b, b.first_id - 1, b.head())
