"""The CLI as users run it: commands, exit codes, one-line errors, JSON logs, update-seed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from schemahub.sim import Book, CoinbaseSim
from tests.conftest import ROOT


def _run(args, env_extra=None, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "functions"), SCHEMAHUB_COINBASE_RATE_LIMIT="500")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "schemahub.cli", *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_update_seed_keeps_online_products_and_writes_the_seed(tmp_path):
    shutil.copytree(ROOT / "mappings", tmp_path / "m")
    (tmp_path / "m" / "product_ids_seed.yaml").unlink(missing_ok=True)
    offline = [{"id": "OLD-USD", "base_currency": "OLD", "quote_currency": "USD", "status": "delisted", "trading_disabled": False},
               {"id": "HALT-USD", "base_currency": "HALT", "quote_currency": "USD", "status": "online", "trading_disabled": True}]
    with CoinbaseSim([Book("BTC-USD"), Book("ETH-USD")], extra_products=offline) as sim:
        r = _run(["update-seed", "--exchange", "coinbase", "--fetch", "--write", "--mappings", str(tmp_path / "m"),
                  "--base-url", f"coinbase={sim.url}"])
    assert r.returncode == 0, r.stderr
    seed = yaml.safe_load((tmp_path / "m" / "product_ids_seed.yaml").read_text())
    assert [p["product_id"] for p in seed["exchanges"]["coinbase"]] == ["BTC-USD", "ETH-USD"]


def test_update_seed_for_every_exchange_writes_unified_ids_and_native_symbols(tmp_path):
    from schemahub.sim import SIMS

    shutil.copytree(ROOT / "mappings", tmp_path / "m")
    (tmp_path / "m" / "product_ids_seed.yaml").unlink(missing_ok=True)
    quote = {"coinbase": "USD", "binance": "USDT", "kraken": "USD", "okx": "USDT"}
    sims = {ex: SIMS[ex]([Book(f"BTC-{q}"), Book(f"ETH-{q}")]) for ex, q in quote.items()}
    try:
        urls = [a for ex, s in sims.items() for a in ("--base-url", f"{ex}={s.start()}")]
        r = _run(["update-seed", "--fetch", "--write", "--mappings", str(tmp_path / "m"), *urls])
    finally:
        for s in sims.values():
            s.stop()
    assert r.returncode == 0, r.stderr
    seed = yaml.safe_load((tmp_path / "m" / "product_ids_seed.yaml").read_text())["exchanges"]
    assert set(seed) == set(quote)
    for ex, q in quote.items():
        assert [(p["product_id"], p["symbol"]) for p in seed[ex]] == [
            (f"BTC-{q}", sims[ex].symbol(f"BTC-{q}")), (f"ETH-{q}", sims[ex].symbol(f"ETH-{q}"))]
    assert seed["kraken"][0]["symbol"] == "XBTUSD" and seed["kraken"][0]["base"] == "BTC"


def test_ingest_then_dry_run_plan_and_json_logs(tmp_path):
    book = Book("BTC-USD", initial=2500, interval_us=1_000_000)
    with CoinbaseSim([book]) as sim:
        env = {"SCHEMAHUB_COINBASE_BASE_URL": sim.url, "SCHEMAHUB_LOG_FORMAT": "json"}
        store = str(tmp_path / "d")
        r = _run(["ingest", "--exchange", "coinbase", "--product", "btc-usd", "--storage", store, "--json", "--verbose"], env)
        assert r.returncode == 0, r.stderr
        [res] = json.loads(r.stdout)
        assert res["status"] == "ok" and res["hi"] == book.head()
        assert all(json.loads(line)["level"] for line in r.stderr.splitlines() if line.strip())
        book.initial += 1500
        r = _run(["ingest", "--exchange", "coinbase", "--product", "BTC-USD", "--storage", store, "--dry-run"], env)
        assert r.returncode == 0 and '"to_land": 1500' in r.stdout
        r = _run(["ingest", "--exchange", "coinbase", "--product", "BTC-USD", "--storage", str(tmp_path / "fresh"), "--dry-run"], env)
        assert r.returncode == 0 and "first_run" in r.stdout and not (tmp_path / "fresh").exists()
        assert not any("00000000000%d" % (book.head() - 1500) in f for f in os.listdir(f"{store}/raw/coinbase/BTC-USD"))


def test_failures_exit_nonzero_with_a_one_line_error(tmp_path):
    r = _run(["ingest", "--exchange", "nosuch", "--product", "BTC-USD", "--storage", str(tmp_path)])
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip().splitlines()[0]]
    assert "unknown exchange 'nosuch'" in r.stderr and "Traceback" not in r.stderr
    # An unreachable exchange: the product fails loudly, exit 1.
    r = _run(["ingest", "--exchange", "coinbase", "--product", "BTC-USD", "--storage", str(tmp_path)],
             {"SCHEMAHUB_COINBASE_BASE_URL": "http://127.0.0.1:9", "SCHEMAHUB_HTTP_TIMEOUT": "0.2"}, timeout=300)
    assert r.returncode == 1 and "failed" in r.stderr


def test_sim_command_serves_the_api_the_quickstart_ingests_from(tmp_path):
    from tests.conftest import free_port

    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "functions"))
    sim = subprocess.Popen([sys.executable, "-m", "schemahub.cli", "sim", "--exchange", "coinbase", "--port", str(port), "--products", "BTC-USD",
                            "--fault", "500=0.1"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert sim.stdout.readline() == f"export SCHEMAHUB_COINBASE_BASE_URL=http://127.0.0.1:{port}\n"
        r = _run(["ingest", "--exchange", "coinbase", "--product", "BTC-USD", "--storage", str(tmp_path / "d"),
                  "--since", "2026-11-01T00:00:00Z", "--max-seconds", "5", "--json"],
                 {"SCHEMAHUB_COINBASE_BASE_URL": f"http://127.0.0.1:{port}"})
        assert r.returncode == 0, r.stderr
        [res] = json.loads(r.stdout)
        assert res["status"] == "ok" and res["trades"] > 0
    finally:
        sim.kill()
        sim.wait()


def test_run_then_query_and_stats_in_every_format(tmp_path):
    book = Book("BTC-USD", initial=1500, interval_us=1_000_000, seed=9)
    store = str(tmp_path / "d")
    shutil.copytree(ROOT / "mappings", tmp_path / "m")
    (tmp_path / "m" / "product_ids_seed.yaml").write_text(yaml.safe_dump({"exchanges": {"coinbase": [
        {"product_id": "BTC-USD", "symbol": "BTC-USD", "base": "BTC", "quote": "USD"}]}}))
    with CoinbaseSim([book]) as sim:
        env = {"SCHEMAHUB_COINBASE_BASE_URL": sim.url}
        since = "2000-01-01T00:00:00Z"
        r = _run(["run", "--storage", store, "--mappings", str(tmp_path / "m"), "--since", since], env)
    assert r.returncode == 0, r.stderr
    assert "transformed 1 raw object(s): 1,500 rows" in r.stdout
    r = _run(["query", "--storage", store, "--format", "json", "SELECT count(*) AS n, sum(price * size) AS notional FROM trades"])
    [row] = json.loads(r.stdout)
    from decimal import Decimal

    want = sum(Decimal(book.fields(i)["price"]) * Decimal(book.fields(i)["size"]) for i in range(book.first_id, book.head() + 1))
    assert row["n"] == 1500 and Decimal(row["notional"]) == want  # exact, as a string in JSON
    r = _run(["query", "--storage", store, "--format", "csv", "SELECT side, count(*) AS n FROM trades GROUP BY 1 ORDER BY 1"])
    assert r.stdout.splitlines()[0] == "side,n" and len(r.stdout.splitlines()) == 3
    r = _run(["stats", "--storage", store, "--format", "json"])
    [s] = json.loads(r.stdout)
    assert s["rows"] == 1500 and s["raw_bytes"] > s["curated_bytes"] > 0
    r = _run(["query", "--storage", store, "SELECT nope FROM trades"])
    assert r.returncode == 2 and "query failed" in r.stderr and "Traceback" not in r.stderr
    r = _run(["transform", "--storage", store, "--dry-run"])
    assert r.returncode == 0 and "would transform 0 raw object(s)" in r.stdout


def test_run_is_one_cycle_over_every_seeded_exchange(tmp_path):
    """`run` ingests the seeded products of every exchange, then transforms them into the one table."""
    import time as _time

    from schemahub.sim import SIMS

    t0 = _time.time() - 3600
    books = {"coinbase": Book("BTC-USD", initial=300, interval_us=1_000_000, seed=21, t0=t0),
             "binance": Book("BTC-USDT", initial=300, interval_us=1_000_000, seed=22, t0=t0),
             "kraken": Book("BTC-USD", initial=300, interval_us=1_000_000, seed=23, t0=t0),
             "okx": Book("BTC-USDT", initial=300, interval_us=1_000_000, seed=24, t0=t0)}
    sims = {ex: SIMS[ex]([b]) for ex, b in books.items()}
    shutil.copytree(ROOT / "mappings", tmp_path / "m")
    (tmp_path / "m" / "product_ids_seed.yaml").write_text(yaml.safe_dump({"exchanges": {
        ex: [{"product_id": b.product_id, "symbol": sims[ex].symbol(b.product_id), "base": "BTC",
              "quote": b.product_id.split("-")[1]}] for ex, b in books.items()}}))
    env = {}
    for ex, s in sims.items():
        env[f"SCHEMAHUB_{ex.upper()}_BASE_URL"] = s.start()
        env[f"SCHEMAHUB_{ex.upper()}_RATE_LIMIT"] = "500"
    try:
        since = datetime.fromtimestamp(t0 - 600, tz=timezone.utc).isoformat()
        r = _run(["run", "--storage", str(tmp_path / "d"), "--mappings", str(tmp_path / "m"), "--since", since], env)
    finally:
        for s in sims.values():
            s.stop()
    assert r.returncode == 0, r.stderr
    for ex, b in books.items():
        assert f"{ex} {b.product_id}: 300 trades landed, up to " in r.stdout, r.stdout
    assert "1,200 rows" in r.stdout
    q = _run(["query", "--storage", str(tmp_path / "d"), "--format", "json",
              "SELECT exchange, product_id, count(*) AS n FROM trades GROUP BY ALL ORDER BY ALL"])
    assert {(x["exchange"], x["product_id"], x["n"]) for x in json.loads(q.stdout)} == {
        (ex, b.product_id, 300) for ex, b in books.items()}


@pytest.mark.slow
def test_demo_runs_every_exchange_offline_into_one_table(tmp_path):
    since = (datetime.now(timezone.utc) - timedelta(minutes=10)).isoformat()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "functions"))
    r = subprocess.run([sys.executable, "-m", "schemahub.cli", "demo", "--storage", str(tmp_path / "demo"), "--since", since],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    for ex in ("coinbase", "binance", "kraken", "okx"):
        assert f"simulated {ex} API" in out
    # The side-by-side VWAP has one column per exchange's BTC market.
    header = next(line for line in out.splitlines() if line.startswith("minute ") and "binance BTC-USDT" in line)
    assert all(m in header for m in ("coinbase BTC-USD", "kraken BTC-USD", "okx BTC-USDT"))
    from schemahub.query import connect
    from schemahub.store import open_store

    con = connect(open_store(str(tmp_path / "demo")))
    rows = dict(con.execute("SELECT exchange, count(DISTINCT product_id) FROM trades GROUP BY 1").fetchall())
    assert rows == {"binance": 2, "coinbase": 3, "kraken": 2, "okx": 2}
    n, distinct = con.execute("SELECT count(*), count(DISTINCT (exchange, product_id, trade_id)) FROM trades").fetchone()
    assert n == distinct > 9 * 500  # ten minutes at one trade a second per product
