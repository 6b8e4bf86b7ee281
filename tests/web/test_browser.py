"""The status page in a real headless Chromium (Debian's; .ci/run installs it): it loads, shows the demo's products
and a candle chart, and updates itself after new data lands.

Set SCHEMAHUB_SCREENSHOTS=DIR to keep the screenshots (they are always taken, into the test's tmp_path).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from bisect import bisect_right
from datetime import datetime, timedelta, timezone

from schemahub.ingest import load_seed
from schemahub.landing import Checkpoints
from schemahub.sim import DEMO_EPOCH, SIMS, default_books
from schemahub.store import open_store
from schemahub.web.server import StatusServer
from tests.web.cdp import Browser
from tests.web.stores import ADA_QUARANTINED, ADA_ROWS, ADA_SINCE, ada_book, land


def _truth(store, sims) -> dict[tuple[str, str], int]:
    """Rows each product must have: the simulator's trades inside its landed cursor range."""
    out = {}
    for ex, sim in sims.items():
        for pid, book in sim.books.items():
            if pid == "ADA-USD":
                continue
            cp = Checkpoints(store).load(ex, pid)
            # sim.expected_ids, by bisection: the demo's books hold a month of trades, and cursors rise with ids.
            ids = range(book.first_id, book.head() + 1)
            key = lambda i, sim=sim, book=book: sim.cursor_of(book, i)  # noqa: E731
            out[(ex, pid)] = bisect_right(ids, cp.hi, key=key) - bisect_right(ids, cp.lo, key=key)
    return out


def _keep(path) -> None:
    if os.environ.get("SCHEMAHUB_SCREENSHOTS"):
        os.makedirs(os.environ["SCHEMAHUB_SCREENSHOTS"], exist_ok=True)
        shutil.copy(path, os.environ["SCHEMAHUB_SCREENSHOTS"])


def test_status_page_in_chromium_shows_the_demo_products_a_chart_and_updates_after_new_data(tmp_path):
    # GIVEN the demo's simulators and seed (plus a hand-written ADA-USD with a hole and a bad row), five minutes landed
    seed = {ex: [p.product_id for p in ps] for ex, ps in load_seed().items() if ex in SIMS and ps}
    sims = {ex: SIMS[ex](default_books(pids, live_per_s=1.0, epoch=DEMO_EPOCH, exchange=ex)
                         + ([ada_book()] if ex == "coinbase" else [])) for ex, pids in seed.items()}
    store = open_store(str(tmp_path / "demo-data"))
    for sim in sims.values():  # the exchanges run a minute behind until more trades "arrive", below
        for book in sim.books.values():
            book.clock = lambda: time.time() - 60
    since = datetime.now(timezone.utc) - timedelta(minutes=5)
    for sim in sims.values():
        sim.start()
    try:
        for ex, sim in sims.items():
            land(store, sim, seed[ex], since=since)
        land(store, sims["coinbase"], ["ADA-USD"], since=ADA_SINCE)
        truth = _truth(store, sims)
        assert len(truth) == sum(len(p) for p in seed.values()) >= 9

        with StatusServer(store, port=0) as server, Browser() as page:
            # WHEN the page is opened (polling every 0.5 s)
            page.goto(server.url + "?refresh=500")
            ready = page.wait_for("document.querySelectorAll('#chart .candle rect').length > 0 && "
                                  "document.querySelectorAll('#products tbody tr').length")
            # THEN every demo product is listed with its rows, fresh; the chart has drawn candles
            assert ready == len(truth) + 1, page.console
            rows = page.evaluate("[...document.querySelectorAll('#products tbody tr')].map(tr => [tr.dataset.exchange, "
                                 "tr.dataset.product, Number(tr.dataset.rows), tr.dataset.state, "
                                 "tr.querySelectorAll('rect.hole').length, tr.cells[9].textContent])")
            shown = {(ex, pid): (n, state, holes, q) for ex, pid, n, state, holes, q in rows}
            for key, n in truth.items():
                assert shown[key] == (n, "fresh", 0, "0"), (key, shown[key])
            assert shown[("coinbase", "ADA-USD")] == (ADA_ROWS, "stale", 1, str(ADA_QUARANTINED))
            total = sum(truth.values()) + ADA_ROWS
            assert page.evaluate("document.getElementById('total-rows').dataset.rows") == str(total)
            btc, cp = sims["coinbase"].books["BTC-USD"], Checkpoints(store).load("coinbase", "BTC-USD")
            minutes = {btc.time_us(i) // 60_000_000 for i in range(cp.lo + 1, cp.hi + 1)}  # Coinbase: cursor = id
            assert page.evaluate("document.querySelectorAll('#chart .candle').length") == len(minutes) >= 4
            assert "coinbase BTC-USD · 1m" in page.evaluate("document.getElementById('chart-info').textContent")
            # and nothing came from anywhere but the server
            loaded = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
            assert loaded and all(u.startswith(server.url) for u in loaded), loaded
            first = page.screenshot(tmp_path / "status-page.png")

            # WHEN more trades land (the minute the exchanges were behind) while the page is open
            page.evaluate("window.sameDocument = true")  # gone if the page were reloaded
            for sim in sims.values():
                for book in sim.books.values():
                    book.clock = time.time
            for ex, sim in sims.items():
                land(store, sim, seed[ex])
            later = _truth(store, sims)
            new_total = sum(later.values()) + ADA_ROWS
            assert new_total >= total + 60 * len(truth)
            # THEN its next poll shows the new counts, without a reload
            seen = page.wait_for(f"document.getElementById('total-rows').dataset.rows === '{new_total}' && "
                                 "document.getElementById('total-rows').textContent")
            assert seen == f"{new_total:,}", (seen, page.console)
            assert page.evaluate("window.sameDocument") is True
            btc_rows = page.evaluate("document.querySelector('#products tr[data-exchange=coinbase]"
                                     "[data-product=\"BTC-USD\"]').dataset.rows")
            assert int(btc_rows) == later[("coinbase", "BTC-USD")]
            # and the interval buttons redraw the chart
            page.evaluate("document.querySelector('#intervals [data-interval=\"5m\"]').click()")
            info = page.wait_for("document.getElementById('chart-info').textContent.includes('· 5m ·') && "
                                 "document.getElementById('chart-info').textContent")
            assert info and "· 5m ·" in info, page.console
            assert page.evaluate("document.getElementById('error').hidden") is True
            assert not [m for m in page.console if "exception" in m], page.console
            second = page.screenshot(tmp_path / "status-page-updated.png")
    finally:
        for sim in sims.values():
            sim.stop()
    for shot in (first, second):
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
        _keep(shot)
    (tmp_path / "truth.json").write_text(json.dumps({"before": total, "after": new_total}))
