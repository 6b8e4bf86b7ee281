"""An exchange's trade archive (Binance's data.binance.vision) as slices of the same exactly-once chain.

Binance's cursor is the trade id, and each archive file (a UTC day, or a month) holds a contiguous run of
ids. At a cursor c the lander asks `slice()` first; it answers with rows c+1, c+2, ... cut from a verified
archive file, or None, and then the lander pages over REST as before. The rules:

- Only published files are used: a day's file once `publication_lag` has passed after the day ends. The
  first id after the newest published day is asked once per run (aggTrades by time); a cursor at or past it
  never touches the archive (today, and the hours before the latest file appears, are paged over REST).
- Which file holds trade c+1 is asked of REST (`fromId=c+1&limit=1`: its time names the day). An answer
  other than trade c+1 itself (a hole at c+1, an empty page) leaves the range to REST paging, whose page
  checks confirm a gap with the exchange or land what the archive lacks.
- A file lands only if its SHA-256 equals its `.CHECKSUM` (`<sha256>  <file name>`); a mismatch is
  downloaded again `checksum_attempts` times, then the product fails and nothing of the file lands.
- Rows are kept verbatim (bytes), a header row (spot files have none) is detected and dropped, and a slice
  holds only rows whose ids are contiguous from c+1: it ends before any hole, repeat or disorder in the file.
  A file that lacks trade c+1 (a partial or missing day) is never bridged: REST pages that range, and
  either lands the trades the archive lacks or confirms the hole as the exchange's (a reported gap).
- Each file used is recorded (layout.archive_record_key) with its SHA-256, create-only. A file whose
  checksum no longer matches its record (replaced by the exchange) is refused for landing (ArchiveReplaced:
  the lander reports it and REST pages the rest of its days), and files of the last `recheck_days` days are
  checked again on every run: a replaced file is reported, never mixed in.
- A verified file that is not one readable CSV of trades (damaged at the exchange) is paged over REST, like a
  missing day, with a warning: every run would fail on it again. So is a file whose ids break (a hole, a repeat,
  a step back) more than max_breaks(rows) times: out of order, it would land as one object per row.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import logging
import re
import queue
import struct
import threading
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from schemahub.clock import SYSTEM_CLOCK, Clock
from schemahub.errors import (
    ArchiveChecksumMismatch,
    ArchiveError,
    ArchiveReplaced,
    ArchiveTooLarge,
    ArchiveUnreadable,
    BodyTooLarge,
    DeadlineReached,
    NotFound,
    PreconditionFailed,
    RetryBudgetExhausted,
)
from schemahub.layout import archive_record_key, archive_record_prefix
from schemahub.sources.http import HttpClient, RateLimiter

log = logging.getLogger("schemahub.archive")

try:  # ISA-L's inflate: the same deflate streams, 2x faster than zlib (bench/bench_archive.py)
    from isal.isal_zlib import crc32 as _crc32
    from isal.isal_zlib import decompressobj as _inflater
    from isal.isal_zlib import error as _InflateError
except ImportError:  # a platform without an isal wheel
    from zlib import crc32 as _crc32
    from zlib import decompressobj as _inflater
    from zlib import error as _InflateError

_SHA = re.compile(r"^[0-9a-f]{64}$")
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # a zip member's local file header (APPNOTE 4.3.7), 30 bytes


def max_breaks(rows: int) -> int:
    """The most id breaks (a hole, a repeat, a step back) a file of this many rows may have and still be sliced:
    one per 10,000 rows, at least 100. Binance's holes (binance-public-data #363) are a few per file."""
    return max(100, rows // 10_000)


def _row_bounds(piece) -> pa.Array:
    """Where each row of a piece (whole rows, each ending in "\\n") starts, and its length as the last entry.

    int64, len = rows + 1: row i, with its line end, is piece[bounds[i] : bounds[i + 1]]. pyarrow splits at each
    newline (the rows come out packed, without their newlines: row i starts i bytes earlier there than in the
    piece)."""
    body = piece.slice(0, len(piece) - 1)  # without the last line end: no empty row after it
    rows = pc.split_pattern(pa.Array.from_buffers(pa.large_binary(), 1, [None, pa.array([0, len(body)], pa.int64()).buffers()[1], body]),
                            "\n").values
    packed = pa.Array.from_buffers(pa.int64(), len(rows) + 1, [None, rows.buffers()[1]], offset=rows.offset)
    return pc.add(packed, _arange(len(rows) + 1))


def _arange(n: int) -> pa.Array:
    """0, 1, ..., n-1 as int64."""
    return pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), n)), 1)


#: Compressed bytes inflated at a time: ~7 MB of a day file's CSV, whose rows are indexed on another thread
#: while the next piece inflates (bench/bench_archive.py), and few enough that the memory is reused.
INFLATE_STEP = 2 << 20


def _member_chunks(z: zipfile.ZipFile, data: bytes, info: zipfile.ZipInfo):
    """The member's bytes, in order, in chunks of a few MB, inflated with ISA-L from the archive's bytes.

    Its size and CRC-32 are checked once the last chunk is out, as zipfile's read() checks them (BadZipFile):
    the caller uses nothing of the member before the generator is exhausted. It never holds more than one byte
    beyond the size the directory states (a member that unpacks to more, a zip bomb, is refused there). A
    stored member is read by zipfile (its bytes are its size). Any other method, or an encrypted member, is
    refused unread: zipfile unpacks bzip2 and LZMA with no cap on what a few bytes unpack to, and Binance's
    files are deflated."""
    if info.flag_bits & 0x1:
        raise zipfile.BadZipFile(f"{info.filename} is encrypted")
    if info.compress_type == zipfile.ZIP_STORED:
        yield z.read(info)
        return
    if info.compress_type != zipfile.ZIP_DEFLATED:
        raise zipfile.BadZipFile(f"{info.filename} uses compression method {info.compress_type}, not deflate or "
                                 "stored")
    head = data[info.header_offset: info.header_offset + _LOCAL_HEADER.size]
    if len(head) != _LOCAL_HEADER.size:
        raise zipfile.BadZipFile(f"truncated local header of {info.filename}")
    sig, *_, name_len, extra_len = _LOCAL_HEADER.unpack(head)
    if sig != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"bad local header signature of {info.filename}")
    begin = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
    stream = memoryview(data)[begin: begin + info.compress_size]
    if len(stream) != info.compress_size:
        raise EOFError(f"{info.filename}: {len(stream)} of {info.compress_size} compressed bytes")
    inflater = _inflater(wbits=-15)
    left, crc = info.file_size + 1, 0  # at most one byte more than the directory says
    for at in range(0, len(stream), INFLATE_STEP):
        out = inflater.decompress(stream[at: at + INFLATE_STEP], left)
        left -= len(out)
        if left <= 0:
            break
        crc = _crc32(out, crc)
        if out:
            yield out
    if left <= 0 or not inflater.eof:
        raise zipfile.BadZipFile(f"{info.filename}: the deflate stream does not end at the {info.file_size} bytes "
                                 f"the directory says it unpacks to")
    if left != 1 or crc != info.CRC:
        raise zipfile.BadZipFile(f"bad CRC-32 or size for {info.filename} ({info.file_size + 1 - left} bytes, "
                                 f"{info.file_size} in the directory)")


def read_member(z: zipfile.ZipFile, data: bytes, info: zipfile.ZipInfo) -> bytes:
    """The member's bytes, as zipfile's read() gives them (its CRC-32 and size checked), inflated with ISA-L."""
    return b"".join(_member_chunks(z, data, info))


_CONTENT = re.compile(rb"[^\n]")  # a byte that is not a line end


class _Rows:
    """A member's bytes, fed chunk by chunk, cut into pieces of whole rows, as the file's rows are read.

    Each piece ends with its row's line end. The rows are the file's, verbatim, except that a UTF-8 byte order
    mark before the first row, a header row (spot files have none: a first cell that is not a number) and the
    line ends after the last row are not rows, and CRLF line ends are made LF. A row that starts in one chunk
    and ends in the next is copied into a piece of its own (a few bytes); the rest are views of the chunks."""

    def __init__(self) -> None:
        self.tail: list[bytes] = []  # the bytes after the last line end seen (a row not ended yet)
        self.held: list = []  # the last piece holding a row, and pieces of blank lines after it (the file's end?)
        self.first = True
        self.header_lines = 0
        self.quoted = False  # a quote somewhere in the file (Binance's have none): the file is refused

    def feed(self, chunk: bytes) -> list:
        """The pieces this chunk completes (held back: the last of them, until a later one shows it is not the end)."""
        if not self.quoted and b'"' in chunk:
            self.quoted = True
        if b"\r" in chunk or (self.tail and self.tail[-1].endswith(b"\r")):
            if self.tail and self.tail[-1].endswith(b"\r") and chunk.startswith(b"\n"):
                self.tail[-1] = self.tail[-1][:-1]  # a CRLF split between two chunks
            chunk = chunk.replace(b"\r\n", b"\n")
        last = chunk.rfind(b"\n")
        if last < 0:
            if chunk:
                self.tail.append(chunk)
            return []
        first = chunk.find(b"\n")
        pieces = [b"".join([*self.tail, chunk[: first + 1]])]
        if last > first:
            pieces.append(pa.py_buffer(chunk).slice(first + 1, last - first))
        rest = chunk[last + 1:]
        self.tail = [rest] if rest else []
        return self._ready(pieces)

    def finish(self) -> list:
        """The pieces left once the member's last chunk is fed: the last row (with a line end given if it has
        none), without the blank lines after it."""
        out = self._ready([b"".join(self.tail) + b"\n"]) if self.tail else []
        self.tail = []
        if self.held:
            last = self.held[0]
            if _CONTENT.search(memoryview(last)):
                text = bytes(last).rstrip(b"\n") + b"\n" if bytes(last[-2:]) == b"\n\n" else last
                out.append(text)
        self.held = []
        return out

    def _ready(self, pieces: list) -> list:
        out = []
        for piece in pieces:
            if self.first:  # the file's first row (a piece of its own: the first line end ends a chunk's head)
                self.first = False
                if piece.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark is not part of the first row
                    piece = piece[3:]
                line = piece[:-1]
                cell = line[: line.find(b",")] if b"," in line[:200] else line[:20]
                if line.strip() and not cell.strip().isdigit():  # a header row (spot files have none): dropped
                    self.header_lines = 1
                    continue
            if _CONTENT.search(memoryview(piece)):  # a row: what was held is not the file's end
                out += self.held
                self.held = [piece]
            else:
                self.held.append(piece)  # blank lines: rows (refused as such) unless no row follows them
        return out


class _Index:
    """The rows' bounds and trade ids, piece by piece, on a thread of its own (pyarrow releases the GIL) while the
    caller inflates the next chunk. Every row must have the first row's number of cells and an integer id.

    The ids are read as the whole body read at once reads them: the CSV reader's column names come from the
    first row's cells, all of them; a byte order mark is skipped only at the start of the body, where the reader
    skips it (a later row that starts with one has no integer id). Quotes are not read here: a file holding one is
    refused before this is asked (ArchiveSource._unpack)."""

    def __init__(self) -> None:
        self.pieces: list[pa.Buffer] = []
        self.bounds: list[pa.Array] = []
        self.ids: list[pa.Array] = []
        self.error: BaseException | None = None  # a piece could not be indexed: the rest are skipped
        self.names: list[str] | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="archive-rows", daemon=True)
        self._thread.start()

    def put(self, pieces: list) -> None:
        for p in pieces:
            self._queue.put(p)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def result(self) -> tuple[list[pa.Buffer], list[pa.Array], pa.Array]:
        """(pieces, their row bounds, every row's id as one int64 array); raises what indexing raised."""
        if self.error is not None:
            raise self.error
        ids = pa.chunked_array(self.ids, pa.int64()).combine_chunks()
        return self.pieces, self.bounds, ids

    def _work(self) -> None:
        while (piece := self._queue.get()) is not None:
            if self.error is not None:
                continue
            try:
                piece = piece if isinstance(piece, pa.Buffer) else pa.py_buffer(piece)
                bounds = _row_bounds(piece)
                if self.names is None:  # the width of the first row, all its cells: every row must have it
                    head = piece.slice(0, bounds[1].as_py()).to_pybytes()
                    self.names = [f"f{i}" for i in range(head.count(b",") + 1)]
                elif piece.size >= 3 and piece.slice(0, 3).to_pybytes() == b"\xef\xbb\xbf":
                    # The reader would skip it as the start of its input: the whole body's reader reads it as
                    # part of the row's first cell, no integer id
                    raise pa.ArrowInvalid("a row inside the file starts with a byte order mark: its first cell is "
                                          "not an integer trade id")
                table = pacsv.read_csv(
                    pa.BufferReader(piece),
                    read_options=pacsv.ReadOptions(column_names=self.names),
                    parse_options=pacsv.ParseOptions(ignore_empty_lines=False),
                    convert_options=pacsv.ConvertOptions(include_columns=["f0"], column_types={"f0": pa.int64()}))
                self.pieces.append(piece)
                self.bounds.append(bounds)
                self.ids.extend(table.column("f0").chunks)
            except BaseException as e:  # noqa: BLE001 - raised by result(), in the caller's thread
                self.error = e


_DAY = timedelta(days=1)


@dataclass(frozen=True)
class ArchiveFile:
    """One file of the archive: a day (first_day == last_day) or a month."""

    name: str
    path: str
    first_day: date
    last_day: date

    @property
    def monthly(self) -> bool:
        return self.first_day != self.last_day


@dataclass
class LoadedFile:
    """A verified file's data rows, verbatim, and their ids (pyarrow int64).

    The rows are held once, as pieces of the file's bytes and where each row starts in its piece (not a Python
    object per row: a busy pair's day is GiBs); `parts(a, b)` cuts rows a..b-1 for one slice."""

    file: ArchiveFile
    sha256: str
    pieces: list  # pa.Buffer: the CSV's rows in order (line ends made \n), whole rows each ending in \n
    starts: list[int]  # the file's row index of each piece's first row, then the row count
    bounds: list  # per piece, int64, len = its rows + 1: its row i is piece[bounds[i] : bounds[i + 1]]
    ids: pa.Array
    header_lines: int  # 1 when the file had a header row (dropped), else 0
    breaks: list[int]  # row indexes i where ids[i + 1] != ids[i] + 1
    recorded: bool = False

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def data(self) -> bytes:
        """The rows as one text (a copy: for tests and small files)."""
        return b"".join(self.pieces)

    def rows(self, a: int, b: int) -> list[bytes]:
        """Rows a..b-1, verbatim (without their line ends)."""
        return b"".join(self.parts(a, b))[:-1].split(b"\n") if b > a else []

    def parts(self, a: int, b: int) -> list:
        """Rows a..b-1 as views of the pieces (buffers; no copy), each row with its line end: [] for none."""
        out = []
        k = bisect.bisect_right(self.starts, a) - 1
        while a < b:
            first, end = self.starts[k], min(b, self.starts[k + 1])
            bounds = self.bounds[k]
            lo, hi = bounds[a - first].as_py(), bounds[end - first].as_py()
            out.append(self.pieces[k].slice(lo, hi - lo))
            a, k = end, k + 1
        return out

    @property
    def first_id(self) -> int | None:
        return self.ids[0].as_py() if len(self.ids) else None

    @property
    def last_id(self) -> int | None:
        return self.ids[-1].as_py() if len(self.ids) else None

    def row_of(self, trade_id: int) -> int:
        """The row holding trade_id, or -1."""
        n = len(self.ids)
        if not n:
            return -1
        first = self.first_id
        if not self.breaks:  # one contiguous run: arithmetic
            r = trade_id - first
            return r if 0 <= r < n else -1
        return pc.index(self.ids, pa.scalar(trade_id, pa.int64())).as_py()

    def run_end(self, row: int) -> int:
        """One past the last row of the contiguous run that row is in."""
        k = bisect.bisect_left(self.breaks, row)
        return self.breaks[k] + 1 if k < len(self.breaks) else len(self.ids)


@dataclass
class Slice:
    """Rows (start, end] of the chain, cut from one archive file."""

    start: int
    end: int
    parts: list  # the rows, verbatim, each with its "\n" (LoadedFile.parts: views of the file): end - start of them
    source: dict
    requests: list[str]  # what the header names: the REST probe and the file (even when already in memory)
    sent: int = 0  # requests this slice sent (a slice of a file in memory sends none)

    @property
    def count(self) -> int:
        return self.end - self.start

    @property
    def min_id(self) -> int:
        return self.start + 1

    @property
    def max_id(self) -> int:
        return self.end


@dataclass
class _RunState:
    """What one product's run has learnt: the first id not in a published file, files missing, the file at hand."""

    limit: int | None = None  # ids <= limit lie in published days
    missing: set = field(default_factory=set)
    loaded: LoadedFile | None = None
    told: set = field(default_factory=set)  # warnings already given this run
    sent: int = 0  # requests sent (REST probes, checksum and file downloads)


class ArchiveSource:
    """Archive files of one exchange, fetched through their own HttpClient (retries, deadlines, a body cap)."""

    def __init__(self, spec, rest, *, clock: Clock = SYSTEM_CLOCK, http: HttpClient | None = None) -> None:
        self.spec = spec.archive.source
        self.exchange = spec.exchange
        self.rest = rest  # the exchange's REST Source: head, start_cursor, trades_page
        self.clock = clock
        a = self.spec
        self.http = http or HttpClient(
            name=f"{spec.exchange} archive", rate=RateLimiter(a.rate_limit.requests_per_second, a.rate_limit.burst, clock),
            timeout_s=a.timeout_s, max_attempts=a.retry.max_attempts, base_delay_s=a.retry.base_delay_s,
            max_delay_s=a.retry.max_delay_s, ban_statuses=frozenset(), max_retry_after_s=a.retry.max_retry_after_s,
            max_body_bytes=a.max_file_bytes, request_deadline_s=a.request_deadline_s, clock=clock,
        )
        self._states: dict[str, _RunState] = {}
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return self.spec.base_url

    # ------------------------------------------------------------ files
    def daily(self, symbol: str, day: date) -> ArchiveFile:
        path = self.spec.daily_path.replace("{symbol}", symbol).replace("{date}", day.isoformat())
        return ArchiveFile(path.rsplit("/", 1)[-1], path, day, day)

    def monthly(self, symbol: str, day: date) -> ArchiveFile:
        first = day.replace(day=1)
        last = (first + timedelta(days=32)).replace(day=1) - _DAY
        path = self.spec.monthly_path.replace("{symbol}", symbol).replace("{month}", first.strftime("%Y-%m"))
        return ArchiveFile(path.rsplit("/", 1)[-1], path, first, last)

    def published(self, f: ArchiveFile, now: datetime | None = None) -> bool:
        """Whether the file should exist by now (its last day ended publication lag ago)."""
        now = now or self.clock.now()
        end = datetime.combine(f.last_day + _DAY, time(), tzinfo=timezone.utc)
        return now >= end + (self.spec.month_lag if f.monthly else self.spec.lag)

    def newest_published_day(self, now: datetime | None = None) -> date:
        now = now or self.clock.now()
        return (now - self.spec.lag).date() - _DAY

    def checksum(self, f: ArchiveFile, deadline=None) -> str | None:
        """The SHA-256 the file's checksum file states (lower-case hex), or None if it is not published."""
        url = self.base_url + f.path + self.spec.checksum_suffix
        resp = self.http.get(url, accept=frozenset({404}), deadline=deadline)
        if resp.status == 404:
            return None
        parts = resp.body.decode("utf-8", errors="replace").split()
        if len(parts) < 1 or not _SHA.match(parts[0].lower()):
            raise ArchiveError(f"{self.exchange}: {url} is not `<sha256>  <file name>` ({resp.body[:100]!r}); "
                               f"{f.name} is not landed without a checksum to verify it against")
        # `<sha256>  <name>` (sha256sum's text mode) or `<sha256> *<name>` (its binary mode), maybe with a path
        if len(parts) >= 2 and parts[1].lstrip("*").rsplit("/", 1)[-1] != f.name:
            raise ArchiveError(f"{self.exchange}: {url} names {parts[1]!r}, not {f.name}: {f.name} is not landed")
        return parts[0].lower()

    def download(self, f: ArchiveFile, deadline=None, st: _RunState | None = None) -> LoadedFile | None:
        """The file, verified against its checksum and unpacked; None if it (or its checksum) is not published.

        A SHA-256 that differs from the checksum file is downloaded again (both files), up to
        checksum_attempts times; then ArchiveChecksumMismatch, and nothing of the file is used.
        """
        url = self.base_url + f.path
        attempts = self.spec.checksum_attempts
        for attempt in range(attempts):
            if st is not None:
                st.sent += 2
            want = self.checksum(f, deadline)
            if want is None:
                return None
            resp = self.http.get(url, accept=frozenset({404}), deadline=deadline)
            if resp.status == 404:
                return None
            got, unpacked = self._verify_and_unpack(f, resp.body)
            if got == want:
                if isinstance(unpacked, BaseException):
                    raise unpacked
                return unpacked
            log.warning("%s: %s has SHA-256 %s, its checksum file says %s (download %d of %d)",
                        self.exchange, url, got, want, attempt + 1, attempts)
            if attempt + 1 < attempts:
                delay = min(self.spec.retry.max_delay_s, self.spec.retry.base_delay_s * 2 ** attempt)
                if deadline is not None and self.http.clock.monotonic() + delay > deadline:
                    raise DeadlineReached(f"{self.exchange}: no time left to download {f.name} again after a "
                                          "checksum mismatch; a later run continues")
                self.http.clock.sleep(delay)
        raise ArchiveChecksumMismatch(
            f"{self.exchange}: {url}: its SHA-256 {got} differs from its {self.spec.checksum_suffix} ({want}) in "
            f"{attempts} downloads; nothing of it was landed. The exchange may be replacing it: a later run tries "
            "again (if it persists, the file is damaged at the exchange)")

    def _verify_and_unpack(self, f: ArchiveFile, data: bytes) -> tuple[str, LoadedFile | BaseException]:
        """(the SHA-256 of data, its unpacked rows or the error unpacking raised), both computed side by side.

        hashlib and zlib release the GIL: the hash runs on a thread while the zip is read. The caller uses the
        rows (or raises the error) only if the SHA-256 matches the checksum file; otherwise both are dropped."""
        box: dict = {}
        hasher = threading.Thread(target=lambda: box.setdefault("sha", hashlib.sha256(data).hexdigest()),
                                  name="archive-sha256")
        hasher.start()
        try:
            unpacked: LoadedFile | BaseException = self._unpack(f, None, data)
        except Exception as e:  # noqa: BLE001 - raised by the caller only if the bytes are the checksum's
            unpacked = e
        finally:
            hasher.join()
        sha = box["sha"]
        if isinstance(unpacked, LoadedFile):
            unpacked.sha256 = sha
        return sha, unpacked

    def _unpack(self, f: ArchiveFile, sha: str | None, data: bytes) -> LoadedFile:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                members = [i for i in z.infolist() if not i.is_dir()]
                if len(members) != 1:
                    raise ArchiveUnreadable(f"{self.exchange}: {f.name} holds {len(members)} files, not one CSV: not landed")
                if members[0].file_size > self.spec.max_csv_bytes:
                    raise ArchiveTooLarge(f"{self.exchange}: {f.name} unpacks to {members[0].file_size} bytes, more than "
                                       f"archive.source.max_csv_bytes ({self.spec.max_csv_bytes}): not landed")
                rows = _Rows()
                index = _Index()
                try:
                    for chunk in _member_chunks(z, data, members[0]):
                        index.put(rows.feed(chunk))
                    index.put(rows.finish())
                finally:
                    index.close()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error, _InflateError) as e:
            raise ArchiveUnreadable(f"{self.exchange}: {f.name} matches its checksum but is not a readable zip "
                               f"({type(e).__name__}: {e}): not landed") from None
        if rows.quoted:
            # The transform reads archive cells without quoting (as Binance prints them: numbers and True/False), so
            # a quoted cell would be quarantined, and a quoted line end would make one CSV row of two lines.
            raise ArchiveUnreadable(f"{self.exchange}: {f.name} holds a quote character (\"), which Binance's trade "
                                    "files never print: not landed")
        try:
            pieces, bounds, ids = index.result()
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise ArchiveUnreadable(f"{self.exchange}: {f.name}: its first column is not an integer trade id on every "
                               f"row ({str(e)[:200]}): not landed") from None
        starts = [0]
        for b in bounds:
            starts.append(starts[-1] + len(b) - 1)
        if len(ids) != starts[-1] or ids.null_count:
            raise ArchiveUnreadable(f"{self.exchange}: {f.name}: {starts[-1]} lines but {len(ids)} CSV rows "
                               f"({ids.null_count} without an id): not landed")
        breaks: list[int] = []
        if len(ids) > 1:
            step = pc.subtract(ids.slice(1), ids.slice(0, len(ids) - 1))
            breaks = pc.indices_nonzero(pc.not_equal(step, 1)).to_pylist()
        return LoadedFile(f, sha, pieces, starts, bounds, ids, rows.header_lines, breaks)

    # ------------------------------------------------------------ landing
    def begin(self, product_id: str) -> None:
        """A product's run starts: forget what an earlier run learnt (time has moved on)."""
        with self._lock:
            self._states[product_id] = _RunState()

    def end(self, product_id: str) -> None:
        with self._lock:
            self._states.pop(product_id, None)

    def _state(self, product_id: str) -> _RunState:
        with self._lock:
            return self._states.setdefault(product_id, _RunState())

    def slice(self, store, product, cursor: int, upper: int | None, head: int, notes: list[str],
              deadline=None) -> Slice | None:
        """Rows cursor+1.. from the archive, or None: page this range over REST."""
        top = head if upper is None else min(upper, head)
        if top <= cursor:
            return None
        st = self._state(product.product_id)
        if st.limit is None:
            # The first id after the newest published day (aggTrades by time): ids above are REST's.
            end = datetime.combine(self.newest_published_day() + _DAY, time(), tzinfo=timezone.utc)
            st.limit = self.rest.start_cursor(product.symbol, end, head, deadline)
        if cursor >= st.limit:
            return None
        requests: list[str] = []
        sent_before = st.sent
        lf = st.loaded
        row = lf.row_of(cursor + 1) if lf is not None else -1
        if row < 0:
            st.sent += 1
            day = self._day_of(product, cursor + 1, requests, deadline)
            if day is None:
                return None  # REST does not serve trade cursor+1 as the next trade: its page checks decide
            lf = self._file_for(product, day, st, notes, deadline)
            if lf is None:
                return None
            requests.append(lf.file.path)
            row = lf.row_of(cursor + 1)
            if row < 0:
                self._tell(st, notes, (lf.file.name, "lacks"), (
                    f"{self.exchange}: {product.symbol}: archive file {lf.file.name} lacks trade {cursor + 1}, which "
                    f"the REST API serves (ids {lf.first_id}..{lf.last_id} in the file, a partial day?): not "
                    "bridged; paging those trades over REST"))
                return None
        self._record(store, product, lf, st, deadline)
        stop = min(lf.run_end(row), row + self.spec.rows_per_object, row + (top - cursor))
        count = max(0, stop - row)
        first_line = row + 1 + lf.header_lines  # line numbers in the CSV file, 1-based, inclusive
        return Slice(cursor, cursor + count, lf.parts(row, stop),
                     {"file": lf.file.name, "sha256": lf.sha256, "rows": [first_line, first_line + count - 1]},
                     requests or [lf.file.path], sent=st.sent - sent_before)

    def _day_of(self, product, trade_id: int, requests: list[str], deadline) -> date | None:
        """The UTC day of trade_id as REST serves it; None unless REST's next trade from trade_id is trade_id."""
        from schemahub.sources.base import parse_time

        r = self.rest
        page, ids, resp = r.trades_page(product.symbol, {r.p.from_param: trade_id, r.p.limit_param: 1}, deadline)
        requests.append(r.request_of(resp))
        if not ids or ids[0] != trade_id:
            return None
        try:
            return parse_time(page.records[0][r.t.time_field], r.t.time_format).date()
        except (KeyError, IndexError, TypeError, ValueError):
            return None

    def _file_for(self, product, day: date, st: _RunState, notes: list[str], deadline) -> LoadedFile | None:
        if st.loaded is not None and st.loaded.file.first_day <= day <= st.loaded.file.last_day:
            return st.loaded
        candidates = []
        if self.spec.monthly and day.day == 1:
            candidates.append(self.monthly(product.symbol, day))
        candidates.append(self.daily(product.symbol, day))
        for f in candidates:
            if f.name in st.missing:
                continue
            if not self.published(f):
                if not f.monthly:
                    return None  # the hours before the day's file appears: REST
                continue
            st.loaded = None  # one file in memory per product
            try:
                lf = self.download(f, deadline, st)
            except (BodyTooLarge, ArchiveTooLarge) as e:  # e.g. a Lambda's limits: REST pages what fits
                st.missing.add(f.name)
                self._tell(st, notes, (f.name, "large"), (
                    f"{self.exchange}: {product.symbol}: archive file {f.name} is too large for this run ({e}): "
                    "paging that day over REST (raise archive.source.max_file_bytes / max_csv_bytes to use it)"))
                continue
            except ArchiveUnreadable as e:  # the exchange's own (verified) file is damaged: every run would fail
                st.missing.add(f.name)
                self._tell(st, notes, (f.name, "unreadable"), (
                    f"{e}; paging that day over REST (its page checks land the "
                    "trades or confirm a gap)"))
                continue
            if lf is not None and len(lf.breaks) > max_breaks(lf.count):
                # Each break ends a slice: a file out of id order would land as one object per row (and search
                # its ids for each). Not sliced: REST pages its days, whose page checks land every trade once.
                st.missing.add(f.name)
                st.loaded = None
                self._tell(st, notes, (f.name, "breaks"), (
                    f"{self.exchange}: {product.symbol}: archive file {f.name} breaks its id order {len(lf.breaks)} "
                    f"times in {lf.count} rows (more than {max_breaks(lf.count)}: out of order, or full of holes): "
                    "not sliced; paging that day over REST"))
                continue
            if lf is None:
                st.missing.add(f.name)
                if not f.monthly:
                    self._tell(st, notes, (f.name, "missing"), (
                        f"{self.exchange}: {product.symbol}: archive file {f.name} is not published (HTTP 404) though "
                        f"its day ended more than {self.spec.publication_lag} ago: paging that day over REST"))
                continue
            st.loaded = lf
            return lf
        return None

    def _tell(self, st: _RunState, notes: list[str], key, text: str) -> None:
        if key not in st.told:
            st.told.add(key)
            log.warning("%s", text)
            notes.append(text)

    # ------------------------------------------------------------ replaced files
    def _record(self, store, product, lf: LoadedFile, st: _RunState, deadline) -> None:
        """Record the file before its first slice lands; a record with another SHA-256 means it was replaced."""
        if lf.recorded:
            return
        key = archive_record_key(self.exchange, product.product_id, lf.file.name)
        doc = {"file": lf.file.name, "path": lf.file.path, "sha256": lf.sha256, "first_day": lf.file.first_day.isoformat(),
               "last_day": lf.file.last_day.isoformat(), "rows": lf.count, "first_id": lf.first_id,
               "last_id": lf.last_id, "recorded_at": self.clock.now().isoformat()}
        try:
            store.put(key, json.dumps(doc, sort_keys=True, indent=1).encode(), if_none_match=True)
        except PreconditionFailed:
            before = self._read_record(store, key)
            if before is None or before.get("sha256") != lf.sha256:
                # Never mixed in, and never a product failed on every run: the rest of its days is REST's.
                st.loaded = None
                st.missing.add(lf.file.name)
                landed = None if before is None else before.get("sha256")
                raise ArchiveReplaced(
                    f"{self.exchange}: {product.symbol}: archive file {lf.file.name} was replaced by the exchange: rows "
                    f"of it may have landed with SHA-256 {landed} (see {key}), it is now {lf.sha256}. Nothing of the "
                    "new file is mixed in: the rest of its days is paged over REST. Compare the two and re-ingest "
                    "that day into another storage if the new one is right",
                    {"file": lf.file.name, "landed_sha256": landed, "now_sha256": lf.sha256}) from None
        lf.recorded = True

    @staticmethod
    def _read_record(store, key: str) -> dict | None:
        try:
            doc = json.loads(store.get(key).data)
        except (NotFound, ValueError, UnicodeDecodeError):
            return None
        return doc if isinstance(doc, dict) else None

    def recheck(self, store, product, deadline=None, notes: list[str] | None = None) -> list[dict]:
        """Check the files landed for the last recheck_days days against their checksum files now.

        Returns one entry per replaced file: {"file", "landed_sha256", "now_sha256"}. A checksum that cannot be
        read now (garbled, unreachable) is a note, never a failure: the recheck only reports, and must not stop
        the product's new trades from landing.
        """
        if self.spec.recheck_days <= 0:
            return []
        since = self.clock.now().date() - timedelta(days=self.spec.recheck_days)
        out = []
        for info in store.list(archive_record_prefix(self.exchange, product.product_id)):
            doc = self._read_record(store, info.key)
            if doc is None:
                log.warning("%s: %s is not a JSON record of an archive file: skipped", self.exchange, info.key)
                continue
            try:
                last = date.fromisoformat(str(doc["last_day"]))
                f = ArchiveFile(str(doc["file"]), str(doc["path"]), date.fromisoformat(str(doc["first_day"])), last)
            except (KeyError, ValueError):
                log.warning("%s: %s lacks file, path or days: skipped", self.exchange, info.key)
                continue
            if last < since:
                continue
            try:
                now = self.checksum(f, deadline)
            except (ArchiveError, RetryBudgetExhausted, BodyTooLarge) as e:
                text = (f"{self.exchange}: {product.symbol}: could not recheck archive file {f.name} landed earlier "
                        f"({e}); a later run checks it again")
                log.warning("%s", text)
                if notes is not None:
                    notes.append(text)
                continue
            if now is None:  # taken down (404): the landed rows stay; someone should know the file is gone
                text = (f"{self.exchange}: {product.symbol}: archive file {f.name}, landed earlier, is no longer "
                        f"published (its {self.spec.checksum_suffix} answers 404): its rows stay as landed; a later "
                        "run checks it again")
                log.warning("%s", text)
                if notes is not None:
                    notes.append(text)
            elif now != doc.get("sha256"):
                out.append({"file": f.name, "landed_sha256": doc.get("sha256"), "now_sha256": now})
        return out
