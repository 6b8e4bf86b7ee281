"""Ground-truth checks shared by the ingest tests."""

from __future__ import annotations

import json

from schemahub.landing import iter_raw


def landed_ids(store, exchange: str, product_id: str) -> dict[int, bytes]:
    """trade_id -> line over all raw objects; fails on any trade landed twice or outside its object's range."""
    seen: dict[int, bytes] = {}
    for key, header, lines in iter_raw(store, exchange, product_id):
        lo, hi = int(header["cursor_start"]), int(header["cursor_end"])
        assert key.endswith(f"{lo:020d}.jsonl.gz"), key
        assert header["count"] == len(lines)
        for line in lines:
            tid = int(json.loads(line)["trade_id"])
            assert tid not in seen, f"trade {tid} is in two raw objects (again in {key})"
            assert lo < tid <= hi, f"trade {tid} outside {key}'s range ({lo}, {hi}]"
            seen[tid] = line
    return seen


def assert_exactly_once(store, book, lo: int, hi: int, exchange: str = "coinbase") -> None:
    """Every trade in (lo, hi] is landed once, byte-identical to what the exchange served; nothing else is."""
    got = landed_ids(store, exchange, book.product_id)
    want = set(range(lo + 1, hi + 1))
    missing, extra = want - set(got), set(got) - want
    assert not missing, f"{len(missing)} trades missing, e.g. {sorted(missing)[:5]}"
    assert not extra, f"{len(extra)} unexpected trades, e.g. {sorted(extra)[:5]}"
    for tid, line in got.items():
        assert line == book.trade_bytes(tid), tid
