"""What the archive landing tests share: a Binance book reaching back before 2025, its simulator with the
archive, a source with test-sized slices, kills at any store write, and ground truth from the simulator."""

from __future__ import annotations

import random
from datetime import date, datetime, timezone

from schemahub.clock import FakeClock
from schemahub.errors import StoreError
from schemahub.ingest import source_from_spec
from schemahub.landing import Checkpoints, IngestOptions, Lander, iter_raw
from schemahub.sim import BinanceSim, Book
from schemahub.sim.archive import MICROS_FROM, _day_us
from schemahub.sources.base import Product
from schemahub.sources.spec import load_exchange, with_archive_url, with_base_url

PRODUCT = Product("BTC-USDT", "BTCUSDT", "BTC", "USDT")
NOW = datetime(2025, 1, 10, 10, 0, tzinfo=timezone.utc)  # the book's last trade is just before this
BOOK_START = date(2024, 12, 5)
INTERVAL_US = 60_000_000  # one trade a minute: 36 days are ~52,000 trades


def utc(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc)


def make_book(start: date = BOOK_START, *, now: datetime = NOW, interval_us: int = INTERVAL_US, missing=()) -> Book:
    t = now.timestamp()
    s = _day_us(start)
    n = int((t * 1e6 - s) // interval_us)
    return Book(PRODUCT.product_id, first_id=70_000_001, initial=n, interval_us=interval_us, start_us=s, t0=t,
                clock=lambda: t, seed=12, missing=missing)


def make_sim(book: Book, clock: FakeClock, **archive) -> BinanceSim:
    # The test sends its requests quickly: the REST weight budget is lifted (it has its own contract test).
    return BinanceSim([book], weight_limit=10**9, archive={"now": clock.time, **archive})


def make_source(url: str, clock: FakeClock, *, page_size: int = 200, rows_per_object: int = 1000, **archive):
    """The real Binance mapping pointed at the simulator (REST and archive), small pages and slices, fast retries."""
    spec = with_archive_url(with_base_url(load_exchange("binance"), url), url)
    t = spec.source.trades.model_copy(update={"page_size": page_size, "pages_per_object": 2})
    src = spec.source.model_copy(update={"trades": t, "retry": spec.source.retry.model_copy(
        update={"max_attempts": 6, "base_delay_s": 0.01, "max_delay_s": 0.05})})
    a = spec.archive.source.model_copy(update={"rows_per_object": rows_per_object, **archive})
    spec = spec.model_copy(update={"source": src, "archive": spec.archive.model_copy(update={"source": a})})
    return source_from_spec(spec, rate=1000.0, clock=clock)


def run(store, url: str, clock: FakeClock, since: datetime | None = None, **kw):
    """One ingest run in a fresh 'process' (its own source and lander)."""
    return Lander(store, make_source(url, clock, **kw), clock=clock).run(PRODUCT, IngestOptions(since=since))


class Killed(BaseException):
    """The process died (SIGKILL): nothing after it runs, not even a finally's store write."""


class KillingStore:
    """A store that dies at its n-th write, before or after the write takes effect; every later call dies too."""

    def __init__(self, inner, n: int, after: bool) -> None:
        self.inner, self.n, self.after, self.dead = inner, n, after, False

    def put(self, key, data, **kw):
        if self.dead:
            raise Killed()
        self.n -= 1
        if self.n <= 0:
            self.dead = True
            if self.after:
                self.inner.put(key, data, **kw)
            raise Killed()
        return self.inner.put(key, data, **kw)

    def delete(self, *a, **kw):
        if self.dead:
            raise Killed()
        return self.inner.delete(*a, **kw)

    def __getattr__(self, name):
        if self.__dict__.get("dead"):
            raise Killed()
        return getattr(self.inner, name)


def killed_runs(store, url: str, clock: FakeClock, since: datetime, kills: int, seed: int, **kw) -> int:
    """Runs killed at random store writes; returns how many died mid-run."""
    rng = random.Random(seed)
    died = 0
    for _ in range(kills):
        try:
            run(KillingStore(store, rng.randint(1, 40), rng.random() < 0.5), url, clock, since, **kw)
        except Killed:
            died += 1
        except StoreError:
            pass
        clock.advance(61)  # the dead run's lease expires
    return died


def finish(store, url: str, clock: FakeClock, since: datetime | None = None, **kw):
    """Rerun until the product is caught up and no backfill is in progress."""
    for _ in range(10):
        res = run(store, url, clock, since, **kw)
        cp = Checkpoints(store).load("binance", PRODUCT.product_id)
        if res.status == "ok" and not res.more_to_do and cp.backfill_target is None:
            return res
        clock.advance(61)
    raise AssertionError(f"never finished: {res}")


# ------------------------------------------------------------------ ground truth (the simulator's)

def day_of(book: Book, i: int) -> date:
    return datetime.fromtimestamp(book.time_us(i) / 1e6, tz=timezone.utc).date()


def expected_ids(book: Book, lo: int, hi: int) -> list[int]:
    """The ids the exchange printed in (lo, hi]."""
    return [i for i in range(lo + 1, hi + 1) if i not in book.missing]


def as_printed(sim: BinanceSim, book: Book, i: int, csv: bool) -> bytes:
    """Trade i exactly as the exchange printed it: its archive row (ms before 2025) or its REST record (µs)."""
    if csv:
        return sim.archive.row(book, i, day_of(book, i) >= MICROS_FROM)
    return sim.render(book, i)


def chain(store) -> list[tuple[str, dict, list[bytes]]]:
    return list(iter_raw(store, "binance", PRODUCT.product_id))


def check_exactly_once(store, sim: BinanceSim, book: Book, lo: int, hi: int) -> dict:
    """One linked chain (lo, hi]; every printed id in it landed once, byte for byte; returns figures."""
    objs = chain(store)
    assert objs, "nothing landed"
    assert int(objs[0][1]["cursor_start"]) == lo, (objs[0][1]["cursor_start"], lo)
    seen: dict[int, bytes] = {}
    kinds = []
    prev_end = lo
    for key, h, lines in objs:
        start, end = int(h["cursor_start"]), int(h["cursor_end"])
        assert start == prev_end, f"{key} starts at {start}, the object before it ends at {prev_end}"
        prev_end = end
        csv = h.get("lines") == "csv"
        kinds.append("archive" if csv else "rest")
        for line in lines:
            tid = sim.id_of(line)
            assert start < tid <= end, (key, tid)
            assert tid not in seen, f"trade {tid} landed twice (again in {key})"
            assert line == as_printed(sim, book, tid, csv), (key, tid, line)
            seen[tid] = line
        if csv:
            assert h["source"]["sha256"] and h["source"]["file"].endswith(".zip")
            assert [sim.id_of(x) for x in lines] == list(range(start + 1, end + 1)), f"{key}: archive ids not contiguous"
    assert prev_end == hi, (prev_end, hi)
    want = expected_ids(book, lo, hi)
    missing = sorted(set(want) - set(seen))
    assert not missing, f"{len(missing)} trades missing, e.g. {missing[:5]}"
    assert len(seen) == len(want)
    joins = sum(1 for a, b in zip(kinds, kinds[1:]) if a != b)
    return {"objects": len(objs), "archive": kinds.count("archive"), "rest": kinds.count("rest"), "joins": joins,
            "ids": seen}


def wall_clock_world(tmp_path, *, days: int, interval_us: int, first_id: int, seed: int, page_size: int,
                     rows_per_object: int):
    """For CLI processes on the wall clock: (a book of a trade every interval_us from `days` UTC days ago up to now,
    a copy of mappings/ with Binance alone, test-sized pages and slices, and fast retries)."""
    from datetime import timedelta

    import yaml

    from tests.ingest.test_chaos import _mappings

    now = datetime.now(timezone.utc)
    start = now.date() - timedelta(days=days)
    n = int((now.timestamp() * 1e6 - _day_us(start)) // interval_us)
    book = Book(PRODUCT.product_id, first_id=first_id, initial=n, interval_us=interval_us, start_us=_day_us(start),
                t0=now.timestamp(), seed=seed)
    mappings = _mappings(tmp_path, page_size=page_size, exchanges=["binance"], products={"binance": [PRODUCT.product_id]})
    f = mappings / "exchanges" / "binance.yaml"
    doc = yaml.safe_load(f.read_text())
    doc["archive"]["source"].update(rows_per_object=rows_per_object,
                                    retry={"max_attempts": 8, "base_delay_s": 0.02, "max_delay_s": 0.2})
    f.write_text(yaml.safe_dump(doc))
    return book, mappings


def kill_once(args: list[str], env: dict, ready, jitter: float, rng: random.Random) -> bool:
    """Start a CLI process, SIGKILL it once ready() holds (then up to jitter seconds later) or within 60 s: not after
    a fixed time, as a loaded machine can spend seconds importing. Whether it was killed (False: it had ended)."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline and not ready():
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, jitter))
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return killed
