"""What every exchange's contract test needs: its simulator, a source with test-sized pages, ground truth."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from schemahub.ingest import source_from_spec
from schemahub.landing import iter_raw
from schemahub.sim import SIMS, Book, ExchangeSim
from schemahub.sources.spec import load_exchange, with_base_url

EXCHANGES = ["coinbase", "binance", "kraken", "okx"]

# One product per exchange for the single-product tests, named as users name it.
PRODUCT = {"coinbase": "BTC-USD", "binance": "BTC-USDT", "kraken": "BTC-USD", "okx": "BTC-USDT"}
SECOND = {"coinbase": "ETH-USD", "binance": "ETH-USDT", "kraken": "ETH-USD", "okx": "ETH-USDT"}
# The exchange's own symbol for PRODUCT, as the real APIs spell it (API_NOTES.md).
NATIVE = {"coinbase": "BTC-USD", "binance": "BTCUSDT", "kraken": "XBTUSD", "okx": "BTC-USDT"}


def book(exchange: str, product: str | None = None, *, initial: int = 600, interval_us: int = 20_000, seed: int = 5,
         first_id: int = 2_000_000, **kw) -> Book:
    """A book whose trades lie in the past, even those added later (cursor-by-time exchanges walk up to the clock)."""
    kw.setdefault("t0", time.time() - 60)
    return Book(product or PRODUCT[exchange], first_id=first_id, initial=initial, interval_us=interval_us,
                seed=seed + len(exchange), **kw)


def sim(exchange: str, books: list[Book], **kw) -> ExchangeSim:
    return SIMS[exchange](books, **kw)


def source(exchange: str, url: str, *, page_size: int | None = None, pages_per_object: int | None = None,
           rate: float = 500.0, retry: dict | None = None, headers: dict | None = None, clock=None,
           archive: bool = False):
    """The exchange's real mapping, pointed at url, with test-sized pages and fast retries.

    REST paging only, unless archive: these suites test pages, and on the wall clock Binance's archive would take
    over any book day whose file is published (from 08:00 UTC for yesterday), so what a test lands would depend on
    the time of day it runs. The archive's own tests run on a fake clock (tests/archive)."""
    spec = with_base_url(load_exchange(exchange), url)
    t = spec.source.trades
    tu = {}
    if page_size:
        tu["page_size"] = page_size
    if pages_per_object:
        tu["pages_per_object"] = pages_per_object
    if headers is not None:
        tu["headers"] = headers
    src = spec.source.model_copy(update={
        "trades": t.model_copy(update=tu),
        "retry": spec.source.retry.model_copy(update=retry or {"max_attempts": 12, "base_delay_s": 0.01, "max_delay_s": 0.1}),
    })
    spec = spec.model_copy(update={"source": src} if archive else {"source": src, "archive": None})
    kw = {"clock": clock} if clock is not None else {}
    return source_from_spec(spec, rate=rate, **kw)


def since_of(b: Book, i: int) -> datetime:
    return datetime.fromtimestamp(b.time_us(i) / 1e6, tz=timezone.utc)


def landed(store, s: ExchangeSim, product_id: str) -> dict[int, bytes]:
    """trade id -> line over all raw objects; fails on a trade landed twice or a header that lies."""
    seen: dict[int, bytes] = {}
    for key, header, lines in iter_raw(store, s.exchange, product_id):
        assert key.endswith(f"{int(header['cursor_start']):020d}.jsonl.gz"), key
        assert header["count"] == len(lines)
        ids = [s.id_of(line) for line in lines]
        if ids:
            assert (header["min_id"], header["max_id"]) == (min(ids), max(ids)), key
        for tid, line in zip(ids, lines):
            assert tid not in seen, f"trade {tid} is in two raw objects (again in {key})"
            seen[tid] = line
    return seen


def assert_exactly_once(store, s: ExchangeSim, b: Book, lo: int, hi: int) -> dict[int, bytes]:
    """Every trade whose cursor is in (lo, hi] landed once, byte for byte as served; nothing else did."""
    got = landed(store, s, b.product_id)
    want = set(s.expected_ids(b, lo, hi))
    missing, extra = want - set(got), set(got) - want
    assert not missing, f"{len(missing)} trades missing, e.g. {sorted(missing)[:5]}"
    assert not extra, f"{len(extra)} unexpected trades, e.g. {sorted(extra)[:5]}"
    for tid, line in got.items():
        assert line == s.render(b, tid), tid
    return got


# ------------------------------------------------------------------ hostile pages
# Paging kind of each exchange, and whether its ids are contiguous (mappings/exchanges/*.yaml).
KIND = {"coinbase": "id_window_desc", "okx": "id_window_desc", "binance": "id_forward", "kraken": "cursor_forward"}
ID_KINDS = [e for e in EXCHANGES if KIND[e] != "cursor_forward"]  # a head counted in ids (Kraken's is the clock)


def steady_state(store, s: ExchangeSim, b: Book, after_id: int) -> int:
    """A checkpoint as a scheduled run leaves it: everything up to trade after_id landed. Returns its cursor.

    The hostile tests start from here so that the page faults they script hit the walk, not the first-run search.
    """
    from schemahub.landing import Checkpoint, Checkpoints

    at = s.cursor_of(b, after_id)
    Checkpoints(store).create(Checkpoint(s.exchange, b.product_id, at, at))
    return at


def raw_lines(store, s: ExchangeSim, product_id: str) -> list[tuple[str, dict, list[int]]]:
    """(key, header, trade id of each line) for every raw object, duplicates and all."""
    return [(key, header, [s.id_of(line) for line in lines]) for key, header, lines in iter_raw(store, s.exchange, product_id)]


def paging_requests(s: ExchangeSim) -> list[str]:
    """The requests that walked trades (a cursor or window in the query), in order."""
    marks = {"coinbase": ("before=",), "okx": ("before=", "after="), "binance": ("fromId=",), "kraken": ("since=",)}[s.exchange]
    return [r for r in s.requests if any(m in r for m in marks) and "aggTrades" not in r]
