"""Reviewer's tests: a day file read chunk by chunk (sources/archive.py _Rows, _Index) decides as the whole file did.

Until ebb3dbd the whole member was read by one pyarrow read_csv (column names generated from its first row, its
quoting and its byte order mark handling applied once, to the whole body). Reading it piece by piece must give the
same rows, ids and readable/unreadable decision wherever the pieces end. Each expected value here is what that
whole-file read gives (checked against ebb3dbd's _unpack), or follows from the CSV rule itself.
"""

from __future__ import annotations

import io
import zipfile
from datetime import date

import pytest

import schemahub.sources.archive as archive
from schemahub.clock import FakeClock
from schemahub.errors import ArchiveUnreadable
from schemahub.sources.archive import ArchiveFile
from tests.archive.landing_sim import NOW, make_source

DAY = date(2025, 1, 8)
BOM = b"\xef\xbb\xbf"


def _zip(csv: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("a.csv", date_time=(2025, 1, 9, 0, 0, 0)), csv, zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def _unpack(data: bytes):
    a = make_source("http://127.0.0.1:9", FakeClock(start=NOW.timestamp())).archive
    return a._unpack(ArchiveFile(f"BTCUSDT-trades-{DAY}.zip", "/x", DAY, DAY), "0" * 64, data)


def _rows(first: int, n: int) -> bytes:
    return b"".join(b"%d,97123.45,0.0012,11.65,1736208000000000,True,True\n" % (first + i) for i in range(n))


def test_a_row_that_starts_with_a_byte_order_mark_inside_the_file_is_unreadable_wherever_the_pieces_end(monkeypatch):
    # A BOM is dropped only before the file's first row. A later row that starts with one has no integer id in its
    # first cell ("\xef\xbb\xbf8"): the whole file read refuses it. pyarrow skips a BOM at the start of each input
    # it is handed, so a row that happened to start a piece had its BOM skipped by the id reader: the file was
    # readable, and the row landed with the BOM in its first cell, at some chunk boundaries and not at others.
    csv = _rows(5, 3) + BOM + _rows(8, 3)
    data = _zip(csv)
    for step in range(1, 80):
        monkeypatch.setattr(archive, "INFLATE_STEP", step)
        with pytest.raises(ArchiveUnreadable):
            lf = _unpack(data)
            pytest.fail(f"step {step}: readable, rows {lf.rows(0, lf.count)[3]!r}...")


def test_the_first_rows_width_counts_all_its_cells_however_long_it_is():
    # The width every row must have is the first row's: all of its cells, not those in its first 64 KiB.
    wide = b"1.5," * 20_000  # 80 kB of cells
    csv = b"5," + wide + b"1\n6," + wide + b"1\n"
    lf = _unpack(_zip(csv))
    assert (lf.ids.to_pylist(), lf.count) == ([5, 6], 2)


@pytest.mark.parametrize("step", [1, 2, 3, 5, 8, 13, 1 << 20])
@pytest.mark.parametrize("csv", [
    b'5,"a,b",3\n6,"c,d",4\n',  # a comma in quotes
    b'5,1\n6,"',  # a quote left open at the file's end
    b'5,1,"2\n6,1,2\n7,1,2\n8,1,2\n',  # a quote left open: to a CSV reader it swallows the rows after it
    b'100,1.5,"1.5\n101,1.5,1.5\n102,1.5,1.5\n103,1.5,1.5\n104,1.5,1.5\n',
    b'5,"1\n2",3\n6,1,2\n',  # a line end in quotes: one CSV row over two lines
    b'"5","1.5","2.5","3.75","1736208000000","True","True"\n',  # every cell quoted, each a valid value inside
], ids=["comma in quotes", "open quote at the end", "open quote", "open quote late", "line end in quotes", "all quoted"])
def test_a_file_with_quotes_is_unreadable_wherever_the_pieces_end(monkeypatch, step, csv):
    # Read piece by piece, a quote's cell ran to the piece's end, so the ids depended on where the pieces ended.
    # Binance prints numbers and True/False, never a quote, and the transform reads archive cells without
    # quoting: a quoted cell would land and be quarantined ("1.5" is not a decimal). Such a file is refused
    # whatever the boundaries, and REST pages its day.
    monkeypatch.setattr(archive, "INFLATE_STEP", step)
    with pytest.raises(ArchiveUnreadable, match="quote"):
        _unpack(_zip(csv))
