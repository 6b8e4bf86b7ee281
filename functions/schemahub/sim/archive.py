"""Binance's spot trade archive (data.binance.vision), served from the same books as the REST simulator.

Daily files `/data/spot/daily/trades/{SYM}/{SYM}-trades-{YYYY-MM-DD}.zip` and monthly files
`/data/spot/monthly/trades/{SYM}/{SYM}-trades-{YYYY-MM}.zip`, each with a `.CHECKSUM` beside it
(`<sha256>  <file name>`). A zip holds one CSV without a header row: `id,price,qty,quoteQty,time,
isBuyerMaker,isBestMatch`, booleans `True`/`False`, times in ms for files before 2025-01-01 and in µs from
then on. The rows are the REST simulator's trades (same ids, prices, sizes, sides and times).

A file is published once its day (month) ended `lag_s` (`monthly_lag_s`) ago by the simulator's `now`.
Faults, all by file name or trade id:
- `missing`: file names answered 404 (zip and checksum);
- `omit`: trade ids the archive leaves out although REST serves them (a partial day, a hole in the file);
- `replace(name)`: the exchange replaces a file (a corrected row): new bytes, new checksum;
- `mismatch[name] = n`: the next n checksum answers for that file state a wrong SHA-256;
- `header`: files carry a header row (spot files have none; futures files do);
- `shuffled`: file names whose rows are served out of id order (a damaged file: every row there, in any order);
- ids the book never printed (Book.missing) are in neither REST nor the archive.
"""

from __future__ import annotations

import hashlib
import io
import random
import threading
import time
import zipfile
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from schemahub.sim.base import Book, FixedBook, _first_at_or_after

MICROS_FROM = date(2025, 1, 1)  # spot CSV times are µs from this day on, ms before
_EPOCH = date(1970, 1, 1)


def _day_us(d: date) -> int:
    return (d - _EPOCH).days * 86_400_000_000


class BinanceArchive:
    """The archive of a BinanceSim's books, answering under /data/spot/ on the same server."""

    def __init__(self, sim, *, now=time.time, lag_s: float = 8 * 3600, monthly_lag_s: float = 8 * 86_400,
                 header: bool = False) -> None:
        self.sim = sim
        self.now = now
        self.lag_s, self.monthly_lag_s = lag_s, monthly_lag_s
        self.header = header
        self.missing: set[str] = set()
        self.shuffled: set[str] = set()
        self.omit: set[int] = set()
        self.mismatch: dict[str, int] = {}
        self.versions: dict[str, int] = {}
        self.served: dict[str, int] = {}  # file name -> zip downloads
        self._cache: dict[tuple, bytes] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ faults
    def replace(self, name: str) -> None:
        """The exchange replaces a file: one row's quoteQty is corrected (new bytes, new checksum)."""
        with self._lock:
            self.versions[name] = self.versions.get(name, 0) + 1

    def omit_tail(self, book: Book, day: date, n: int) -> list[int]:
        """Leave the last n trades of a day out of its file (REST still serves them); returns their ids."""
        lo, hi = self.day_ids(book, day)
        ids = list(range(max(lo, hi - n + 1), hi + 1))
        self.omit.update(ids)
        return ids

    # ------------------------------------------------------------ truth
    def day_ids(self, book: Book, day: date, last: date | None = None) -> tuple[int, int]:
        """(first, last) book id whose time lies in [day, last + 1 day) (first > last if none)."""
        lo = _first_at_or_after(book, _day_us(day))
        hi = min(book.head(), _first_at_or_after(book, _day_us((last or day) + timedelta(days=1))) - 1)
        return lo, hi

    def time_as_printed(self, book: Book, i: int) -> int:
        """Trade i's time in µs as its archive file prints it (ms precision before 2025-01-01)."""
        t = book.time_us(i)
        day = (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=t)).date()
        return t if day >= MICROS_FROM else t // 1000 * 1000

    def published(self, first: date, last: date, monthly: bool) -> bool:
        end = datetime.combine(last + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc).timestamp()
        return self.now() >= end + (self.monthly_lag_s if monthly else self.lag_s)

    # ------------------------------------------------------------ files
    def row(self, book: Book, i: int, micros: bool) -> bytes:
        t, price, size, side = book.core(i)
        quote = (Decimal(price) * Decimal(size)).quantize(Decimal("0.00000001"))
        maker = "True" if side == "sell" else "False"  # isBuyerMaker: the taker sold
        return f"{i},{price},{size},{quote:f},{t if micros else t // 1000},{maker},True".encode()

    def csv(self, book: Book, first: date, last: date, version: int = 0) -> bytes:
        lo, hi = self.day_ids(book, first, last)
        micros = first >= MICROS_FROM
        rows = [self.row(book, i, micros) for i in range(lo, hi + 1) if i not in book.missing and i not in self.omit]
        if version and rows:  # a replaced file: the exchange corrected the last row's quoteQty
            parts = rows[-1].split(b",")
            parts[3] = parts[3] + b"1" if b"." in parts[3] else parts[3] + b".1"
            rows[-1] = b",".join(parts)
        head = b"id,price,qty,quoteQty,time,isBuyerMaker,isBestMatch\n" if self.header else b""
        return head + b"".join(r + b"\n" for r in rows)

    def zip_bytes(self, book: Book, name: str, first: date, last: date) -> bytes:
        version = self.versions.get(name, 0)
        key = (book.product_id, name, version, len(self.omit), self.header, name in self.shuffled,
               book.head() if last >= self._today() else 0)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        buf = io.BytesIO()
        info = zipfile.ZipInfo(name.removesuffix(".zip") + ".csv", date_time=(2025, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(buf, "w") as z:
            csv = self.csv(book, first, last, version)
            if name in self.shuffled:  # every row, in a deterministic disorder
                rows = csv.splitlines(keepends=True)
                random.Random(name).shuffle(rows)
                csv = b"".join(rows)
            z.writestr(info, csv)
        data = buf.getvalue()
        with self._lock:
            if len(self._cache) > 512:
                self._cache.clear()
            self._cache[key] = data
        return data

    def _today(self) -> date:
        return datetime.fromtimestamp(self.now(), tz=timezone.utc).date()

    def route(self, segs: list[str]) -> tuple[int, dict, bytes] | None:
        # data/spot/{daily|monthly}/trades/{SYM}/{file}
        if len(segs) != 6 or segs[:2] != ["data", "spot"] or segs[2] not in ("daily", "monthly") or segs[3] != "trades":
            return None
        period, symbol, fname = segs[2], segs[4], segs[5]
        checksum = fname.endswith(".CHECKSUM")
        name = fname.removesuffix(".CHECKSUM")
        book = self.sim.book_for(symbol)
        stem = f"{symbol}-trades-"
        # A FixedBook replays recorded REST pages: it has no archive files.
        if book is None or isinstance(book, FixedBook) or not name.startswith(stem) or not name.endswith(".zip"):
            return _not_found()
        when = name[len(stem):-4]
        try:
            if period == "daily":
                first = last = date.fromisoformat(when)
            else:
                first = date.fromisoformat(when + "-01")
                last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
        except ValueError:
            return _not_found()
        if name in self.missing or not self.published(first, last, period == "monthly"):
            return _not_found()
        data = self.zip_bytes(book, name, first, last)
        if not checksum:
            with self._lock:
                self.served[name] = self.served.get(name, 0) + 1
            return 200, {}, data
        sha = hashlib.sha256(data).hexdigest()
        with self._lock:
            if self.mismatch.get(name, 0) > 0:
                self.mismatch[name] -= 1
                sha = hashlib.sha256(data + b"x").hexdigest()
        return 200, {}, f"{sha}  {name}\n".encode()


def _not_found() -> tuple[int, dict, bytes]:
    return 404, {}, (
        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code>'
        b"<Message>The specified key does not exist.</Message></Error>")
