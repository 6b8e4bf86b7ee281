"""The archive through real `schemahub ingest` processes, SIGKILLed mid-run, on the wall clock."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from schemahub.landing import Checkpoints
from schemahub.sim import BinanceSim, Book
from schemahub.sim.archive import _day_us
from schemahub.store import open_store
from tests.archive.landing_sim import PRODUCT, check_exactly_once, utc
from tests.ingest.test_chaos import _cli, _env, _mappings


@pytest.mark.slow
@pytest.mark.xdist_group("chaos")
def test_killed_cli_backfills_take_published_days_from_the_archive_and_land_every_trade_once(tmp_path):
    now = datetime.now(timezone.utc)
    today = now.date()
    start = today - timedelta(days=4)
    interval = 10_000_000  # a trade every 10 s: ~35,000 trades in 4 days
    n = int((now.timestamp() * 1e6 - _day_us(start)) // interval)
    book = Book(PRODUCT.product_id, first_id=90_000_001, initial=n, interval_us=interval, start_us=_day_us(start),
                t0=now.timestamp(), seed=21)
    mappings = _mappings(tmp_path, page_size=100, exchanges=["binance"], products={"binance": [PRODUCT.product_id]})
    f = mappings / "exchanges" / "binance.yaml"
    doc = yaml.safe_load(f.read_text())
    doc["archive"]["source"].update(rows_per_object=700, retry={"max_attempts": 8, "base_delay_s": 0.02, "max_delay_s": 0.2})
    f.write_text(yaml.safe_dump(doc))
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
            proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # Kill once the run is landing (an object more than before), not after a fixed time: a loaded machine
            # can spend seconds importing before the first request.
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline and sum(1 for _ in store.list("raw/")) <= objects:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.6))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
            proc.wait()
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
