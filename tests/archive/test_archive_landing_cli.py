"""The archive through real `schemahub ingest` processes, SIGKILLed mid-run, on the wall clock."""

from __future__ import annotations

import json
import random
import subprocess
from datetime import datetime, timedelta, timezone

import pytest

from schemahub.landing import Checkpoints
from schemahub.sim import BinanceSim
from schemahub.store import open_store
from tests.archive.landing_sim import PRODUCT, check_exactly_once, kill_once, utc, wall_clock_world
from tests.ingest.test_chaos import _cli, _env


@pytest.mark.slow
@pytest.mark.xdist_group("chaos")
def test_killed_cli_backfills_take_published_days_from_the_archive_and_land_every_trade_once(tmp_path):
    book, mappings = wall_clock_world(tmp_path, days=4, interval_us=10_000_000, first_id=90_000_001, seed=21,
                                      page_size=100, rows_per_object=700)  # a trade every 10 s: ~35,000 in 4 days
    today = datetime.now(timezone.utc).date()
    since = utc(today - timedelta(days=2))
    uri = str(tmp_path / "data")
    rng = random.Random(7)
    with BinanceSim([book], weight_limit=10**9) as sim:
        env = _env({"binance": sim.url}, mappings, rate=8)  # only the REST URL: the archive follows it
        args = _cli("ingest", "--storage", uri, "--exchange", "binance", "--since", since.isoformat(),
                    "--lease-ttl", "1.5", "--wait-lease", "3")
        kills, grew = 0, 0
        store = open_store(uri)
        objects = 0
        for _ in range(12):
            if kills >= 4:
                break
            # Killed once the run is landing (an object more than before).
            kills += kill_once(args, env, lambda: sum(1 for _ in store.list("raw/")) > objects, 0.6, rng)
            now_objects = sum(1 for _ in store.list("raw/"))
            grew += now_objects > objects
            objects = now_objects
        assert kills >= 3 and grew >= 3, (kills, grew)  # the killed runs were landing, not waiting
        for _ in range(5):
            out = subprocess.run([*args, "--json"], env=env, capture_output=True, text=True, timeout=300)
            results = json.loads(out.stdout) if out.stdout.strip().startswith("[") else []
            if out.returncode == 0 and results and all(r["status"] == "ok" and not r.get("more_to_do") for r in results):
                break
        else:
            pytest.fail(f"never finished: rc={out.returncode} {out.stdout[-500:]} {out.stderr[-500:]}")
    cp = Checkpoints(store).load("binance", PRODUCT.product_id)
    lo = sim.archive.day_ids(book, since.date())[0] - 1
    assert (cp.lo, cp.hi) == (lo, book.head())
    fig = check_exactly_once(store, sim, book, lo, book.head())
    assert f"BTCUSDT-trades-{since.date()}.zip" in sim.archive.served
    assert fig["archive"] >= 2 and fig["rest"] >= 1
