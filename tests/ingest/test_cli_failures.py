"""The CLI when one product's state is damaged: that product fails alone, the run exits 1 at the end."""

from __future__ import annotations

from datetime import datetime, timezone

from schemahub.cli import main
from schemahub.landing import Checkpoints
from schemahub.layout import checkpoint_key
from schemahub.sim import Book, CoinbaseSim
from schemahub.store.local import LocalStore
from tests.contract.harness import assert_exactly_once


def test_a_damaged_checkpoint_fails_its_product_alone_and_the_run_exits_1(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SCHEMAHUB_COINBASE_RATE_LIMIT", "500")
    books = [Book("BTC-USD", first_id=1_000_001, initial=1500), Book("ETH-USD", first_id=2_000_001, initial=1500)]
    since = datetime.fromtimestamp(books[0].time_us(books[0].first_id) / 1e6, tz=timezone.utc).isoformat()
    store = LocalStore(str(tmp_path / "data"))
    with CoinbaseSim(books) as sim:
        args = ["ingest", "--storage", store.root, "--base-url", f"coinbase={sim.url}", "--exchange", "coinbase",
                "--product", "BTC-USD", "--product", "ETH-USD", "--since", since]
        assert main(args) == 0
        capsys.readouterr()
        for b in books:
            b.initial += 700
        store.put(checkpoint_key("coinbase", "BTC-USD"), b'{"lo": "1000000", "hi": ')  # a torn restore
        rc = main(args[:-2])
        err = capsys.readouterr().err
        assert rc == 1, err
        assert "checkpoints/coinbase/BTC-USD.json" in err and "repair-checkpoint" in err
        # The other product was not held up, and repair gets BTC-USD going again, exactly once.
        eth = Checkpoints(store).load("coinbase", "ETH-USD")
        assert eth.hi == books[1].head()
        assert main(["repair-checkpoint", "--storage", store.root, "--exchange", "coinbase", "--product", "BTC-USD"]) == 0
        assert main(args[:-2]) == 0
        for b in books:
            assert_exactly_once(store, sim, b, b.first_id - 1, b.head())
