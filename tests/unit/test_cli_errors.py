"""The CLI never surprises: every option, variable and error is checked, named, and mapped to a documented exit code.

Exit codes (README, "Exit codes and errors"): 0 done, 1 an operation failed, 2 bad usage or configuration,
130 interrupted. Errors are one line without a traceback unless --verbose.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from schemahub import cli
from schemahub.sim import SIMS, Book
from tests.conftest import ROOT, free_port
from tests.damaged.test_damaged_store import read_only_folder  # noqa: F401 (a fixture)


def _entry(pid: str, symbol: str | None = None) -> dict:
    base, quote = pid.split("-")
    return {"product_id": pid, "symbol": symbol or pid, "base": base, "quote": quote}


@pytest.fixture
def mappings(tmp_path):
    shutil.copytree(ROOT / "mappings", tmp_path / "m")
    return tmp_path / "m"


def _seed(mappings, doc: dict) -> None:
    (mappings / "product_ids_seed.yaml").write_text(yaml.safe_dump({"exchanges": doc}))


@pytest.fixture
def sims():
    started = {}

    def start(exchange: str, products: list[str]) -> str:
        sim = SIMS[exchange]([Book(p, initial=40, interval_us=1_000_000, seed=n + 3) for n, p in enumerate(products)])
        started[exchange] = sim
        return sim.start()

    yield start
    for sim in started.values():
        sim.stop()


def run(capsys, *argv, env: dict | None = None, monkeypatch=None):
    """main() in this process: (exit code, stdout, stderr lines)."""
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse's errors end the process, as `schemahub` run from a shell
        code = e.code
    out, err = capsys.readouterr()
    return code, out, [ln for ln in err.splitlines() if ln.strip()]


def _one_error_line(err: list[str]) -> str:
    assert len(err) == 1 and err[0].startswith("schemahub: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


# ------------------------------------------------------------------ --product without --exchange

def test_product_without_exchange_picks_the_one_exchange_whose_seed_has_it(capsys, mappings, sims, tmp_path):
    _seed(mappings, {"coinbase": [_entry("BTC-USD"), _entry("ETH-USD")], "kraken": [_entry("BTC-EUR", "XBTEUR")]})
    urls = ["--base-url", f"coinbase={sims('coinbase', ['BTC-USD', 'ETH-USD'])}",
            "--base-url", f"kraken={sims('kraken', ['BTC-EUR'])}"]
    store = tmp_path / "d"
    code, out, err = run(capsys, "ingest", "--product", "eth-usd", "--storage", store, "--mappings", mappings, *urls,
                         "--since", "2000-01-01T00:00:00Z", "--json")
    assert code == 0, err
    assert [(r["exchange"], r["product_id"], r["status"]) for r in json.loads(out)] == [("coinbase", "ETH-USD", "ok")]
    assert sorted(os.listdir(store / "raw")) == ["coinbase"] and os.listdir(store / "raw" / "coinbase") == ["ETH-USD"]
    # Kraken's own symbol picks Kraken.
    code, out, err = run(capsys, "ingest", "--product", "XBTEUR", "--storage", store, "--mappings", mappings, *urls,
                         "--since", "2000-01-01T00:00:00Z", "--json")
    assert code == 0 and [(r["exchange"], r["product_id"]) for r in json.loads(out)] == [("kraken", "BTC-EUR")], err


def test_product_without_exchange_refuses_when_several_or_no_exchanges_have_it(capsys, mappings, sims, tmp_path):
    _seed(mappings, {"coinbase": [_entry("BTC-USD")], "kraken": [_entry("BTC-USD", "XBTUSD")]})
    urls = ["--base-url", f"coinbase={sims('coinbase', ['BTC-USD'])}", "--base-url", f"kraken={sims('kraken', ['BTC-USD'])}"]
    store = tmp_path / "d"
    code, _, err = run(capsys, "ingest", "--product", "BTC-USD", "--storage", store, "--mappings", mappings, *urls)
    assert code == 2 and "'BTC-USD' is seeded on coinbase and kraken: add --exchange" in _one_error_line(err)
    code, _, err = run(capsys, "ingest", "--product", "DOGE-USD", "--storage", store, "--mappings", mappings, *urls)
    assert code == 2 and "'DOGE-USD' is not in the seed of any exchange: add --exchange" in _one_error_line(err)
    assert not store.exists()  # nothing was ingested, not even a checkpoint


def test_transform_product_without_exchange_takes_the_one_exchange_that_has_it(capsys, mappings, sims, tmp_path):
    _seed(mappings, {"coinbase": [_entry("BTC-USD"), _entry("ETH-USD")], "kraken": [_entry("BTC-USD", "XBTUSD")]})
    urls = ["--base-url", f"coinbase={sims('coinbase', ['BTC-USD', 'ETH-USD'])}",
            "--base-url", f"kraken={sims('kraken', ['BTC-USD'])}"]
    store = tmp_path / "d"
    code, _, err = run(capsys, "ingest", "--storage", store, "--mappings", mappings, *urls, "--since", "2000-01-01T00:00:00Z")
    assert code == 0, err
    code, out, err = run(capsys, "transform", "--product", "eth-usd", "--storage", store, "--mappings", mappings)
    assert code == 0, err
    assert "transformed 1 raw object(s)" in out and "coinbase/ETH-USD" in out and "BTC-USD" not in out
    code, _, err = run(capsys, "transform", "--product", "BTC-USD", "--storage", store, "--mappings", mappings)
    assert code == 2 and "coinbase and kraken have raw objects" in _one_error_line(err)
    code, _, err = run(capsys, "compact", "--product", "BTC/USD", "--storage", store, "--mappings", mappings)
    assert code == 2 and "'BTC/USD' is not a unified product id" in _one_error_line(err)


# ------------------------------------------------------------------ option values

def _future() -> str:
    return (datetime.now(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


BAD_OPTIONS = [
    (["--max-seconds", "0"], "--max-seconds '0'"), (["--max-seconds", "nan"], "--max-seconds 'nan'"),
    (["--max-seconds", "-5"], "--max-seconds '-5'"), (["--max-seconds", "inf"], "--max-seconds 'inf'"),
    (["--lease-ttl", "0"], "--lease-ttl '0'"), (["--lease-ttl", "-1"], "--lease-ttl '-1'"),
    (["--lease-ttl", "nan"], "--lease-ttl 'nan'"), (["--wait-lease", "-1"], "--wait-lease '-1'"),
    (["--workers", "0"], "--workers '0'"), (["--workers", "-2"], "--workers '-2'"),
    (["--storage", ""], "--storage is empty"),
    (["--storage", "s3://Bad_Bucket/x"], "not an S3 bucket name"),
    (["--since", "FUTURE"], "is in the future"),
    (["--base-url", "coinbsae=http://127.0.0.1:9"], "no exchange 'coinbsae' (known: binance, coinbase, kraken, okx)"),
    (["--base-url", "coinbase=ftp://x"], "is not an http(s) URL"),
    (["--mappings", "/nonexistent/mappings"], "--mappings '/nonexistent/mappings' does not exist"),
]


@pytest.mark.parametrize("extra,want", BAD_OPTIONS, ids=[" ".join(e) or "empty" for e, _ in BAD_OPTIONS])
def test_bad_ingest_option_values_are_refused_naming_the_option(capsys, monkeypatch, sims, tmp_path, extra, want):
    monkeypatch.chdir(tmp_path)  # `--storage ""` once meant ./data
    extra = [_future() if a == "FUTURE" else a for a in extra]
    url = sims("coinbase", ["BTC-USD"])
    code, _, err = run(capsys, "ingest", "--exchange", "coinbase", "--product", "BTC-USD", "--storage",
                       tmp_path / "d", "--base-url", f"coinbase={url}", *extra)
    assert code == 2 and want in _one_error_line(err)
    assert not (tmp_path / "d").exists() and not (tmp_path / "data").exists()


OTHER_BAD = [
    (["transform", "--max-seconds", "0"], "--max-seconds '0'"),
    (["transform", "--exchange", "coinbsae"], "unknown exchange 'coinbsae'"),
    (["compact", "--before", "2026-13-01"], "--before '2026-13-01' is not a date"),
    (["update-seed", "--limit", "0"], "--limit '0' must be at least 1"),
    (["update-seed", "--quote", "US D"], "--quote 'US D' is not an asset code"),
    (["update-seed", "--write"], "--write needs --fetch"),
    (["run", "--workers", "0"], "--workers '0'"),
]


@pytest.mark.parametrize("argv,want", OTHER_BAD, ids=[" ".join(a) for a, _ in OTHER_BAD])
def test_bad_values_of_other_commands_are_refused_naming_the_option(capsys, tmp_path, mappings, argv, want):
    seed_before = (mappings / "product_ids_seed.yaml").read_text()
    code, _, err = run(capsys, *argv, "--storage", tmp_path / "d", "--mappings", mappings)
    assert code == 2 and want in _one_error_line(err)
    assert (mappings / "product_ids_seed.yaml").read_text() == seed_before


@pytest.mark.parametrize("argv,want", [(["--port", "-1"], "--port '-1'"), (["--live", "nan"], "--live 'nan'"),
                                       (["--fault", "429=2"], "--fault 429= '2' is more than the maximum of 1"),
                                       (["--fault", "teapot=0.1"], "unknown fault 'teapot'"),
                                       (["--products", "BTC/USD"], "'BTC/USD' not BASE-QUOTE")])
def test_bad_sim_values_are_refused_before_any_simulator_starts(argv, want):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "functions"))
    try:
        r = subprocess.run([sys.executable, "-m", "schemahub.cli", "sim", "--port", str(free_port()), *argv], env=env,
                           capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the simulators started and served with the bad value")
    assert r.returncode == 2 and want in _one_error_line(r.stderr.strip().splitlines())


# ------------------------------------------------------------------ environment variables

BAD_ENV = [
    ("SCHEMAHUB_COINBASE_RATE_LIMIT", "abc"), ("SCHEMAHUB_COINBASE_RATE_LIMIT", "0"),
    ("SCHEMAHUB_COINBASE_RATE_LIMIT", "-3"), ("SCHEMAHUB_COINBASE_RATE_LIMIT", "nan"),
    ("SCHEMAHUB_KRAKEN_RATE_LIMIT", "fast"),
    ("SCHEMAHUB_HTTP_TIMEOUT", "soon"), ("SCHEMAHUB_HTTP_TIMEOUT", "0"), ("SCHEMAHUB_HTTP_TIMEOUT", "inf"),
    ("SCHEMAHUB_STORAGE", ""), ("SCHEMAHUB_STORAGE", "s3://"),
    ("SCHEMAHUB_COINBASE_BASE_URL", "ftp://example"), ("SCHEMAHUB_COINBASE_BASE_URL", ""),
    ("SCHEMAHUB_COINBSAE_BASE_URL", "http://127.0.0.1:9"), ("SCHEMAHUB_COINBSAE_RATE_LIMIT", "5"),
    ("SCHEMAHUB_MAPPINGS", "/nonexistent/mappings"), ("SCHEMAHUB_LOG_FORMAT", "xml"),
]


@pytest.mark.parametrize("name,value", BAD_ENV, ids=[f"{n}={v}" for n, v in BAD_ENV])
def test_environment_variable_errors_name_the_variable(capsys, monkeypatch, sims, tmp_path, name, value):
    monkeypatch.chdir(tmp_path)
    url = sims("coinbase", ["BTC-USD"])
    code, _, err = run(capsys, "ingest", "--exchange", "coinbase", "--product", "BTC-USD", "--base-url",
                       f"coinbase={url}", "--since", "2000-01-01T00:00:00Z", env={name: value}, monkeypatch=monkeypatch)
    line = _one_error_line(err)
    assert code == 2 and name in line, line
    assert not (tmp_path / "data").exists()


def test_a_typo_in_a_variable_name_gets_a_warning(capsys, monkeypatch, tmp_path, mappings):
    (tmp_path / "d").mkdir()  # stats on a folder that does not exist is an error of its own
    code, _, err = run(capsys, "stats", "--storage", tmp_path / "d", "--mappings", mappings,
                       env={"SCHEMAHUB_HTTP_TIMOUT": "5"}, monkeypatch=monkeypatch)
    assert code == 0 and any("SCHEMAHUB_HTTP_TIMOUT (did you mean SCHEMAHUB_HTTP_TIMEOUT?)" in ln for ln in err), err


# ------------------------------------------------------------------ exit codes and one-line errors

def _cli(*argv, env=None, timeout=120):
    e = dict(os.environ, PYTHONPATH=str(ROOT / "functions"), **(env or {}))
    return subprocess.run([sys.executable, "-m", "schemahub.cli", *map(str, argv)], env=e, capture_output=True,
                          text=True, timeout=timeout)


def test_store_failures_exit_1_with_one_line_naming_store_key_and_remedy(tmp_path, moto_endpoint):
    # A bucket that does not exist (S3 through moto's server).
    r = _cli("transform", "--storage", "s3://no-such-bucket-9/x", env={"AWS_MAX_ATTEMPTS": "1"})
    line = _one_error_line(r.stderr.strip().splitlines())
    assert r.returncode == 1 and "s3://no-such-bucket-9/x" in line and "does not exist: create it" in line
    # An endpoint that is down.
    r = _cli("stats", "--storage", "s3://some-bucket/x", env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
                                                              "AWS_MAX_ATTEMPTS": "1"})
    line = _one_error_line(r.stderr.strip().splitlines())
    assert r.returncode == 1 and "cannot reach" in line and "AWS_ENDPOINT_URL" in line


def test_a_read_only_store_folder_exits_1_naming_the_key(capsys, read_only_folder, sims):  # noqa: F811
    root, _, why = read_only_folder
    url = sims("coinbase", ["BTC-USD"])
    code, _, err = run(capsys, "ingest", "--exchange", "coinbase", "--product", "BTC-USD", "--storage", root,
                       "--base-url", f"coinbase={url}", "--since", "2000-01-01T00:00:00Z")
    assert code == 1 and not any("Traceback" in ln for ln in err), err
    assert err[-1].startswith("schemahub: error: 1 product(s) failed: BTC-USD: ")
    assert "leases/coinbase/BTC-USD.json" in err[-1] and why.lower() in err[-1].lower(), err


def test_config_errors_exit_2_in_one_line_per_problem_without_traceback(tmp_path, mappings):
    (mappings / "product_ids_seed.yaml").write_text("exchanges:\n  coinbase:\n    - product_id: BTC/USD\n"
                                                    "      symbol: BTC-USD\n      base: BTC\n      quote: USD\n")
    r = _cli("ingest", "--storage", tmp_path / "d", "--mappings", mappings)
    line = _one_error_line(r.stderr.strip().splitlines())
    assert r.returncode == 2 and "product_ids_seed.yaml:3: exchanges.coinbase.0.product_id" in line
    shutil.copy(ROOT / "mappings" / "product_ids_seed.yaml", mappings)
    f = mappings / "exchanges" / "coinbase.yaml"
    f.write_text(f.read_text().replace("page_size: 1000", "page_size: !!python/object:os.system {}"))
    r = _cli("ingest", "--exchange", "coinbase", "--product", "BTC-USD", "--storage", tmp_path / "d", "--mappings", mappings)
    line = _one_error_line(r.stderr.strip().splitlines())
    assert r.returncode == 2 and "coinbase.yaml:" in line and "tags are not allowed" in line


def test_a_bug_is_one_line_and_exit_1_the_traceback_only_with_verbose_and_ctrl_c_is_130(capsys, monkeypatch, tmp_path):
    def boom(args):
        raise ValueError("something inside went wrong")

    monkeypatch.setattr(cli, "cmd_stats", boom)
    code, _, err = run(capsys, "stats", "--storage", tmp_path / "d")
    line = _one_error_line(err)
    assert code == 1 and "internal error: ValueError: something inside went wrong" in line and "--verbose" in line
    code, _, err = run(capsys, "stats", "--storage", tmp_path / "d", "--verbose")
    assert code == 1 and err[0].startswith("Traceback") and err[-1] == line

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_stats", interrupted)
    code, _, err = run(capsys, "stats", "--storage", tmp_path / "d")
    assert code == 130 and len(err) == 1 and "interrupted" in err[0]


# ------------------------------------------------------------------ update-seed refuses bad listings

def test_update_seed_skips_and_names_listings_whose_product_id_breaks_the_pattern(capsys, mappings):
    bad = [{"id": sym, "base_currency": b, "quote_currency": q, "status": "online", "trading_disabled": False}
           for sym, b, q in [("FOO.X-USD", "FOO.X", "USD"), ("BAR/Y-USD", "BAR/Y", "USD"), ("BA Z-USD", "BA Z", "USD"),
                             ("XBT-USD", "XBT", "USD")]]  # XBT is BTC: the same product as BTC-USD
    with SIMS["coinbase"]([Book("BTC-USD"), Book("ETH-USD")], extra_products=bad) as sim:
        code, out, err = run(capsys, "update-seed", "--exchange", "coinbase", "--fetch", "--write",
                             "--mappings", mappings, "--base-url", f"coinbase={sim.url}")
    assert code == 0, err
    seed = yaml.safe_load((mappings / "product_ids_seed.yaml").read_text())["exchanges"]["coinbase"]
    assert [(p["product_id"], p["symbol"]) for p in seed] == [("BTC-USD", "BTC-USD"), ("ETH-USD", "ETH-USD")]
    warnings = [ln for ln in err if ln.startswith("schemahub: warning: ")]
    for sym in ("FOO.X-USD", "BAR/Y-USD", "BA Z-USD"):
        assert any(f"'{sym}' as product id" in ln and "skipped" in ln for ln in warnings), (sym, warnings)
    assert any("'XBT-USD'" in ln and "same product BTC-USD" in ln for ln in warnings), warnings
    assert warnings[-1] == "schemahub: warning: coinbase: skipped 4 of 6 listed product(s)"
