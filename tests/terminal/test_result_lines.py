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


def test_many_failed_products_end_in_one_short_line_not_every_reason_again(capsys):
    """Offline, 9 products fail with the same reason: each product's line says why, and the closing error names the
    first reason once and every failed product by exchange (not 9 reasons again, nor a bare `BTC-USD` twice)."""
    from schemahub.cli import _report

    def why(ex: str, host: str, p: str) -> str:
        return (f"{ex}: cannot reach {host} (DNS lookup failed): https://{host}/trades?p={p} failed 2 time(s): "
                f"DNS lookup of {host} failed (Name or service not known); check the network and DNS")

    markets = [("binance", "api.binance.com", "BTC-USDT"), ("coinbase", "api.exchange.coinbase.com", "BTC-USD"),
               ("kraken", "api.kraken.com", "BTC-USD"), ("okx", "www.okx.com", "BTC-USDT")]
    results = [ProductResult(exchange=ex, product_id=p, status="failed", message=why(ex, host, p))
               for ex, host, p in markets]
    assert _report(results, as_json=False) == 1
    out, err = capsys.readouterr()
    for r in results:
        assert r.message in out  # each product's own line keeps its reason
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("schemahub: error: 4 product(s) failed: BTC-USDT: " + results[0].message), lines[0]
    assert lines[0].count("cannot reach") == 1, lines[0]
    for ex, _, p in markets[1:]:
        assert f"{ex} {p}" in lines[0], lines[0]


def test_one_failed_product_still_ends_in_its_reason(capsys):
    from schemahub.cli import _report

    r = ProductResult(exchange="coinbase", product_id="BTC-USD", status="failed", message="coinbase: HTTP 400")
    assert _report([r], as_json=False) == 1
    assert capsys.readouterr().err == "schemahub: error: 1 product(s) failed: BTC-USD: coinbase: HTTP 400\n"
