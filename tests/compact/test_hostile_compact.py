"""Hostile review of compaction (issue #13): hand damage and reruns. Ground truth is the trade ids written into
hand-built raw objects, never the code's own output."""

from __future__ import annotations

import json
from datetime import date

from schemahub.compact import compact, read_layout
from schemahub.layout import manifest_key
from schemahub.store import open_store
from schemahub.transform import Transformer
from tests.compact.conftest import trade_ids
from tests.transform.helpers import put_raw

DAY = "2026-11-20"
PART = f"exchange=coinbase/product_id=BTC-USD/date={DAY}"
AFTER = date(2026, 11, 21)


def _line(i: int) -> bytes:
    return json.dumps({"time": f"{DAY}T10:{i // 60:02d}:{i % 60:02d}.5Z", "trade_id": i, "price": "100.5",
                       "size": "1", "side": "buy"}, separators=(",", ":")).encode()


def _day(tmp_path):
    store = open_store(str(tmp_path / "lake"))
    t = Transformer(store)
    for start in (0, 10):
        t.transform_object(put_raw(store, [_line(i) for i in range(start + 1, start + 11)], start=start,
                                   fetched=f"{DAY}T23:59:00Z"))
    return store


def test_a_manifest_damaged_by_hand_is_replaced_and_the_day_compacted_again(tmp_path):
    store = _day(tmp_path)
    assert compact(store, before=AFTER).partitions == 1
    for garbage in (b"{not json", b'["a list"]', b'{"parts": {}}'):  # truncated, wrong shape, no file
        store.put(manifest_key(PART), garbage)
        assert PART not in read_layout(store).compacted  # read as its parts meanwhile (complete)
        res = compact(store, before=AFTER)
        layout = read_layout(store)
        assert res.partitions == 1 and PART in layout.compacted, (garbage, res)
        assert sorted(trade_ids(store, layout.files[PART])) == list(range(1, 21))


def test_a_backlog_reads_no_part_before_the_deadline_says_a_day_may_start(tmp_path):
    """The Lambda's 15 minutes: a first scheduled run over a year of parts (900,000 files for 50 products) must
    reach its deadline checks after listing, not after one read per part (900,000 ranged GETs at ~15 ms, 16 at a
    time, is ~14 minutes: the function is killed before it compacts a day, every day). With the deadline
    already passed, no day starts, so no part may be read; every closed day is left pending."""
    import time

    store = open_store(str(tmp_path / "lake"))
    t = Transformer(store)
    days = ["2026-11-18", "2026-11-19", "2026-11-20"]
    for d, day in enumerate(days):
        for start in (100 * d, 100 * d + 10):
            lines = [json.dumps({"time": f"{day}T10:00:{i % 60:02d}.5Z", "trade_id": i, "price": "1.5", "size": "1",
                                 "side": "buy"}).encode() for i in range(start + 1, start + 11)]
            t.transform_object(put_raw(store, lines, start=start, fetched=f"{day}T23:59:00Z"))
    reads = []
    for name in ("get", "get_tail"):
        real = getattr(store, name)

        def counted(key, *a, _real=real, **kw):
            reads.append(key)
            return _real(key, *a, **kw)

        setattr(store, name, counted)
    res = compact(store, before=AFTER, deadline=time.monotonic() - 1)
    assert res.partitions == 0 and res.pending == len(days)
    assert [k for k in reads if k.startswith("curated/")] == []
    reads.clear()
    res = compact(store, before=AFTER)  # no deadline: every day, each part read (its footer, then its rows)
    assert res.partitions == len(days) and res.pending == 0
    layout = read_layout(store)
    assert sorted(trade_ids(store, layout.keys())) == sorted(i for d in range(3) for i in range(100 * d + 1, 100 * d + 21))


def test_a_rebuild_that_changes_nothing_leaves_athena_on_the_copy_the_view_reads(lake):
    """`transform --all` over compacted days whose mapping did not change writes the same parts, byte for byte:
    the copy still holds the day exactly, so both readers go on reading it (moving Athena back to the parts would
    put a year of days back on 900,000 small files until the next daily run, and disagree with the view)."""
    from schemahub.pipeline import compact_closed
    from tests.compact.conftest import athena_plan

    store, cat = lake
    t = Transformer(store, catalog=cat)
    keys = [put_raw(store, [_line(i) for i in range(s + 1, s + 11)], start=s, fetched=f"{DAY}T23:59:00Z")
            for s in (0, 10)]
    for k in keys:
        t.transform_object(k)
    compact_closed(store, catalog=cat, before=AFTER)
    [copy] = read_layout(store).files[PART]
    assert athena_plan(cat, store)[PART] == [copy]
    for k in keys:
        Transformer(store, catalog=cat).transform_object(k, rebuild=True)
    assert read_layout(store).files[PART] == [copy]
    assert athena_plan(cat, store)[PART] == [copy]
    assert sorted(trade_ids(store, [copy])) == list(range(1, 21))
