"""Where the archive files come from: the mapping, SCHEMAHUB_<EX>_ARCHIVE_URL, --base-url EX-archive=URL."""

from __future__ import annotations

import pytest
import yaml

from schemahub import cli, settings
from schemahub.errors import ConfigError, UsageError
from schemahub.ingest import make_source
from schemahub.sources.spec import load_exchange
from tests.conftest import ROOT


def test_the_mapping_declares_data_binance_vision_with_its_file_layout():
    a = load_exchange("binance").archive.source
    assert a.base_url == "https://data.binance.vision"
    assert a.daily_path == "/data/spot/daily/trades/{symbol}/{symbol}-trades-{date}.zip"
    assert a.checksum_suffix == ".CHECKSUM" and a.max_file_bytes >= 1 << 30


def test_the_archive_url_variable_overrides_the_mapping_and_only_the_archive(monkeypatch):
    monkeypatch.setenv("SCHEMAHUB_BINANCE_ARCHIVE_URL", "http://127.0.0.1:9/")
    spec = load_exchange("binance")
    assert spec.archive.source.base_url == "http://127.0.0.1:9"
    assert spec.source.base_url == "https://api.binance.com"
    settings.check_environment(["binance", "coinbase"])
    monkeypatch.setenv("SCHEMAHUB_BINANCE_ARCHIVE_URL", " ")
    with pytest.raises(UsageError, match="SCHEMAHUB_BINANCE_ARCHIVE_URL is set but empty"):
        load_exchange("binance")


def test_an_archive_url_for_an_exchange_without_an_archive_is_refused(monkeypatch):
    monkeypatch.setenv("SCHEMAHUB_COINBASE_ARCHIVE_URL", "http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="declares no archive"):
        load_exchange("coinbase")
    monkeypatch.setenv("SCHEMAHUB_NOSUCH_ARCHIVE_URL", "http://127.0.0.1:9")
    with pytest.raises(UsageError, match="no exchange 'nosuch'"):
        settings.check_environment(["binance", "coinbase"])


def test_archive_files_follow_an_overridden_base_url_unless_given_their_own(monkeypatch):
    monkeypatch.delenv("SCHEMAHUB_BINANCE_ARCHIVE_URL", raising=False)
    src = make_source("binance", base_url="http://127.0.0.1:7")
    assert src.archive.base_url == "http://127.0.0.1:7"  # a simulator serves both; never REST from one place, files from another
    src = make_source("binance", base_url="http://127.0.0.1:7", archive_url="http://127.0.0.1:8")
    assert (src.base_url, src.archive.base_url) == ("http://127.0.0.1:7", "http://127.0.0.1:8")
    monkeypatch.setenv("SCHEMAHUB_BINANCE_ARCHIVE_URL", "http://127.0.0.1:6")
    assert make_source("binance", base_url="http://127.0.0.1:7").archive.base_url == "http://127.0.0.1:6"
    assert make_source("coinbase", base_url="http://127.0.0.1:7").archive is None


def test_base_url_option_takes_an_exchanges_archive():
    urls = cli._base_urls(["binance=http://127.0.0.1:7", "binance-archive=http://127.0.0.1:8"], ["binance", "coinbase"])
    assert urls == {"binance": "http://127.0.0.1:7", "binance-archive": "http://127.0.0.1:8"}
    with pytest.raises(UsageError, match="no exchange 'nosuch-archive'"):
        cli._base_urls(["nosuch-archive=http://127.0.0.1:8"], ["binance"])


def test_a_bad_archive_path_template_fails_at_load_naming_the_key(tmp_path):
    import shutil

    shutil.copytree(ROOT / "mappings", tmp_path / "m")
    f = tmp_path / "m" / "exchanges" / "binance.yaml"
    doc = yaml.safe_load(f.read_text())
    doc["archive"]["source"]["daily_path"] = "/data/spot/daily/trades/{symbol}.zip"
    f.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="daily_path"):
        load_exchange("binance", tmp_path / "m")


def test_the_ingest_lambda_pages_rest_only_and_never_imports_pyarrow():
    # The ingest Lambda's layer has no pyarrow (tests/aws/test_stack.py), and the archive's reader needs it.
    assert make_source("binance", archive=False).archive is None
    assert make_source("binance").archive is not None
    handler = (ROOT / "functions" / "handlers" / "ingest.py").read_text()
    assert "make_source(item.exchange, archive=False)" in handler
