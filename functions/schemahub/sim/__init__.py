"""Loopback exchange simulators speaking the public trade APIs of Coinbase, Binance, Kraken and OKX.

Trades are a pure function of (product, trade id), so tests know the ground
truth; new trades keep arriving while a run goes on; faults are injected by
probability or by script. The tests and `schemahub demo` use it, and anyone
can try the pipeline with it offline: `schemahub sim`.
"""

from __future__ import annotations

from schemahub.sim.base import FAULTS, Book, ExchangeSim, FaultPlan, FixedBook
from schemahub.sim.binance import BinanceSim
from schemahub.sim.coinbase import CoinbaseSim
from schemahub.sim.kraken import KrakenSim
from schemahub.sim.okx import OkxSim

__all__ = ["DEMO_EPOCH", "FAULTS", "SIMS", "BinanceSim", "Book", "CoinbaseSim", "ExchangeSim", "FaultPlan", "FixedBook",
           "KrakenSim", "OkxSim", "default_books"]

SIMS = {s.exchange: s for s in (CoinbaseSim, BinanceSim, KrakenSim, OkxSim)}

DEMO_EPOCH = 1_793_491_200.0  # 2026-11-01T00:00:00Z


EXCHANGE_SEED = {"coinbase": 0, "binance": 1, "kraken": 2, "okx": 3}  # each exchange its own trades


def default_books(products: list[str] | None = None, *, initial: int = 20_000, live_per_s: float = 5.0,
                  epoch: float | None = None, exchange: str = "coinbase") -> list[Book]:
    """Realistic books: each product with its own seed and price, and each exchange its own trades.

    With `epoch`, trades have flowed at live_per_s since that moment, so the
    same id has the same content on every start and new ids keep arriving in
    real time: a restarted simulator behaves like the same exchange.
    """
    prices = {"BTC": 6_500_000, "ETH": 350_000, "SOL": 15_000}
    names = products or ["BTC-USD", "ETH-USD", "SOL-USD"]
    interval = int(1e6 / max(live_per_s, 1.0))
    anchored = dict(initial=0, t0=epoch, start_us=int(epoch * 1e6)) if epoch is not None else dict(initial=initial)
    ex = EXCHANGE_SEED.get(exchange, len(exchange))
    return [
        Book(p, first_id=10_000_000 * (k + 1) + 1_000_000_000 * ex, live_per_s=live_per_s, interval_us=interval,
             base_cents=prices.get(p.split("-")[0], 100_000) + 500 * ex, seed=k + 1 + 1000 * ex, **anchored)
        for k, p in enumerate(names)
    ]
