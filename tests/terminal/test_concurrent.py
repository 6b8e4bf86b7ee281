"""Exchanges are ingested at the same time, each within its own rate budget (the issue: one after another, a
2-day ingest took the sum of the four, 20.5 min). Shown by the simulators' own record of when requests came."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

from schemahub.sim import BinanceSim, Book, CoinbaseSim, OkxSim
from tests.conftest import ROOT
from tests.terminal.test_offline import _mappings

PRODUCTS = {"coinbase": ["BTC-USD"], "binance": ["BTC-USDT"], "okx": ["BTC-USDT"]}


def _timed(sim):
    """Record when each request reached the simulator (its own clock, not the client's)."""
    sim.seen_at = []
    route = sim.route

    def recording(segs, q, headers):
        sim.seen_at.append(time.monotonic())
        return route(segs, q, headers)

    sim.route = recording
    return sim


def test_every_exchange_runs_while_the_others_do(tmp_path):
    sims = {ex: _timed(cls([Book(PRODUCTS[ex][0], first_id=1_000_000 * (k + 1), initial=2000, interval_us=1_000_000)]))
            for k, (ex, cls) in enumerate((("coinbase", CoinbaseSim), ("binance", BinanceSim), ("okx", OkxSim)))}
    try:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "functions"))
        for ex, sim in sims.items():
            env[f"SCHEMAHUB_{ex.upper()}_BASE_URL"] = sim.start()
            env[f"SCHEMAHUB_{ex.upper()}_RATE_LIMIT"] = "8"  # each exchange paced: several requests each
        since = (datetime.now(timezone.utc) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        r = subprocess.run([sys.executable, "-m", "schemahub.cli", "ingest", "--mappings", _mappings(tmp_path, PRODUCTS),
                            "--storage", str(tmp_path / "d"), "--since", since], env=env, capture_output=True,
                           text=True, timeout=120)
    finally:
        for s in sims.values():
            s.stop()
    assert r.returncode == 0, r.stderr
    spans = {ex: (min(s.seen_at), max(s.seen_at)) for ex, s in sims.items()}
    assert all(len(s.seen_at) >= 5 for s in sims.values()), {ex: len(s.seen_at) for ex, s in sims.items()}
    # every exchange's first request came before every other exchange's last: they overlap in time
    for a, (first_a, _) in spans.items():
        for b, (_, last_b) in spans.items():
            assert a == b or first_a < last_b, f"{a} started after {b} had finished: {spans}"
