"""Result lines speak times, not cursors (the issue: `watermark 1796152094828000300`, `watermark None`)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from schemahub.cli import result_line
from schemahub.landing import ProductResult
from schemahub.sim import BinanceSim, Book, CoinbaseSim
from tests.conftest import ROOT
from tests.terminal.test_offline import _mappings

PRODUCTS = {"coinbase": ["BTC-USD"], "binance": ["BTC-USDT"]}


def _when(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def test_each_product_says_how_many_trades_landed_and_the_newest_trade_time(tmp_path):
    # 25,000 trades: 3 objects of 10 pages, Coinbase's pages newest-first, Binance's oldest-first
    sims = {"coinbase": CoinbaseSim([Book("BTC-USD", initial=25_000, interval_us=1_000_000)]),
            "binance": BinanceSim([Book("BTC-USDT", first_id=5_000_000, initial=25_000, interval_us=1_000_000)])}
    env = dict(os.environ, PYTHONPATH=str(ROOT / "functions"))
    for ex, sim in sims.items():
        env[f"SCHEMAHUB_{ex.upper()}_BASE_URL"] = sim.start()
        env[f"SCHEMAHUB_{ex.upper()}_RATE_LIMIT"] = "1000"
    since = (datetime.now(timezone.utc) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cmd = [sys.executable, "-m", "schemahub.cli", "ingest", "--mappings", _mappings(tmp_path, PRODUCTS),
           "--storage", str(tmp_path / "d"), "--since", since]
    try:
        first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    finally:
        for s in sims.values():
            s.stop()
    assert first.returncode == 0 and again.returncode == 0, (first.stderr, again.stderr)
    for ex, sim in sims.items():
        book = next(iter(sim.books.values()))
        newest = _when(book.time_us(book.head()))
        assert f"{ex} {book.product_id}: 25,000 trades landed, up to {newest} (" in first.stdout, first.stdout
        # nothing new: the newest trade is read back from the last object
        assert f"{ex} {book.product_id}: 0 trades landed, up to {newest} (" in again.stdout, again.stdout
    assert "watermark" not in first.stdout + again.stdout


def test_a_line_says_how_far_behind_and_when_nothing_landed_yet():
    now = datetime(2026, 12, 1, 23, 10, 7, tzinfo=timezone.utc)
    us = int(datetime(2026, 12, 1, 23, 10, 4, tzinfo=timezone.utc).timestamp() * 1e6)
    r = ProductResult("coinbase", "BTC-USD", trades=12_345, newest_us=us, hi=1796152094828000300)
    assert result_line(r, now) == "coinbase BTC-USD: 12,345 trades landed, up to 2026-12-01 23:10:04 UTC (3 s behind)"
    r = ProductResult("okx", "BTC-USDT", status="failed", message="okx: cannot reach www.okx.com (DNS lookup failed)")
    assert result_line(r, now) == ("okx BTC-USDT: FAILED, 0 trades landed, nothing landed yet -- okx: cannot reach "
                                   "www.okx.com (DNS lookup failed)")
    r = ProductResult("kraken", "BTC-USD", trades=10, newest_us=us, more_to_do=True)
    assert result_line(r, now).endswith("(3 s behind), more to do")
