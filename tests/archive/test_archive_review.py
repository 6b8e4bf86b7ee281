"""Hostile archive files and joins (review of #12 §1): files as a real archive or a damaged upload could serve
them, built by hand from the simulator's book; ground truth is the book (tests/archive/landing_sim.py)."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import date

import pytest

from schemahub.clock import FakeClock
from schemahub.layout import quarantine_key
from schemahub.store import open_store
from schemahub.store.local import LocalStore
from schemahub.transform import Transformer
from tests.archive.landing_sim import NOW, chain, check_exactly_once, day_of, finish, make_book, make_sim, utc
from tests.archive.test_archive_transform import put_csv
from tests.transform.helpers import curated_rows

DAY = date(2025, 1, 8)
NAME = f"BTCUSDT-trades-{DAY}.zip"


@pytest.fixture
def clock():
    return FakeClock(start=NOW.timestamp())


@pytest.fixture
def store(tmp_path):
    return open_store(str(tmp_path / "store"))


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for n, data in members:  # a fixed date: the checksum and the file are built by separate requests
            z.writestr(zipfile.ZipInfo(n, date_time=(2025, 1, 9, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def _serve(sim, book, name: str, make):
    """The archive serves `name` as make(csv of the day as the simulator prints it) -> zip bytes."""
    plain = sim.archive.zip_bytes

    def zip_bytes(b, n, first, last):
        if n != name:
            return plain(b, n, first, last)
        return make(sim.archive.csv(b, first, last))

    sim.archive.zip_bytes = zip_bytes


def _start_of(sim, book, d: date) -> int:
    return sim.archive.day_ids(book, d)[0] - 1


def _kinds_by_day(sim, book, store) -> dict[date, set[str]]:
    out: dict[date, set[str]] = {}
    for _, h, lines in chain(store):
        for line in lines:
            out.setdefault(day_of(book, sim.id_of(line)), set()).add(h.get("lines", "json"))
    return out


# A file the exchange published with a matching checksum, but which is not one readable CSV of trades. The
# checksum cannot help (it is the exchange's own file): every run would fail on it again, forever.
DAMAGED = {
    "two members": lambda csv: _zip([("a.csv", csv), ("b.csv", csv)]),
    "a header row in the middle": lambda csv: _zip([("a.csv", csv[: csv.index(b"\n", len(csv) // 2) + 1]
                                                    + b"id,price,qty,quoteQty,time,isBuyerMaker,isBestMatch\n"
                                                    + csv[csv.index(b"\n", len(csv) // 2) + 1:])]),
    "not a zip": lambda csv: b"<html>503 Service Unavailable</html>",
}


@pytest.mark.parametrize("damage", sorted(DAMAGED))
def test_a_verified_file_that_is_not_one_readable_csv_is_paged_over_rest_not_a_product_stuck_forever(
        store, clock, damage):
    book = make_book(start=date(2025, 1, 7))
    with make_sim(book, clock) as sim:
        _serve(sim, book, NAME, DAMAGED[damage])
        res = finish(store, sim.url, clock, utc(date(2025, 1, 7)))
    assert res.status == "ok", res.message
    assert any(NAME in w and "REST" in w for w in res.warnings), res.warnings
    check_exactly_once(store, sim, book, _start_of(sim, book, date(2025, 1, 7)), book.head())
    kinds = _kinds_by_day(sim, book, store)
    assert kinds[DAY] == {"json"} and kinds[date(2025, 1, 7)] == {"csv"}, kinds


# Spellings of the same rows that are still the whole file, row for row.
WHOLE = {
    "a UTF-8 BOM": lambda csv: b"\xef\xbb\xbf" + csv,  # not a header row: line 1 is the day's first trade
    "CRLF line ends, none after the last row": lambda csv: csv.replace(b"\n", b"\r\n")[:-2],
    "blank lines after the last row": lambda csv: csv + b"\n\n",
}


@pytest.mark.parametrize("form", sorted(WHOLE))
def test_a_file_in_another_spelling_of_its_rows_lands_every_row_from_the_file(store, clock, form):
    book = make_book(start=date(2025, 1, 7))
    with make_sim(book, clock) as sim:
        _serve(sim, book, NAME, lambda csv: _zip([("a.csv", WHOLE[form](csv))]))
        res = finish(store, sim.url, clock, utc(date(2025, 1, 7)))
        first = sim.archive.day_ids(book, DAY)[0]
    assert res.status == "ok", res.message
    assert not any(NAME in w for w in res.warnings), res.warnings
    check_exactly_once(store, sim, book, _start_of(sim, book, date(2025, 1, 7)), book.head())
    srcs = [(h["source"]["rows"], int(h["min_id"])) for _, h, _ in chain(store)
            if h.get("lines") == "csv" and h["source"]["file"] == NAME]
    assert srcs and srcs[0] == ([1, srcs[0][0][1]], first), srcs  # line 1 of the file is the day's first trade
    assert _kinds_by_day(sim, book, store)[DAY] == {"csv"}


def test_a_csv_object_read_before_any_json_object_still_refuses_a_non_canonical_id(tmp_path):
    # ' 11' is trade 11 with a space: as text it would be a second row for trade 11 beside REST's '11'. The
    # check must not depend on whether a JSON object of the exchange happened to be read first.
    store = LocalStore(str(tmp_path / "s"))
    rows = [b" 11,97000.5,0.001,97.0005,1736208000000000,True,True",
            b"12,97000.5,0.001,97.0005,1736208000001000,False,True"]
    key = put_csv(store, rows, start=10, min_id=11, max_id=12)
    res = Transformer(store).run()
    assert [r["trade_id"] for r in curated_rows(store)] == ["12"]
    assert res.quarantined == 1
    q = [json.loads(x) for x in store.get(quarantine_key(key)).data.splitlines()]
    assert [(x["line"], x["field"]) for x in q] == [(2, "trade_id")]


@pytest.mark.parametrize("landed_rows", ["some", "none"])
def test_a_file_replaced_while_its_day_is_half_landed_is_reported_and_the_rest_of_the_day_paged_over_rest(
        store, clock, landed_rows):
    # "some": a killed run landed part of the day from the file. "none": a run died between the file's record
    # and its first slice. Either way the new file must never be mixed in, and the product must not fail on
    # every run from now on (its live trades would never land): the rest of the day is paged over REST, and
    # the replacement is reported (exit 1).
    from schemahub import cli
    from tests.archive.landing_sim import Killed, KillingStore, run

    book = make_book(start=date(2025, 1, 6))
    name = "BTCUSDT-trades-2025-01-07.zip"
    since = utc(date(2025, 1, 7))
    with make_sim(book, clock) as sim:
        # Writes: checkpoint create, lease, archive record, chain start, first slice, its checkpoint, ...
        with pytest.raises(Killed):
            run(KillingStore(store, 6 if landed_rows == "some" else 3, after=True), sim.url, clock, since,
                rows_per_object=300)
        old = {h["source"]["sha256"] for _, h, _ in chain(store) if h.get("lines") == "csv"}
        assert len(old) == (1 if landed_rows == "some" else 0)
        assert store.list("archive/")
        sim.archive.replace(name)
        new_sha = __import__("hashlib").sha256(sim.archive.zip_bytes(book, name, date(2025, 1, 7),
                                                                     date(2025, 1, 7))).hexdigest()
        clock.advance(61)
        res = run(store, sim.url, clock, since, rows_per_object=300)
        assert res.status == "ok", res.message
        assert [r["file"] for r in res.replaced] == [name] and res.replaced[0]["now_sha256"] == new_sha
        assert cli._report([res], as_json=False) == 1
        finish(store, sim.url, clock, since, rows_per_object=300)
    check_exactly_once(store, sim, book, _start_of(sim, book, date(2025, 1, 7)), book.head())
    shas = {h["source"]["sha256"] for _, h, _ in chain(store) if h.get("lines") == "csv"
            and h["source"]["file"] == name}
    assert new_sha not in shas and shas == old
    assert "json" in _kinds_by_day(sim, book, store)[date(2025, 1, 7)]


CHECKSUM_FORMS = {
    "upper-case hex, CRLF": lambda sha, name: f"{sha.upper()}  {name}\r\n",
    "sha256sum binary mode (*name)": lambda sha, name: f"{sha} *{name}\n",
    "extra whitespace": lambda sha, name: f"  {sha} \t {name}  \n\n",
    "a path before the name": lambda sha, name: f"{sha}  ./{name}\n",
}


@pytest.mark.parametrize("form", sorted(CHECKSUM_FORMS))
def test_every_spelling_of_a_matching_checksum_line_verifies_the_file(store, clock, form):
    import hashlib

    book = make_book(start=date(2025, 1, 8))
    with make_sim(book, clock) as sim:
        plain = sim.archive.route

        def route(segs):
            out = plain(segs)
            if out is None or out[0] != 200 or not segs[-1].endswith(".CHECKSUM"):
                return out
            name = segs[-1].removesuffix(".CHECKSUM")
            zb = plain(segs[:-1] + [name])[2]
            return 200, {}, CHECKSUM_FORMS[form](hashlib.sha256(zb).hexdigest(), name).encode()

        sim.archive.route = route
        res = finish(store, sim.url, clock, utc(date(2025, 1, 8)))
    assert res.status == "ok", res.message
    assert res.archive_objects >= 1 and not res.warnings, res.warnings
    check_exactly_once(store, sim, book, _start_of(sim, book, date(2025, 1, 8)), book.head())


def test_a_loaded_file_holds_its_csv_about_once_not_as_a_python_object_per_row():
    # A busy pair's day is GiBs of CSV, and a Lambda gets an eighth / a quarter of its memory for the zip /
    # CSV (sources/build.py). A Python bytes object per row costs ~33 bytes of overhead plus a list slot on
    # top of each ~75-byte row: the file held ~2.5 times while it lands. Budget: the CSV once, plus 16
    # bytes per row (an id and an offset), plus 10%.
    import tracemalloc

    import pyarrow as pa

    from schemahub.sources.archive import ArchiveFile
    from tests.archive.landing_sim import make_source

    clock = FakeClock(start=NOW.timestamp())
    a = make_source("http://127.0.0.1:9", clock).archive
    n = 200_000
    csv = b"".join(b"%d,97123.45000000,0.00012000,11.65481400,%d,True,True\n" % (4_000_000_000 + i, 1736208000000000 + i)
                   for i in range(n))
    data = _zip([("a.csv", csv)])
    size = len(csv)
    del csv
    f = ArchiveFile("BTCUSDT-trades-2025-01-07.zip", "/x", DAY, DAY)
    tracemalloc.start()
    arrow0 = pa.total_allocated_bytes()
    try:
        lf = a._unpack(f, "0" * 64, data)
        held = tracemalloc.get_traced_memory()[0] + pa.total_allocated_bytes() - arrow0
    finally:
        tracemalloc.stop()
    assert lf.first_id == 4_000_000_000 and lf.last_id == 4_000_000_000 + n - 1
    assert held <= 1.1 * (size + 16 * n), (held, size)


def _reorder(kind: str):
    def make(csv: bytes) -> bytes:
        rows = csv.rstrip(b"\n").split(b"\n")
        k = len(rows) // 2
        if kind == "two rows swapped":
            rows[k], rows[k + 1] = rows[k + 1], rows[k]
        elif kind == "a row repeated":
            rows.insert(k + 1, rows[k])
        elif kind == "a row moved to the end":
            rows.append(rows.pop(k))
        return _zip([("a.csv", b"\n".join(rows) + b"\n")])
    return make


@pytest.mark.parametrize("kind", ["two rows swapped", "a row repeated", "a row moved to the end"])
def test_rows_out_of_id_order_or_repeated_inside_a_file_land_once_each_in_id_order(store, clock, kind):
    book = make_book(start=date(2025, 1, 7))
    with make_sim(book, clock) as sim:
        _serve(sim, book, NAME, _reorder(kind))
        res = finish(store, sim.url, clock, utc(date(2025, 1, 7)))
    assert res.status == "ok", res.message
    check_exactly_once(store, sim, book, _start_of(sim, book, date(2025, 1, 7)), book.head())
    kinds = _kinds_by_day(sim, book, store)
    assert kinds[DAY] == {"csv"}, kinds  # every trade of the day is in its file: none needs REST


def test_a_first_row_with_an_integer_id_is_a_trade_even_if_its_numbers_are_words(tmp_path):
    # Landing only ever writes rows with an integer trade id. A first row whose price, size and time read
    # `NaN` is a damaged trade (quarantined with its reason), not a header row silently dropped: dropped, the
    # audit would find trade 11 landed in raw but missing from the table.
    store = LocalStore(str(tmp_path / "s"))
    rows = [b"11,NaN,NaN,NaN,NaN,True,True", b"12,97000.5,0.001,97.0005,1736208000001000,False,True"]
    key = put_csv(store, rows, start=10, min_id=11, max_id=12)
    res = Transformer(store).run()
    assert [r["trade_id"] for r in curated_rows(store)] == ["12"]
    assert res.quarantined == 1
    q = [json.loads(x) for x in store.get(quarantine_key(key)).data.splitlines()]
    assert [(x["line"], x["field"]) for x in q] == [(2, "price")]  # line 1 of a raw object is its header


def test_a_garbled_checksum_of_a_file_landed_days_ago_does_not_stop_todays_trades(store, clock):
    # The recheck of recent files only reports; a CHECKSUM it cannot read (a CDN error page served with
    # 200) must not stop the product's new trades from landing, run after run.
    book = make_book(start=date(2025, 1, 8))
    with make_sim(book, clock) as sim:
        finish(store, sim.url, clock, utc(date(2025, 1, 8)))
        plain = sim.archive.route

        def route(segs):
            if segs[-1] == NAME + ".CHECKSUM":
                return 200, {}, b"<html><body>504 Gateway Time-out</body></html>"
            return plain(segs)

        sim.archive.route = route
        clock.advance(600)
        hi = book.head()
        res = finish(store, sim.url, clock)
    assert res.status == "ok", res.message
    assert any(NAME in w for w in res.warnings), res.warnings
    check_exactly_once(store, sim, book, _start_of(sim, book, date(2025, 1, 8)), hi)


def test_a_checksum_that_is_gone_for_a_file_landed_days_ago_is_reported_never_silent(store, clock):
    # The exchange takes a landed day's files down (both zip and CHECKSUM answer 404): the trades stay landed, and
    # the recheck says it could not check that file, so an operator can look, instead of passing over it in silence.
    book = make_book(start=date(2025, 1, 8))
    with make_sim(book, clock) as sim:
        finish(store, sim.url, clock, utc(date(2025, 1, 8)))
        sim.archive.missing.add(NAME)
        clock.advance(600)
        hi = book.head()
        res = finish(store, sim.url, clock)
    assert res.status == "ok", res.message
    assert any(NAME in w and "no longer published" in w for w in res.warnings), res.warnings
    check_exactly_once(store, sim, book, _start_of(sim, book, date(2025, 1, 8)), hi)
