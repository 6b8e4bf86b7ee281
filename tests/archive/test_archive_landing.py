"""The Binance archive joins the exactly-once chain: verified files, contiguous joins, kills, faults.

Ground truth is the simulator's book (sim/base.Book, sim/archive.BinanceArchive), never the code under test.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from schemahub import cli
from schemahub.clock import FakeClock
from schemahub.landing import Checkpoints
from schemahub.sim.archive import MICROS_FROM
from schemahub.store import open_store
from tests.archive.landing_sim import (
    NOW,
    PRODUCT,
    chain,
    check_exactly_once,
    day_of,
    finish,
    killed_runs,
    make_book,
    make_sim,
    run,
    utc,
)


@pytest.fixture
def clock():
    return FakeClock(start=NOW.timestamp())


@pytest.fixture
def store(tmp_path):
    return open_store(str(tmp_path / "store"))


def _start_of(sim, book, d: date) -> int:
    """The cursor just before the first trade of day d (the simulator's truth)."""
    return sim.archive.day_ids(book, d)[0] - 1


def test_a_30_day_backfill_with_kills_lands_every_trade_once_across_the_2025_switch(store, clock):
    book = make_book()
    with make_sim(book, clock) as sim:
        first = finish(store, sim.url, clock)  # a first run: the last 24 h (the rest of yesterday's file, then REST)
        assert first.archive_objects >= 1 and first.objects > first.archive_objects
        since = utc(date(2024, 12, 10))
        died = killed_runs(store, sim.url, clock, since, kills=8, seed=20250101)
        assert died >= 6
        res = finish(store, sim.url, clock, since)
    assert res.status == "ok", res
    lo = _start_of(sim, book, date(2024, 12, 10))
    cp = Checkpoints(store).load("binance", PRODUCT.product_id)
    assert (cp.lo, cp.hi) == (lo, book.head())
    fig = check_exactly_once(store, sim, book, lo, book.head())
    # Every day from 2024-12-10 to 2025-01-09 came from its file; today (2025-01-10) over REST.
    days = {day_of(book, i) for i in fig["ids"]}
    assert min(days) == date(2024, 12, 10) and max(days) == NOW.date()
    served = set(sim.archive.served)
    want = {f"BTCUSDT-trades-{date(2024, 12, 10) + timedelta(days=k)}.zip" for k in range(31)}
    assert want <= served, sorted(want - served)
    assert f"BTCUSDT-trades-{NOW.date()}.zip" not in served  # not published yet: never asked for
    # Across the switch: ms rows before 2025, µs rows from then on, exactly as the files print them.
    for key, h, lines in chain(store):
        if h.get("lines") == "csv":
            digits = {len(line.split(b",")[4]) for line in lines}
            micros = day_of(book, int(h["cursor_start"]) + 1) >= MICROS_FROM
            assert digits == ({16} if micros else {13}), (key, digits)
    assert fig["archive"] >= 40 and fig["rest"] >= 1
    # The table (archive CSV rows and REST pages through their mappings) equals the simulator's truth: every
    # published day as its file printed it (ms before 2025), today as REST printed it (µs).
    from datetime import datetime, timezone

    from schemahub.transform import Transformer
    from tests.transform.helpers import curated_rows

    tr = Transformer(store).run()
    assert tr.ok and tr.quarantined == 0 and tr.duplicates == 0, tr
    got = {r["trade_id"]: (r["price"], r["size"], r["side"], r["trade_time"]) for r in curated_rows(store)}
    want = {}
    for i in fig["ids"]:
        t = sim.truth(book, i)
        us = sim.archive.time_as_printed(book, i) if day_of(book, i) < NOW.date() else t["time_us"]
        want[t["trade_id"]] = (t["price"], t["size"], t["side"],
                               datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=us))
    assert len(got) == len(want) == len(fig["ids"])
    assert got == want
    # `schemahub audit` of the archive + REST chain: every id of every day accounted for, nothing twice.
    from schemahub.audit import audit_product

    a = audit_product(store, "binance", PRODUCT.product_id)
    assert a.ok and a.contiguous and not a.holes and a.duplicates == 0, a.to_dict()["missing"]
    assert sum(d["rows"] for d in a.days) == sum(d["raw_lines"] for d in a.days) == len(want)
    assert len(a.days) == 32  # 2024-12-10 .. 2025-01-10


def test_archive_days_and_rest_pages_join_without_gap_or_overlap(store, clock):
    book = make_book(start=date(2025, 1, 5))
    with make_sim(book, clock) as sim:
        # 1) a first run of the last 24 h: archive (yesterday, entered mid-day), then REST (today)
        a = finish(store, sim.url, clock)
        kinds1 = [h.get("lines", "json") for _, h, _ in chain(store)]
        assert kinds1[0] == "csv" and kinds1[-1] == "json", kinds1
        # 2) a backfill from 2025-01-06: archive days up to the landed range's start, mid-day
        b = finish(store, sim.url, clock, utc(date(2025, 1, 6)))
    assert a.status == b.status == "ok"
    fig = check_exactly_once(store, sim, book, _start_of(sim, book, date(2025, 1, 6)), book.head())
    objs = chain(store)
    # The archive-to-archive join at every midnight: the first row of a day's file is the id after the last
    # row of the day before.
    by_file: dict[str, list[int]] = {}
    for _, h, lines in objs:
        if h.get("lines") == "csv":
            by_file.setdefault(h["source"]["file"], []).extend([int(h["min_id"]), int(h["max_id"])])
    spans = sorted((min(v), max(v)) for v in by_file.values())
    assert len(spans) >= 4
    assert all(b0 == a1 + 1 for (_, a1), (b0, _) in zip(spans, spans[1:])), spans
    assert fig["joins"] >= 1


def test_a_checksum_mismatch_lands_nothing_and_fails_loudly(store, clock):
    book = make_book(start=date(2025, 1, 6))
    bad = "BTCUSDT-trades-2025-01-07.zip"
    with make_sim(book, clock) as sim:
        sim.archive.mismatch[bad] = 99  # the checksum never matches
        res = run(store, sim.url, clock, utc(date(2025, 1, 6)))
        assert res.status == "failed"
        assert bad in res.message and "SHA-256" in res.message
        assert sim.archive.served[bad] == 3  # downloaded checksum_attempts times, then given up
        assert cli._report([res], as_json=False) == 1
        files = {h["source"]["file"] for _, h, _ in chain(store) if h.get("lines") == "csv"}
        assert bad not in files
        cp = Checkpoints(store).load("binance", PRODUCT.product_id)
        assert cp.hi <= sim.archive.day_ids(book, date(2025, 1, 7))[0] - 1  # nothing of that day landed
        # A mismatch that clears (the exchange finished uploading) is retried and lands.
        sim.archive.mismatch[bad] = 1
        clock.advance(61)
        ok = finish(store, sim.url, clock, utc(date(2025, 1, 6)))
    assert ok.status == "ok"
    check_exactly_once(store, sim, book, _start_of(sim, book, date(2025, 1, 6)), book.head())


def test_a_replaced_file_is_reported_and_never_mixed_in(store, clock, capsys):
    book = make_book(start=date(2025, 1, 6))
    name = "BTCUSDT-trades-2025-01-08.zip"
    with make_sim(book, clock) as sim:
        finish(store, sim.url, clock, utc(date(2025, 1, 6)))
        before = [(k, lines) for k, h, lines in chain(store)]
        sim.archive.replace(name)  # the exchange replaces a day already landed
        clock.advance(3600)
        res = run(store, sim.url, clock)
    assert [r["file"] for r in res.replaced] == [name]
    assert res.replaced[0]["landed_sha256"] != res.replaced[0]["now_sha256"]
    assert name in res.message
    assert cli._report([res], as_json=False) != 0
    assert "replaced" in capsys.readouterr().err
    after = dict((k, lines) for k, h, lines in chain(store))
    assert all(after[k] == lines for k, lines in before)  # nothing landed before changed


def test_a_file_replaced_while_its_day_is_half_landed_is_refused_and_reported(store, clock):
    book = make_book(start=date(2025, 1, 6))
    name = "BTCUSDT-trades-2025-01-07.zip"
    with make_sim(book, clock) as sim:
        since = utc(date(2025, 1, 7))
        # Land part of 2025-01-07 only: a killed run (slices of 300 rows, a day is 1,440).
        from tests.archive.landing_sim import KillingStore, Killed

        with pytest.raises(Killed):
            run(KillingStore(store, 6, after=True), sim.url, clock, since, rows_per_object=300)
        landed_rows = [h["source"] for _, h, _ in chain(store) if h.get("lines") == "csv"]
        assert landed_rows and all(s["file"] == name for s in landed_rows)
        sim.archive.replace(name)
        clock.advance(61)
        res = run(store, sim.url, clock, since, rows_per_object=300)
    # Refused and reported (exit 1), not a product failed on every run: REST pages the rest of the day
    # (tests/archive/test_archive_review.py checks that day's trades against the book).
    assert res.status == "ok" and "replaced" in res.message and name in res.message
    assert [r["file"] for r in res.replaced] == [name] and cli._report([res], as_json=False) == 1
    shas = {h["source"]["sha256"] for _, h, _ in chain(store) if h.get("lines") == "csv" and h["source"]["file"] == name}
    assert len(shas) == 1  # every landed slice of the day is from the file as first landed


def test_a_missing_day_is_paged_over_rest_and_reported(store, clock):
    book = make_book(start=date(2025, 1, 6))
    gone = "BTCUSDT-trades-2025-01-08.zip"
    with make_sim(book, clock) as sim:
        sim.archive.missing.add(gone)
        res = finish(store, sim.url, clock, utc(date(2025, 1, 6)))
    assert res.status == "ok"
    assert any(gone in w and "REST" in w for w in res.warnings), res.warnings
    fig = check_exactly_once(store, sim, book, _start_of(sim, book, date(2025, 1, 6)), book.head())
    rest_days = {day_of(book, sim.id_of(line)) for _, h, lines in chain(store) if h.get("lines") != "csv" for line in lines}
    assert date(2025, 1, 8) in rest_days and date(2025, 1, 7) not in rest_days
    assert len(fig["ids"]) > 0


@pytest.mark.parametrize("where", ["tail", "middle"])
def test_a_partial_day_is_not_bridged_the_rest_api_fills_it(store, clock, where):
    book = make_book(start=date(2025, 1, 6))
    with make_sim(book, clock) as sim:
        if where == "tail":
            tail = sim.archive.omit_tail(book, date(2025, 1, 7), 25)  # the file ends 25 trades early
        else:  # a hole inside the file (binance-public-data #363), the REST API has the trades
            lo, hi = sim.archive.day_ids(book, date(2025, 1, 7))
            tail = list(range(lo + 500, lo + 525))
            sim.archive.omit.update(tail)
        res = finish(store, sim.url, clock, utc(date(2025, 1, 6)))
    assert res.status == "ok"
    assert any("BTCUSDT-trades-2025-01-07.zip" in w and "lacks" in w for w in res.warnings), res.warnings
    fig = check_exactly_once(store, sim, book, _start_of(sim, book, date(2025, 1, 6)), book.head())
    # The 25 trades came from REST, as REST printed them, not bridged over.
    by_id = {}
    for _, h, lines in chain(store):
        for line in lines:
            by_id[sim.id_of(line)] = h.get("lines", "json")
    assert {by_id[i] for i in tail} == {"json"}
    assert res.missing_ids == 0 and len(fig["ids"]) > 0


def test_a_hole_the_exchange_confirms_is_reported_as_a_gap_never_landed(store, clock):
    probe = make_book(start=date(2025, 1, 6))
    with make_sim(probe, clock) as sim0:
        lo7, _ = sim0.archive.day_ids(probe, date(2025, 1, 7))
    hole = set(range(lo7 - 3, lo7 + 4))  # ids the exchange never printed, across the midnight join
    book = make_book(start=date(2025, 1, 6), missing=hole)
    with make_sim(book, clock) as sim:
        res = finish(store, sim.url, clock, utc(date(2025, 1, 6)))
    assert res.status == "ok"
    assert res.missing_ids == len(hole), res
    fig = check_exactly_once(store, sim, book, _start_of(sim, book, date(2025, 1, 6)), book.head())
    assert not hole & set(fig["ids"])
    # The audit sees the hole as the exchange's (confirmed by REST at the join), not as ours.
    from schemahub.audit import CONFIRMED, audit_product
    from schemahub.transform import Transformer

    assert Transformer(store).run().ok
    a = audit_product(store, "binance", PRODUCT.product_id)
    assert a.ok and a.missing[CONFIRMED] == len(hole), a.to_dict()["holes"]


def test_a_header_row_is_detected_and_dropped(store, clock):
    book = make_book(start=date(2025, 1, 8))
    with make_sim(book, clock, header=True) as sim:
        res = finish(store, sim.url, clock, utc(date(2025, 1, 8)))
    assert res.status == "ok" and res.archive_objects >= 1
    check_exactly_once(store, sim, book, _start_of(sim, book, date(2025, 1, 8)), book.head())
    rows = [h["source"]["rows"] for _, h, _ in chain(store) if h.get("lines") == "csv"]
    assert rows[0][0] == 2  # line 1 of the file is its header


def test_a_month_covered_by_a_backfill_comes_from_its_monthly_file(store, clock):
    book = make_book(start=date(2024, 11, 25))
    with make_sim(book, clock) as sim:
        res = finish(store, sim.url, clock, utc(date(2024, 12, 1)), monthly=True)
    assert res.status == "ok"
    check_exactly_once(store, sim, book, _start_of(sim, book, date(2024, 12, 1)), book.head())
    served = set(sim.archive.served)
    assert "BTCUSDT-trades-2024-12.zip" in served
    assert not any(n.startswith("BTCUSDT-trades-2024-12-") for n in served), sorted(served)


def test_a_run_at_the_live_edge_downloads_no_archive_file(store, clock):
    book = make_book(start=date(2025, 1, 8))
    with make_sim(book, clock) as sim:
        finish(store, sim.url, clock)
        sim.archive.served.clear()
        n = len(sim.requests)
        res = run(store, sim.url, clock)
        later = sim.requests[n:]
    assert res.status == "ok" and not sim.archive.served
    assert not [r for r in later if r.endswith(".zip")], later  # only the recheck of recent checksums
    assert [r for r in later if r.endswith(".CHECKSUM")]


def test_an_archive_run_adopts_rest_objects_a_killed_run_left_and_joins_them_mid_file(store, clock):
    from schemahub.landing import IngestOptions, Lander
    from tests.archive.landing_sim import KillingStore, Killed, make_source

    book = make_book(start=date(2025, 1, 6))
    since = utc(date(2025, 1, 6))
    with make_sim(book, clock) as sim:
        # A run without the archive (REST only) is killed after landing a few objects of 2025-01-06.
        rest_only = make_source(sim.url, clock)
        rest_only.archive = None
        with pytest.raises(Killed):
            Lander(KillingStore(store, 9, after=True), rest_only, clock=clock).run(PRODUCT, IngestOptions(since=since))
        rest_before = [(k, h["cursor_end"]) for k, h, _ in chain(store)]
        assert rest_before and all(h.get("lines") != "csv" for _, h, _ in chain(store))
        clock.advance(61)
        res = finish(store, sim.url, clock, since)
    assert res.status == "ok" and res.archive_objects >= 1
    fig = check_exactly_once(store, sim, book, _start_of(sim, book, date(2025, 1, 6)), book.head())
    objs = chain(store)
    assert [(k, h["cursor_end"]) for k, h, _ in objs[: len(rest_before)]] == rest_before  # adopted, not rewritten
    nxt = objs[len(rest_before)][1]
    assert nxt.get("lines") == "csv" and nxt["source"]["rows"][0] > 1  # the file entered at the row after them
    assert fig["joins"] >= 2


def test_a_dry_run_says_which_days_come_from_the_archive_and_downloads_nothing(store, clock):
    from schemahub.landing import IngestOptions, Lander
    from tests.archive.landing_sim import make_source

    book = make_book(start=date(2025, 1, 6))
    with make_sim(book, clock) as sim:
        res = Lander(store, make_source(sim.url, clock), clock=clock).run(
            PRODUCT, IngestOptions(since=utc(date(2025, 1, 7)), dry_run=True))
        assert not [r for r in sim.requests if r.startswith("/data/")]
    assert res.status == "planned" and res.plan["archive_through"] == "2025-01-09"  # 01-10 10:00 is 8 h past the end of 01-09
    assert not chain(store)


def test_a_stale_archive_run_cannot_land_a_slice_overlapping_what_another_run_landed_meanwhile(store, clock):
    from schemahub.landing import IngestOptions, Lander
    from tests.archive.landing_sim import make_source

    book = make_book(start=date(2025, 1, 7))
    since = utc(date(2025, 1, 8))
    with make_sim(book, clock) as sim:
        later = FakeClock(start=NOW.timestamp() + 120)  # the other run starts after this run's lease expired

        class Interleaved:
            """The store as run A sees it: just before A's first archive slice is put, run B lands over REST."""

            def __init__(self, inner):
                self.inner, self.fired = inner, False

            def put(self, key, data, **kw):
                if key.startswith("raw/") and not self.fired:
                    self.fired = True
                    b = make_source(sim.url, later)
                    b.archive = None
                    res_b = Lander(self.inner, b, clock=later).run(PRODUCT, IngestOptions(since=since))
                    assert res_b.status == "ok" and res_b.objects >= 2, res_b
                return self.inner.put(key, data, **kw)

            def __getattr__(self, name):
                return getattr(self.inner, name)

        res_a = Lander(Interleaved(store), make_source(sim.url, clock), clock=clock).run(PRODUCT, IngestOptions(since=since))
    assert res_a.status == "ok", res_a
    assert res_a.archive_objects == 0 and res_a.adopted >= 1  # its slice lost the race: it followed B's chain
    fig = check_exactly_once(store, sim, book, _start_of(sim, book, date(2025, 1, 8)), book.head())
    assert fig["archive"] == 0


def test_a_file_above_the_size_caps_is_paged_over_rest_not_a_stuck_product(store, clock):
    book = make_book(start=date(2025, 1, 7))
    with make_sim(book, clock) as sim:
        res = finish(store, sim.url, clock, utc(date(2025, 1, 8)), max_file_bytes=1024)  # a day's zip is ~30 KB
    assert res.status == "ok" and res.archive_objects == 0
    assert any("too large" in w and "REST" in w for w in res.warnings), res.warnings
    check_exactly_once(store, sim, book, _start_of(sim, book, date(2025, 1, 8)), book.head())


def test_a_file_out_of_id_order_is_not_sliced_row_by_row_rest_pages_its_day(store, clock):
    # A damaged file holding every row of its day in disorder: each break would end a slice, one object per row
    # (a busy day: a million objects, each a search of the file's ids). It is not sliced; REST pages the day.
    book = make_book(start=date(2025, 1, 6))
    bad = "BTCUSDT-trades-2025-01-07.zip"
    with make_sim(book, clock) as sim:
        sim.archive.shuffled.add(bad)
        lo, hi = sim.archive.day_ids(book, date(2025, 1, 7))
        res = finish(store, sim.url, clock, utc(date(2025, 1, 6)))
    assert res.status == "ok"
    assert any(bad in w and "not sliced" in w and "REST" in w for w in res.warnings), res.warnings
    fig = check_exactly_once(store, sim, book, _start_of(sim, book, date(2025, 1, 6)), book.head())
    kinds = {}
    for _, h, lines in chain(store):
        for line in lines:
            kinds[sim.id_of(line)] = h.get("lines", "json")
    assert {kinds[i] for i in range(lo, hi + 1)} == {"json"}  # the whole day from REST
    _, hi8 = sim.archive.day_ids(book, date(2025, 1, 8))
    assert kinds[lo - 1] == "csv" and kinds[hi8] == "csv"  # the days around it from their files
    day_objects = sum(1 for _, h, _ in chain(store) if lo <= int(h["cursor_end"]) and int(h["cursor_start"]) < hi)
    assert day_objects < 20, day_objects  # REST pages of 200 trades, 2 a object: ~1,440 trades -> ~4 objects
    assert len(fig["ids"]) > 0
