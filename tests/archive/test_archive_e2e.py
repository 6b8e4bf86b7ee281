"""End to end with the archive: killed `schemahub run` processes (ingest, each object transformed as it lands,
then transform and compact) backfill Binance from its archive and REST; DuckDB's table equals the simulator's truth.

On the wall clock: the day before yesterday's file is always published, yesterday's after 08:00 UTC (the
publication lag), today is REST's. Whichever way each day comes, every trade is in the table once, as printed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from schemahub.landing import Checkpoints
from schemahub.query import connect
from schemahub.sim import BinanceSim, Book
from schemahub.sim.archive import _day_us
from schemahub.store import open_store
from tests.archive.landing_sim import PRODUCT, check_exactly_once, utc
from tests.ingest.test_chaos import _cli, _env, _mappings


@pytest.mark.slow
@pytest.mark.xdist_group("chaos")
def test_killed_runs_backfill_from_the_archive_and_the_table_equals_the_truth(tmp_path):
    now = datetime.now(timezone.utc)
    today = now.date()
    start = today - timedelta(days=3)
    interval = 20_000_000  # a trade every 20 s: 4,320 a day
    n = int((now.timestamp() * 1e6 - _day_us(start)) // interval)
    book = Book(PRODUCT.product_id, first_id=70_000_001, initial=n, interval_us=interval, start_us=_day_us(start),
                t0=now.timestamp(), seed=33)
    mappings = _mappings(tmp_path, page_size=200, exchanges=["binance"], products={"binance": [PRODUCT.product_id]})
    f = mappings / "exchanges" / "binance.yaml"
    doc = yaml.safe_load(f.read_text())
    doc["archive"]["source"].update(rows_per_object=200, retry={"max_attempts": 8, "base_delay_s": 0.02, "max_delay_s": 0.2})
    f.write_text(yaml.safe_dump(doc))
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
            proc = subprocess.Popen(run, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # Killed once objects are landing and being transformed (a marker more than before).
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline and \
                    sum(1 for _ in store.list("transformed/")) <= marked:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.05))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
            proc.wait()
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
