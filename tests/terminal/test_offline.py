"""No network fails fast and clearly: a DNS failure or a refused connection is retried at most twice, and the
error names the host and what went wrong (the issue: 8-10 attempts per product, 230 s, 33 s of silence)."""

from __future__ import annotations

import socket
import subprocess
import sys
import os

import pytest
import urllib3

from schemahub.clock import FakeClock
from schemahub.errors import SourceError
from schemahub.sources.http import HttpClient, RateLimiter
from tests.conftest import ROOT


class _NoDnsPool:
    """The HTTP port with a resolver that fails, as getaddrinfo does offline (EAI_AGAIN / EAI_NONAME)."""

    def __init__(self) -> None:
        self.calls = 0

    def request(self, method, url, **kw):
        self.calls += 1
        host = urllib3.util.parse_url(url).host
        raise urllib3.exceptions.NameResolutionError(host, None, socket.gaierror(-3, "Temporary failure in name resolution"))


def _client(pool=None, clock=None) -> HttpClient:
    clock = clock or FakeClock()
    return HttpClient(name="binance", rate=RateLimiter(100, 10, clock), max_attempts=8, clock=clock, pool=pool)


def _refused_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connecting is refused at once
    return port


def test_a_dns_failure_is_retried_at_most_twice_and_names_the_host():
    pool = _NoDnsPool()
    http = _client(pool)
    with pytest.raises(SourceError) as e:
        http.get("https://api.binance.com/api/v3/ping")
    assert 1 <= pool.calls <= 3, pool.calls  # not the 8 attempts a 5xx gets
    assert "cannot reach api.binance.com (DNS lookup failed)" in str(e.value)


def test_a_refused_connection_is_retried_at_most_twice_and_names_the_host():
    port = _refused_port()
    clock = FakeClock()
    http = HttpClient(name="coinbase", rate=RateLimiter(100, 10, clock), max_attempts=8, clock=clock)
    with pytest.raises(SourceError) as e:
        http.get(f"http://127.0.0.1:{port}/products")
    assert 1 <= http.stats.requests <= 3, http.stats.requests
    assert f"cannot reach 127.0.0.1:{port} (connection refused)" in str(e.value)


def test_once_a_host_is_unreachable_the_next_request_tries_once():
    pool = _NoDnsPool()
    http = _client(pool)
    for _ in range(2):
        with pytest.raises(SourceError):
            http.get("https://api.binance.com/api/v3/ping")
    first = pool.calls
    with pytest.raises(SourceError):
        http.get("https://api.binance.com/api/v3/trades")
    assert pool.calls - first == 1  # the other products of the exchange do not each retry


def _mappings(tmp_path, products: dict[str, list[str]]) -> str:
    """A copy of the shipped mappings whose seed holds just these products (symbol = id without the dash for
    Binance, as the simulators name them)."""
    import shutil

    import yaml

    from schemahub.sim import SIMS

    shutil.copytree(ROOT / "mappings", tmp_path / "m")
    seed = {ex: [{"product_id": p, "symbol": SIMS[ex]([]).symbol(p), "base": p.split("-")[0], "quote": p.split("-")[1]}
                 for p in ps] for ex, ps in products.items()}
    (tmp_path / "m" / "product_ids_seed.yaml").write_text(yaml.safe_dump({"exchanges": seed}))
    return str(tmp_path / "m")


def test_ingest_with_one_exchange_refused_lands_the_other_and_exits_nonzero(tmp_path):
    """One unreachable exchange does not hold up the others; the run exits 1 and the error line names the host."""
    from schemahub.sim import Book, CoinbaseSim

    port = _refused_port()
    mappings = _mappings(tmp_path, {"coinbase": ["BTC-USD"], "binance": ["BTC-USDT"]})
    with CoinbaseSim([Book("BTC-USD", initial=1500, interval_us=1_000_000)]) as sim:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "functions"), SCHEMAHUB_COINBASE_RATE_LIMIT="500",
                   SCHEMAHUB_COINBASE_BASE_URL=sim.url, SCHEMAHUB_BINANCE_BASE_URL=f"http://127.0.0.1:{port}")
        r = subprocess.run([sys.executable, "-m", "schemahub.cli", "ingest", "--mappings", mappings,
                            "--storage", str(tmp_path / "d")], env=env, capture_output=True, text=True,
                           timeout=120)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"cannot reach 127.0.0.1:{port} (connection refused)" in r.stderr
    assert "coinbase BTC-USD: 1,500 trades landed" in r.stdout, r.stdout
