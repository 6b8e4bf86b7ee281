"""Hostile YAML in mappings and the seed: every one fails at load with one error naming file, line and key.

No traceback, no hang, no silent reinterpretation (`page_size: true` is not 1).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import yaml

from schemahub.errors import ConfigError
from schemahub.ingest import load_seed
from schemahub.sources.spec import load_exchange
from tests.conftest import ROOT


@pytest.fixture
def mappings(tmp_path):
    shutil.copytree(ROOT / "mappings", tmp_path / "m")
    return tmp_path / "m"


def _mutate(path, old: str, new: str) -> int:
    """Replace old by new in the file; return the line number of the change."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))
    return text[: text.index(old)].count("\n") + 1


def _line(path, needle: str) -> int:
    return next(i + 1 for i, ln in enumerate(path.read_text(errors="replace").splitlines()) if needle in ln)


# ------------------------------------------------------------------ mapping files

@pytest.mark.parametrize("tag", ["!!python/object:os.system {}", "!!python/object/apply:os.system ['echo owned']",
                                 "!!python/name:os.system", "!custom 9"])
def test_python_and_custom_tags_are_refused_naming_file_and_line(mappings, tag):
    f = mappings / "exchanges" / "coinbase.yaml"
    line = _mutate(f, "requests_per_second: 9", f"requests_per_second: {tag}")
    with pytest.raises(ConfigError, match=rf"coinbase.yaml:{line}: invalid YAML: .*tags are not allowed"):
        load_exchange("coinbase", mappings)


def test_non_utf8_file_is_refused_naming_file_and_line(mappings):
    f = mappings / "exchanges" / "coinbase.yaml"
    data = f.read_bytes()
    at = data.index(b"requests_per_second")
    line = data[:at].count(b"\n") + 1
    f.write_bytes(data[:at] + b"# caf\xe9 (latin-1)\n    " + data[at:])
    with pytest.raises(ConfigError, match=rf"coinbase.yaml:{line}: not UTF-8 \(byte 0xe9 .*save the file as UTF-8"):
        load_exchange("coinbase", mappings)


@pytest.mark.parametrize("value", ["99999999d", "99999999999999d", "7306d", "999999999h"])
def test_absurd_first_run_lookback_is_refused_at_load(mappings, value):
    f = mappings / "exchanges" / "coinbase.yaml"
    line = _mutate(f, "first_run_lookback: 24h", f"first_run_lookback: {value}")
    with pytest.raises(ConfigError, match=rf"coinbase.yaml:{line}: source.first_run_lookback: .*longer than 20 years"):
        load_exchange("coinbase", mappings)
    _mutate(f, f"first_run_lookback: {value}", "first_run_lookback: 7305d")  # twenty years is still fine
    assert load_exchange("coinbase", mappings).source.lookback.days == 7305


@pytest.mark.parametrize("old,new,key", [
    ("page_size: 1000", "page_size: true", "source.trades.page_size"),
    ("requests_per_second: 9", "requests_per_second: yes", "source.rate_limit.requests_per_second"),
    ("burst: 10", "burst: on", "source.rate_limit.burst"),
    ("max_attempts: 8", "max_attempts: True", "source.retry.max_attempts"),
])
def test_a_boolean_is_never_read_as_a_number(mappings, old, new, key):
    f = mappings / "exchanges" / "coinbase.yaml"
    line = _mutate(f, old, new)
    with pytest.raises(ConfigError, match=rf"coinbase.yaml:{line}: {re.escape(key)}: expected a number, got true"):
        load_exchange("coinbase", mappings)


_BOMB = "".join(
    ["a0: &a0 [x, x, x, x, x, x, x, x, x]\n"]
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)]
)


def _load_in_child(code: str, timeout: float = 60):
    """Run a load in a child process, so a hang (on code that expands aliases) ends the test instead of the suite."""
    try:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                              cwd=str(ROOT), env={"PYTHONPATH": str(ROOT / "functions"), "PATH": "/usr/bin:/bin"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading did not finish within {timeout}s (alias expansion?)")


@pytest.mark.parametrize("target", ["seed", "mapping"])
def test_yaml_alias_bomb_is_refused_without_expanding_it(mappings, target):
    if target == "seed":
        f = mappings / "product_ids_seed.yaml"
        f.write_text(_BOMB + f.read_text())
        code = f"from schemahub.ingest import load_seed\nload_seed({str(mappings)!r})"
    else:
        f = mappings / "exchanges" / "coinbase.yaml"
        f.write_text(_BOMB + f.read_text())
        code = f"from schemahub.sources.spec import load_exchange\nload_exchange('coinbase', {str(mappings)!r})"
    r = _load_in_child(code)
    last = r.stderr.strip().splitlines()[-1]
    assert "ConfigError" in last and f"{f.name}:2: invalid YAML: aliases (*a0) are not allowed" in last, r.stderr[-2000:]


def test_an_alias_anywhere_is_refused_even_a_harmless_one(mappings):
    f = mappings / "exchanges" / "coinbase.yaml"
    text = f.read_text().replace("  rate_limit:", "  rate_limit: &rl", 1).replace("  retry:", "  retry_copy: *rl\n  retry:", 1)
    f.write_text(text)
    with pytest.raises(ConfigError, match=rf"coinbase.yaml:{_line(f, 'retry_copy')}: invalid YAML: aliases \(\*rl\)"):
        load_exchange("coinbase", mappings)


def test_deeply_nested_yaml_is_refused_not_a_recursion_traceback(mappings):
    f = mappings / "product_ids_seed.yaml"
    f.write_text("exchanges: " + "[" * 20000 + "]" * 20000 + "\n")
    with pytest.raises(ConfigError, match=r"product_ids_seed.yaml: invalid YAML: nested too deeply"):
        load_seed(mappings)


def test_a_huge_file_is_refused_before_parsing(mappings):
    f = mappings / "product_ids_seed.yaml"
    f.write_text(f.read_text() + ("# padding\n" * 300_000))
    with pytest.raises(ConfigError, match=r"product_ids_seed.yaml: larger than 2 MiB"):
        load_seed(mappings)


# ------------------------------------------------------------------ the seed

def _seed(mappings, doc_or_text) -> None:
    text = doc_or_text if isinstance(doc_or_text, str) else yaml.safe_dump(doc_or_text, sort_keys=False)
    (mappings / "product_ids_seed.yaml").write_text(text)


def _entry(pid="BTC-USD", symbol="BTC-USD", base="BTC", quote="USD"):
    return {"product_id": pid, "symbol": symbol, "base": base, "quote": quote}


SEEDS = [
    ("exchanges is a list", "exchanges:\n  - coinbase\n  - kraken\n", r":1: exchanges: .*dictionary"),
    ("top level is a list", "- coinbase\n", r":1: \(top level\): .*dictionary"),
    ("entry is a string", "exchanges:\n  coinbase:\n    - BTC-USD\n", r":3: exchanges.coinbase.0: .*dictionary"),
    ("entry lacks symbol", {"exchanges": {"coinbase": [{"product_id": "BTC-USD", "base": "BTC", "quote": "USD"}]}},
     r":3: exchanges.coinbase.0.symbol: Field required"),
    ("unknown key", {"exchanges": {"coinbase": [dict(_entry(), sybmol="x")]}}, r":\d+: exchanges.coinbase.0.sybmol: unknown key"),
    ("product id without quote", {"exchanges": {"coinbase": [_entry(), _entry("BTC", "BTC")]}},
     r":7: exchanges.coinbase.1.product_id: .*'BTC' is not BASE-QUOTE"),
    ("product id with a slash", {"exchanges": {"coinbase": [_entry(), _entry("BTC/USD", "BTCUSD")]}},
     r":7: exchanges.coinbase.1.product_id: .*'BTC/USD' is not BASE-QUOTE"),
    ("product id hidden", {"exchanges": {"coinbase": [_entry(".BTC-USD")]}}, r":3: exchanges.coinbase.0.product_id: .*not BASE-QUOTE"),
    ("product id lower case", {"exchanges": {"coinbase": [_entry("btc-usd")]}}, r":3: exchanges.coinbase.0.product_id"),
    ("product id with =", {"exchanges": {"coinbase": [_entry("BTC=X-USD")]}}, r":3: exchanges.coinbase.0.product_id"),
    ("bad asset code", {"exchanges": {"coinbase": [_entry(base="btc coin")]}}, r":5: exchanges.coinbase.0.base: .*asset code"),
    ("product listed twice", {"exchanges": {"coinbase": [_entry(), _entry(symbol="BTCUSD")]}},
     r":7: exchanges.coinbase.1.product_id: 'BTC-USD' is listed twice \(first at line 3\)"),
    ("symbol listed twice", {"exchanges": {"coinbase": [_entry(), _entry("ETH-USD", "btc-usd", "ETH")]}},
     r":7: exchanges.coinbase.1.symbol: 'BTC-USD' is listed twice"),
    ("unknown exchange", {"exchanges": {"coinbsae": [_entry()]}},
     r":2: exchanges.coinbsae: no mapping for exchange 'coinbsae' \(known: binance, coinbase, kraken, okx\)"),
    ("bad exchange name", {"exchanges": {"Coin Base": [_entry()]}}, r":\d+: exchanges: .*not an exchange name"),
    ("symbol is a boolean", {"exchanges": {"coinbase": [_entry(symbol=True)]}}, r":4: exchanges.coinbase.0.symbol"),
]


@pytest.mark.parametrize("name,doc,pattern", SEEDS, ids=[s[0] for s in SEEDS])
def test_wrongly_shaped_seed_is_refused_naming_file_line_and_key(mappings, name, doc, pattern):
    _seed(mappings, doc)
    with pytest.raises(ConfigError, match=r"product_ids_seed.yaml" + pattern):
        load_seed(mappings)


def test_btc_and_btc_slash_usd_never_merge_into_one_product(mappings):
    # Both would have shared raw/coinbase/BTC/...: neither may reach the store, whatever the other entries.
    for pid in ("BTC", "BTC/USD"):
        _seed(mappings, {"exchanges": {"coinbase": [_entry(pid, pid)]}})
        with pytest.raises(ConfigError, match=re.escape(repr(pid))):
            load_seed(mappings)
    _seed(mappings, {"exchanges": {"coinbase": [_entry()], "kraken": []}})
    assert [p.product_id for p in load_seed(mappings)["coinbase"]] == ["BTC-USD"]


# ------------------------------------------------------------------ assets.yaml follows --mappings

def test_assets_yaml_of_the_mappings_folder_given_is_the_one_used(mappings):
    from schemahub.ingest import make_source
    from schemahub.sim import Book, CoinbaseSim

    with open(mappings / "assets.yaml", "a") as f:
        f.write("  coinbase:\n    WIBBLE: WBL\n")
    listing = [{"id": "WIBBLE-USD", "base_currency": "WIBBLE", "quote_currency": "USD", "status": "online",
                "trading_disabled": False}]
    with CoinbaseSim([Book("BTC-USD")], extra_products=listing) as sim:
        products = {p.symbol: p for p in make_source("coinbase", base_url=sim.url, mappings_dir=mappings).list_products()}
        shipped = {p.symbol: p for p in make_source("coinbase", base_url=sim.url).list_products()}
    assert (products["WIBBLE-USD"].product_id, products["WIBBLE-USD"].base) == ("WBL-USD", "WBL")
    assert shipped["WIBBLE-USD"].product_id == "WIBBLE-USD"
