"""The raw object format, written and read here only.

A raw object is gzip(JSONL): one header line, then one trade per line exactly
as the exchange sent it (duplicates included: raw is the tape). The header
says which cursor range (start, end] the object covers, how many lines follow
and which trade ids they span, so a reader can check the object against
itself. An object with no trades (an empty cursor range) is a header alone:
it still marks the chain's step from start to end.

Trade lines are JSON records (REST pages) or, when the header says
`"lines": "csv"`, CSV rows exactly as an exchange's archive file printed them
(no header row); such a header also names its `source` (file, sha256, rows).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from datetime import datetime

from schemahub.errors import DamagedObject

try:  # ISA-L's gzip: the same format, 3x faster to write and 2-4x to read than zlib (bench/bench_archive.py)
    from isal import igzip as _gzip
    from isal.isal_zlib import error as _codec_error
except ImportError:  # a platform without an isal wheel: the standard library, same bytes on disk format
    import gzip as _gzip

    _codec_error = zlib.error

FORMAT = "schemahub.raw/1"
LINES_JSON, LINES_CSV = "json", "csv"   # what the trade lines are; a header without "lines" holds JSON
GZIP_LEVEL = 1  # raw JSONL compresses ~8x even at level 1; higher levels cost CPU on the hot path

_REQUIRED = ("format", "exchange", "product_id", "symbol", "cursor_start", "cursor_end", "count", "fetched_at")


@dataclass(frozen=True)
class RawHeader:
    """A raw object's header line, typed."""

    exchange: str
    product_id: str
    symbol: str
    start: int
    end: int
    count: int
    fetched_at: datetime
    min_id: int | None = None
    max_id: int | None = None
    base: str | None = None
    quote: str | None = None
    doc: dict | None = None  # everything the header line held (requests, source file, ...)

    @property
    def lines(self) -> str:
        """LINES_JSON or LINES_CSV: how the trade lines are written."""
        return (self.doc or {}).get("lines", LINES_JSON)

    @property
    def base_asset(self) -> str:
        return self.base or self.product_id.partition("-")[0]

    @property
    def quote_asset(self) -> str:
        return self.quote or self.product_id.partition("-")[2]


def make_header(*, exchange: str, product_id: str, symbol: str, start: int, end: int, count: int,
                min_id: int | None, max_id: int | None, fetched_at: str, requests: list[str],
                base: str | None = None, quote: str | None = None, lines: str = LINES_JSON, **extra) -> dict:
    """The header document of a new raw object (fetched_at is ISO-8601 UTC; lines LINES_JSON or LINES_CSV)."""
    doc = {
        "format": FORMAT, "exchange": exchange, "product_id": product_id, "symbol": symbol,
        "cursor_start": str(start), "cursor_end": str(end), "count": count,
        "min_id": min_id, "max_id": max_id, "fetched_at": fetched_at, "requests": requests,
    }
    if base is not None:
        doc["base"], doc["quote"] = base, quote
    if lines != LINES_JSON:
        if lines != LINES_CSV:
            raise ValueError(f"unknown raw line format {lines!r}")
        doc["lines"] = lines
    doc.update(extra)
    return doc


def _head(header: dict) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def encode(header: dict, lines: list[bytes]) -> bytes:
    """gzip(header line + one verbatim trade per line); deterministic bytes (mtime=0)."""
    return compress(b"\n".join([_head(header), *lines]) + b"\n")


def text_of_parts(header: dict, parts: list) -> bytes:
    """The object's text (what compress() compresses, and split_text() reads) for lines given as buffers whose
    concatenation is header["count"] lines, each ending in "\\n" (an archive slice: views of the file's rows, cut
    at its row bounds; the transform checks the count again): one copy, no Python object per line."""
    return b"".join([_head(header), b"\n", *parts])


def decompress(data: bytes) -> bytes:
    """The object's text from its stored bytes, with the library the transform uses (no checks: see split)."""
    return _gzip.decompress(data)


def compress(text: bytes) -> bytes:
    """The stored bytes of an object's text; deterministic (mtime=0)."""
    return _gzip.compress(text, compresslevel=GZIP_LEVEL, mtime=0)


def _parse_header(line: bytes, key: str) -> RawHeader:
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise DamagedObject(key, "line 1 is not a JSON header (not a schemahub raw object?)") from None
    if not isinstance(doc, dict):
        raise DamagedObject(key, "line 1 is not a JSON object header")
    missing = [f for f in _REQUIRED if f not in doc]
    if missing:
        raise DamagedObject(key, f"header lacks {', '.join(missing)}")
    if doc["format"] != FORMAT:
        raise DamagedObject(key, f"unknown raw format {doc['format']!r} (expected {FORMAT})")
    try:
        start, end, count = int(doc["cursor_start"]), int(doc["cursor_end"]), int(doc["count"])
        fetched = datetime.fromisoformat(str(doc["fetched_at"]).replace("Z", "+00:00"))
        min_id = None if doc.get("min_id") is None else int(doc["min_id"])
        max_id = None if doc.get("max_id") is None else int(doc["max_id"])
    except (TypeError, ValueError) as e:
        raise DamagedObject(key, f"header has a bad value: {e}") from None
    if doc.get("lines", LINES_JSON) not in (LINES_JSON, LINES_CSV):
        raise DamagedObject(key, f"unknown line format {doc.get('lines')!r} (expected json or csv)")
    if end < start:
        raise DamagedObject(key, f"header range ({start}, {end}] ends before it starts")
    if count < 0 or (min_id is not None and max_id is not None and min_id > max_id):
        raise DamagedObject(key, f"header is inconsistent (count {count}, ids {min_id}..{max_id})")
    return RawHeader(str(doc["exchange"]), str(doc["product_id"]), str(doc["symbol"]), start, end, count, fetched,
                     min_id, max_id, doc.get("base"), doc.get("quote"), doc)


def _gunzip(data: bytes, key: str) -> bytes:
    if not data:
        raise DamagedObject(key, "empty (0 bytes): not a gzip object")
    try:
        return _gzip.decompress(data)
    except (OSError, EOFError, zlib.error, _codec_error) as e:
        raise DamagedObject(key, f"not a complete gzip object ({type(e).__name__}: {e}); {len(data)} bytes") from None


def split(data: bytes, key: str) -> tuple[RawHeader, bytes]:
    """(header, the trade lines as one buffer ending in '\\n' or empty), checked against the header's count."""
    return split_text(_gunzip(data, key), key)


def split_text(text: bytes, key: str) -> tuple[RawHeader, bytes]:
    """split() of an object's text, already decompressed (the bytes a lander just compressed and stored)."""
    head, nl, rest = text.partition(b"\n")
    header = _parse_header(head, key)
    if not nl:
        raise DamagedObject(key, "no line break after the header (truncated?)")
    if rest and not rest.endswith(b"\n"):
        raise DamagedObject(key, "the last line is not terminated (truncated?)")
    n = rest.count(b"\n")
    if n != header.count:
        raise DamagedObject(key, f"holds {n} trade line(s) but its header says {header.count}")
    return header, rest


def decode(data: bytes, key: str) -> tuple[RawHeader, list[bytes]]:
    """(header, verbatim trade lines), checked against the header's count."""
    header, rest = split(data, key)
    lines = rest.split(b"\n")
    lines.pop()  # the empty string after the last '\n'
    return header, lines


def read_header(data: bytes, key: str) -> RawHeader:
    """Decode only as much of the object as the header line needs."""
    d = zlib.decompressobj(wbits=31)
    buf = b""
    try:
        for i in range(0, len(data), 4096):
            buf += d.decompress(data[i : i + 4096])
            if b"\n" in buf:
                break
    except zlib.error as e:
        raise DamagedObject(key, f"not a gzip object ({e})") from None
    if b"\n" not in buf:
        raise DamagedObject(key, "no complete header line (truncated or empty)")
    return _parse_header(buf.partition(b"\n")[0], key)


def check_ids(header: RawHeader, key: str, lo: int | None, hi: int | None) -> None:
    """Raise DamagedObject unless the trade ids found (lo..hi) are the header's min_id..max_id."""
    if header.min_id is None and header.max_id is None:
        return
    if (lo, hi) != (header.min_id, header.max_id):
        raise DamagedObject(key, f"trade ids {lo}..{hi} differ from the header's {header.min_id}..{header.max_id}")
