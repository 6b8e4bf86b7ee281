"""Asset aliases unify codes across exchanges; product listings use them."""

from __future__ import annotations

import shutil

import pytest

from schemahub.assets import Aliases, load_aliases
from schemahub.config import load_model
from schemahub.errors import ConfigError
from schemahub.sim import Book, CoinbaseSim
from tests.conftest import ROOT


def test_shipped_aliases():
    a = load_aliases()
    assert a.unify("kraken", "XBT") == "BTC" and a.unify("kraken", "XXBT") == "BTC" and a.unify("kraken", "ZUSD") == "USD"
    assert a.unify("bitfinex", "UST") == "USDT" and a.unify("coinbase", "UST") == "UST"
    assert a.unify("coinbase", "eth") == "ETH"


def test_listing_unifies_base_and_quote_but_keeps_the_native_symbol(make_source):
    listing = [{"id": "XBT-ZUSD", "base_currency": "XBT", "quote_currency": "ZUSD", "status": "online", "trading_disabled": False}]
    with CoinbaseSim([Book("BTC-USD")], extra_products=listing) as sim:
        products = {p.symbol: p for p in make_source(sim.url).list_products()}
    p = products["XBT-ZUSD"]
    assert (p.product_id, p.base, p.quote) == ("BTC-USD", "BTC", "USD")


def test_bad_alias_file_names_file_line_and_key(tmp_path):
    shutil.copytree(ROOT / "mappings", tmp_path / "m")
    f = tmp_path / "m" / "assets.yaml"
    f.write_text(f.read_text().replace("XDG: DOGE", "XDG: doge coin"))
    with pytest.raises(ConfigError, match=r"assets.yaml:\d+: common: .*upper-case"):
        load_model(Aliases, f)
