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


# The other paging kinds and source options: errors name keys as written in YAML, never pydantic's union tags.
OTHER_CASES = [
    ("kraken", "kraken cursor path missing", lambda t: t.replace("      cursor_path: [result, last]    # passed back exactly as returned\n", ""),
     r"kraken.yaml:\d+: source.trades.pagination.cursor_path: Field required"),
    ("kraken", "kraken bad retry regex", lambda t: t.replace('"Rate limit exceeded"', '"Rate limit ("'),
     r"kraken.yaml:\d+: source.errors.retry_when: .*not a valid regular expression"),
    ("kraken", "kraken array index out of range", lambda t: t.replace("trade_id: {path: 6, type: string}", "trade_id: {path: 99, type: string}"),
     r"kraken.yaml:\d+: table.columns.trade_id.path: .*0..63"),
    ("binance", "binance start without id field", lambda t: t.replace("        first_id_field: f\n", ""),
     r"binance.yaml:\d+: source.trades.pagination.start.first_id_field: Field required"),
    ("binance", "binance weight share above 1", lambda t: t.replace("pause_at: 0.8", "pause_at: 1.5"),
     r"binance.yaml:\d+: source.weight.pause_at: .*less than or equal to 1"),
    ("binance", "binance unknown time format", lambda t: t.replace("time_format: epoch_ms_or_us", "time_format: epoch_weeks"),
     r"binance.yaml:\d+: source.trades.time_format"),
    ("okx", "okx listing without assets", lambda t: t.replace("    base_field: baseCcy\n", ""),
     r"okx.yaml:\d+: source.products: .*base_field and quote_field, or pair_field"),
]


@pytest.mark.parametrize("exchange,name,mutate,pattern", OTHER_CASES, ids=[c[1] for c in OTHER_CASES])
def test_malformed_specs_of_other_paging_kinds_name_file_line_and_key(tmp_path, exchange, name, mutate, pattern):
    shutil.copytree(ROOT / "mappings", tmp_path / "m")
    f = tmp_path / "m" / "exchanges" / f"{exchange}.yaml"
    text = f.read_text()
    changed = mutate(text)
    assert changed != text, "the mutation did not apply"
    f.write_text(changed)
    with pytest.raises(ConfigError, match=pattern):
        load_exchange(exchange, str(tmp_path / "m"))


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
