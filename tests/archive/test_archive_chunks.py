"""A day file read chunk by chunk (sources/archive.py: _member_chunks, _Rows, _Index) reads as the whole file does.

The member is inflated a few MB at a time and its rows are indexed while the next chunk inflates. Rows, line ends
and blank lines then fall across chunk boundaries anywhere. Here the step is shrunk to a few bytes, so that every
boundary case happens in small files, and each file is checked against one rule applied to the whole member's bytes
(zipfile's own read): BOM and header row dropped, CRLF made LF, line ends after the last row dropped, every other
line a row with an integer id in its first cell, the first row's width and no lone CR, else the file is unreadable.
"""

from __future__ import annotations

import io
import random
import zipfile
from datetime import date

import pytest

import schemahub.sources.archive as archive
from schemahub.clock import FakeClock
from schemahub.errors import ArchiveUnreadable
from schemahub.sources.archive import ArchiveFile
from tests.archive.landing_sim import NOW, make_source

DAY = date(2025, 1, 8)
HEADER = b"id,price,qty,quote_qty,time,is_buyer_maker,is_best_match\n"


def _row(i: int, rng: random.Random) -> bytes:
    price = f"{rng.randint(1, 10**7)}.{rng.randint(0, 10**8):08d}"
    return f"{4_000_000_000 + i},{price},0.{rng.randint(1, 10**8):08d},1.5,{1736208000000000 + i},True,True\n".encode()


def _zip(csv: bytes, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        z.writestr(zipfile.ZipInfo("a.csv", date_time=(2025, 1, 9, 0, 0, 0)), csv, method)
    return buf.getvalue()


def _expected(csv: bytes):
    """(rows, header_lines) by the rule, from the whole member, or None when the file is unreadable."""
    if csv.startswith(b"\xef\xbb\xbf"):
        csv = csv[3:]
    csv = csv.replace(b"\r\n", b"\n")
    lines = csv.split(b"\n")
    header = 0
    first = lines[0]
    cell = first.split(b",")[0]
    if first.strip() and not cell.strip().isdigit():
        header, lines = 1, lines[1:]
    while lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        return [], header
    width = lines[0].count(b",") + 1
    for line in lines:
        cells = line.split(b",")
        if len(cells) != width or not cells[0].strip().isdigit() or b"\r" in line:  # a lone CR ends a CSV row
            return None
    return lines, header


def _unpack(data: bytes):
    a = make_source("http://127.0.0.1:9", FakeClock(start=NOW.timestamp())).archive
    return a._unpack(ArchiveFile(f"BTCUSDT-trades-{DAY}.zip", "/x", DAY, DAY), "0" * 64, data)


def _files():
    rng = random.Random(5)
    rows = b"".join(_row(i, rng) for i in range(300))
    crlf = rows.replace(b"\n", b"\r\n")
    yield "plain", rows
    yield "no last line end", rows[:-1]
    yield "header", HEADER + rows
    yield "bom and header", b"\xef\xbb\xbf" + HEADER + rows
    yield "bom", b"\xef\xbb\xbf" + rows
    yield "crlf", crlf
    yield "crlf, header, no last line end", HEADER.replace(b"\n", b"\r\n") + crlf[:-2]
    yield "blank lines after", rows + b"\n" * 500
    yield "crlf blank lines after", crlf + b"\r\n" * 40
    yield "a blank line in the middle", rows[:4000] + rows[4000:].replace(b"\n", b"\n\n", 1)
    yield "blank lines first", b"\n\n" + rows
    yield "only blank lines", b"\n" * 300
    yield "only a header", HEADER
    yield "one row", rows[: rows.index(b"\n") + 1]
    yield "a wider row late", rows + rows[:200].replace(b",True,True\n", b",True,True,x\n", 1)
    yield "a row without an id", rows + b",1.0,1.0,1.0,1736208000000000,True,True\n" + rows
    yield "a lone carriage return", rows[:3000] + b"\r" + rows[3000:]
    yield "one line of 40 kB", b"4000000000," + b"9" * 40_000 + b",1,1,1,True,True\n"


@pytest.mark.parametrize("step", [1, 7, 64, 1000, 1 << 20])
@pytest.mark.parametrize("name,csv", list(_files()), ids=[n for n, _ in _files()])
def test_a_file_read_in_chunks_of_any_size_is_read_as_the_whole_file(monkeypatch, step, name, csv):
    monkeypatch.setattr(archive, "INFLATE_STEP", step)
    want = _expected(csv)
    if want is None:
        with pytest.raises(ArchiveUnreadable):
            _unpack(_zip(csv))
        return
    rows, header = want
    lf = _unpack(_zip(csv))
    assert lf.header_lines == header
    assert lf.count == len(rows)
    assert lf.rows(0, lf.count) == rows
    assert lf.ids.to_pylist() == [int(r.split(b",")[0]) for r in rows]
    assert lf.data == b"".join(r + b"\n" for r in rows)


@pytest.mark.parametrize("step", [3, 50, 1 << 20])
def test_slices_cut_anywhere_across_the_pieces_are_the_rows_verbatim(monkeypatch, step):
    monkeypatch.setattr(archive, "INFLATE_STEP", step)
    rng = random.Random(11)
    rows = [_row(i, rng) for i in range(2000)]
    lf = _unpack(_zip(b"".join(rows)))
    assert len(lf.pieces) > (1 if step < 1000 else 0)
    for _ in range(200):
        a = rng.randrange(0, 2000)
        b = rng.randrange(a, 2001)
        assert b"".join(lf.parts(a, b)) == b"".join(rows[a:b]), (a, b)
    assert lf.parts(5, 5) == [] and lf.rows(7, 7) == []


@pytest.mark.parametrize("step", [5, 1 << 20])
def test_a_member_that_is_stored_not_deflated_is_read_the_same(monkeypatch, step):
    monkeypatch.setattr(archive, "INFLATE_STEP", step)
    rng = random.Random(3)
    csv = HEADER + b"".join(_row(i, rng) for i in range(100))
    lf = _unpack(_zip(csv, zipfile.ZIP_STORED))
    assert (lf.header_lines, lf.count, lf.data) == (1, 100, csv[len(HEADER):])


@pytest.mark.parametrize("step", [5, 4096])
def test_a_damaged_deflate_stream_or_crc_lands_nothing_whatever_the_step(monkeypatch, step):
    monkeypatch.setattr(archive, "INFLATE_STEP", step)
    rng = random.Random(4)
    data = bytearray(_zip(b"".join(_row(i, rng) for i in range(500))))
    crc_at = data.rfind(b"PK\x01\x02") + 16  # the central directory's CRC-32
    wrong_crc = bytes(data[:crc_at]) + bytes(b ^ 0xFF for b in data[crc_at: crc_at + 4]) + bytes(data[crc_at + 4:])
    with pytest.raises(ArchiveUnreadable, match="CRC"):
        _unpack(wrong_crc)
    cut = bytearray(data)
    start = 30 + len("a.csv")
    cut[start + 100: start + 140] = b"\x00" * 40  # the deflate stream damaged in its middle
    with pytest.raises(ArchiveUnreadable):
        _unpack(bytes(cut))
