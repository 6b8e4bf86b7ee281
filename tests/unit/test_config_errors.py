"""Bad exchange specs fail at load time, naming file, line and key."""

from __future__ import annotations

import shutil

import pytest
import yaml

from schemahub.errors import ConfigError
from schemahub.sources.spec import load_exchange, parse_duration
from tests.conftest import ROOT


def _write(tmp_path, mutate) -> str:
    shutil.copytree(ROOT / "mappings", tmp_path / "m")
    f = tmp_path / "m" / "exchanges" / "coinbase.yaml"
    text = mutate(f.read_text())
    f.write_text(text)
    return str(tmp_path / "m")


CASES = [
    ("typo key", lambda t: t.replace("page_size: 1000", "page_sise: 1000"), r"coinbase.yaml:\d+: source.trades.page_sise: unknown key"),
    ("negative rate", lambda t: t.replace("requests_per_second: 9", "requests_per_second: -1"), r":\d+: source.rate_limit.requests_per_second: .*greater than 0"),
    ("bad url", lambda t: t.replace("https://api.exchange.coinbase.com", "ftp//nope"), r":\d+: source.base_url: .*http"),
    ("bad paging kind", lambda t: t.replace("kind: id_window_desc", "kind: sideways"), r":\d+: source.trades.pagination.kind"),
    ("path without symbol", lambda t: t.replace("/products/{symbol}/trades", "/products/trades"), r":\d+: source.trades.path: .*symbol"),
    ("bad lookback", lambda t: t.replace("first_run_lookback: 24h", "first_run_lookback: soon"), r":\d+: source.first_run_lookback"),
    ("duplicate key", lambda t: t.replace("  timeout_s: 10\n", "  timeout_s: 10\n  timeout_s: 11\n"), r":\d+: key 'source.timeout_s' is duplicated"),
    ("broken yaml", lambda t: t.replace("exchange: coinbase", "exchange: [coinbase"), r"coinbase.yaml:\d+: invalid YAML"),
    ("missing section", lambda t: t.replace("  trades:\n", "  tradez:\n"), r"source.trades: Field required"),
    ("zero page", lambda t: t.replace("page_size: 1000", "page_size: 0"), r":\d+: source.trades.page_size"),
    ("wrong name", lambda t: t.replace("exchange: coinbase", "exchange: kraken"), r"named 'coinbase'"),
]


@pytest.mark.parametrize("name,mutate,pattern", CASES, ids=[c[0] for c in CASES])
def test_malformed_spec_names_file_line_and_key(tmp_path, name, mutate, pattern):
    d = _write(tmp_path, mutate)
    with pytest.raises(ConfigError, match=pattern):
        load_exchange("coinbase", d)


def test_line_number_points_at_the_offending_key(tmp_path):
    d = _write(tmp_path, lambda t: t.replace("page_size: 1000", "page_sise: 1000"))
    text = (tmp_path / "m" / "exchanges" / "coinbase.yaml").read_text().splitlines()
    line = next(i + 1 for i, ln in enumerate(text) if "page_sise" in ln)
    with pytest.raises(ConfigError, match=rf"coinbase.yaml:{line}: "):
        load_exchange("coinbase", d)


def test_shipped_mappings_load_and_base_url_env_override(monkeypatch):
    spec = load_exchange("coinbase")
    assert spec.source.trades.page_size == 1000 and spec.source.rate_limit.requests_per_second < 10
    monkeypatch.setenv("SCHEMAHUB_COINBASE_BASE_URL", "http://127.0.0.1:9/")
    assert load_exchange("coinbase").source.base_url == "http://127.0.0.1:9"
    assert yaml.safe_load((ROOT / "mappings" / "exchanges" / "coinbase.yaml").read_text())["exchange"] == "coinbase"


def test_durations():
    assert parse_duration("90s").total_seconds() == 90 and parse_duration("7d").days == 7
    with pytest.raises(ValueError):
        parse_duration("1w")
