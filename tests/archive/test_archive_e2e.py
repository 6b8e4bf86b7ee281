"""End to end with the archive: killed `schemahub run` processes (ingest, each object transformed as it lands,
then transform and compact) backfill Binance from its archive and REST; DuckDB's table equals the simulator's truth.

On the wall clock: the day before yesterday's file is always published, yesterday's after 08:00 UTC (the
publication lag), today is REST's. Whichever way each day comes, every trade is in the table once, as printed.
"""

from __future__ import annotations

import random
import subprocess
from datetime import datetime, timedelta, timezone

import pytest

from schemahub.landing import Checkpoints
from schemahub.query import connect
from schemahub.sim import BinanceSim
from schemahub.store import open_store
from tests.archive.landing_sim import PRODUCT, check_exactly_once, kill_once, utc, wall_clock_world
from tests.ingest.test_chaos import _cli, _env


@pytest.mark.slow
@pytest.mark.xdist_group("chaos")
def test_killed_runs_backfill_from_the_archive_and_the_table_equals_the_truth(tmp_path):
    book, mappings = wall_clock_world(tmp_path, days=3, interval_us=20_000_000, first_id=70_000_001, seed=33,
                                      page_size=200, rows_per_object=200)  # a trade every 20 s: 4,320 a day
    today = datetime.now(timezone.utc).date()
    since = utc(today - timedelta(days=2))
    uri = str(tmp_path / "data")
    store = open_store(uri)
    rng = random.Random(3)
    with BinanceSim([book], weight_limit=10**9) as sim:
        env = _env({"binance": sim.url}, mappings, rate=40)
        run = _cli("run", "--storage", uri, "--since", since.isoformat(), "--lease-ttl", "1.5", "--wait-lease", "3")
        kills = marked = 0
        for _ in range(10):
            if kills >= 3:
                break
            # Killed once objects are landing and being transformed (a marker more than before).
            kills += kill_once(run, env, lambda: sum(1 for _ in store.list("transformed/")) > marked, 0.05, rng)
            marked = sum(1 for _ in store.list("transformed/"))
        assert kills >= 2, kills
        head = book.head()
        book.initial, book.live_per_s = head - book.first_id + 1, 0.0  # no new trades: the last run catches up
        done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-800:] + done.stderr[-800:]
    cp = Checkpoints(store).load("binance", PRODUCT.product_id)
    lo = sim.archive.day_ids(book, since.date())[0] - 1
    assert (cp.lo, cp.hi) == (lo, book.head())
    fig = check_exactly_once(store, sim, book, lo, book.head())
    assert fig["archive"] >= 1 and fig["rest"] >= 1, fig  # the day before yesterday's file; today over REST
    con = connect(store)
    rows = con.execute("SELECT trade_id, price, size, side, trade_time FROM trades WHERE exchange = 'binance' "
                       "AND product_id = ? ORDER BY trade_time, trade_id", [PRODUCT.product_id]).fetchall()
    want = [i for i in range(lo + 1, cp.hi + 1) if i not in book.missing]
    assert [int(r[0]) for r in rows] == want
    for tid, price, size, side, ts in rows:
        w = sim.truth(book, int(tid))
        assert (price, size, side) == (w["price"], w["size"], w["side"]), tid
        assert ts == datetime.fromtimestamp(w["time_us"] // 10**6, tz=timezone.utc).replace(microsecond=w["time_us"] % 10**6)
