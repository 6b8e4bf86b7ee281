"""Reviewer's tests of an archive zip member read from its bytes (sources/archive.py read_member)."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from datetime import date

import pytest

from schemahub.clock import FakeClock
from schemahub.errors import ArchiveUnreadable
from schemahub.sources.archive import ArchiveFile
from tests.archive.landing_sim import NOW, make_source

DAY = date(2025, 1, 8)
ROW = b"4000000000,97123.45000000,0.00012000,11.65481400,1736208000000000,True,True\n"


def _lying_zip(csv: bytes, claimed: int, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """One member whose local header and central directory both say it unpacks to `claimed` bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method, compresslevel=9) as z:
        z.writestr(zipfile.ZipInfo("a.csv", date_time=(2025, 1, 9, 0, 0, 0)), csv, method)
    data = bytearray(buf.getvalue())
    struct.pack_into("<L", data, 22, claimed)  # local file header: uncompressed size
    cd = data.rfind(b"PK\x01\x02")
    struct.pack_into("<L", data, cd + 24, claimed)  # central directory: uncompressed size
    assert zipfile.ZipFile(io.BytesIO(bytes(data))).infolist()[0].file_size == claimed
    return bytes(data)


def test_a_zip_that_understates_its_csv_size_is_refused_without_inflating_the_whole_member():
    # A hostile (or broken) archive whose directory says its CSV is small, while the deflate stream unpacks to far
    # more (a zip bomb): max_csv_bytes guards memory only if no more than the stated size is ever inflated, as
    # zipfile.read() does (it stops at file_size, then the CRC fails). Inflating the whole stream in one call
    # holds all of it (64 MiB here; gigabytes for a bomb) before the size check refuses it.
    import tracemalloc

    csv = ROW * ((64 << 20) // len(ROW))
    data = _lying_zip(csv, claimed=100_000)
    del csv
    a = make_source("http://127.0.0.1:9", FakeClock(start=NOW.timestamp())).archive
    f = ArchiveFile(f"BTCUSDT-trades-{DAY}.zip", "/x", DAY, DAY)
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveUnreadable):
            a._unpack(f, "0" * 64, data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak  # the stated 100 kB, not the 64 MiB the stream holds


def _unpacked(csv: bytes):
    """The day file holding csv (one deflated member), unpacked by the archive source."""
    a = make_source("http://127.0.0.1:9", FakeClock(start=NOW.timestamp())).archive
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.csv", csv)
    return a._unpack(ArchiveFile(f"BTCUSDT-trades-{DAY}.zip", "/x", DAY, DAY), "0" * 64, buf.getvalue())


def test_a_zip_member_read_from_its_bytes_is_the_member_zipfile_reads():
    csv = b"".join(b"%d,1.5,2.5,%d,True,True\n" % (4_000_000_000 + i, 1736208000000 + i) for i in range(5000))
    lf = _unpacked(csv)
    assert lf.data == csv and lf.first_id == 4_000_000_000 and lf.last_id == 4_000_004_999
    assert zlib.crc32(lf.data) == zlib.crc32(csv)


@pytest.mark.parametrize("csv", [
    ROW,  # the day's one trade, its line end kept
    ROW[:-1],  # ... or not
    b"id,price,qty,quote_qty,time,is_buyer_maker,is_best_match\n" + ROW,  # with a header row
    ROW + b"\n\n",  # blank lines after it
    ROW.replace(b"\n", b"\r\n"),
], ids=["newline", "no newline", "header", "blank lines after", "crlf"])
def test_a_day_file_of_one_trade_is_read_as_that_trade(csv):
    # A quiet pair's day can hold a single trade. Its row is the file's last and only row: the CSV reader was
    # handed it without its line end and refused it ("Empty CSV file or block"), so the day was paged over REST.
    lf = _unpacked(csv)
    assert (lf.first_id, lf.last_id) == (4_000_000_000, 4_000_000_000)
    assert lf.rows(0, 1) == [ROW[:-1]]


def _flagged(csv: bytes, *, flag: int = 0, method: int | None = None) -> bytes:
    """One member, its general purpose flag ORed with flag and its method set (local header and directory)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("a.csv", date_time=(2025, 1, 9, 0, 0, 0)), csv, zipfile.ZIP_DEFLATED)
    data = bytearray(buf.getvalue())
    cd = data.rfind(b"PK\x01\x02")
    for at in (6, cd + 8):  # flag bits: local header offset 6, directory offset 8 (method follows each)
        struct.pack_into("<H", data, at, struct.unpack_from("<H", data, at)[0] | flag)
        if method is not None:
            struct.pack_into("<H", data, at + 2, method)
    return bytes(data)


@pytest.mark.parametrize("make", [lambda csv: _flagged(csv, flag=0x1), lambda csv: _flagged(csv, method=9),
                                  lambda csv: _flagged(csv, method=99)],
                         ids=["encrypted", "deflate64", "aes"])
def test_a_verified_file_whose_member_zipfile_cannot_read_is_paged_over_rest(tmp_path, make):
    # zipfile raises RuntimeError (encrypted) or NotImplementedError (a method it lacks): neither is a
    # BadZipFile, so the product failed on this file at every run instead of paging the day over REST.
    from schemahub.store.local import LocalStore
    from tests.archive.landing_sim import check_exactly_once, finish, make_book, make_sim, utc
    from tests.archive.test_archive_review import NAME, _serve, _start_of

    store = LocalStore(str(tmp_path))
    clock = FakeClock(start=NOW.timestamp())
    book = make_book(start=date(2025, 1, 7))
    with make_sim(book, clock) as sim:
        _serve(sim, book, NAME, make)
        res = finish(store, sim.url, clock, utc(date(2025, 1, 7)))
    assert res.status == "ok", res.message
    assert any(NAME in w and "REST" in w for w in res.warnings), res.warnings
    check_exactly_once(store, sim, book, _start_of(sim, book, date(2025, 1, 7)), book.head())


@pytest.mark.parametrize("method", [zipfile.ZIP_LZMA, zipfile.ZIP_BZIP2], ids=["lzma", "bzip2"])
def test_a_member_in_a_method_with_no_output_cap_is_refused_before_it_is_unpacked(method):
    # zipfile reads a bzip2 or LZMA member 4 KiB of input at a time, with no limit on what each 4 KiB unpacks
    # to: a member that understates its size (a bomb) was unpacked whole (8 MiB here, a 25 MiB peak; gigabytes
    # for a real bomb) before its size and CRC were checked. Binance's files are deflated: such a member is
    # unreadable (REST pages its day, as for an encrypted member), and nothing of it is unpacked.
    import tracemalloc

    csv = ROW * ((8 << 20) // len(ROW))
    data = _lying_zip(csv, claimed=100_000, method=method)
    del csv
    a = make_source("http://127.0.0.1:9", FakeClock(start=NOW.timestamp())).archive
    f = ArchiveFile(f"BTCUSDT-trades-{DAY}.zip", "/x", DAY, DAY)
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveUnreadable, match="method"):
            a._unpack(f, "0" * 64, data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak
