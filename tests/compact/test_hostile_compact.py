"""Hostile review of compaction (issue #13): hand damage and reruns. Ground truth is the trade ids written into
hand-built raw objects, never the code's own output."""

from __future__ import annotations

import json
from datetime import date

import pytest

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


class Crash(Exception):
    pass


def test_a_crash_at_every_write_of_compact_then_a_rerun_leaves_both_readers_on_one_whole_copy(lake):
    """Kill the run at its n-th write (copy, manifest, partition move, ...), for every n, then run again: both
    readers read the day exactly once, from the same one file, with every trade of the raw objects."""
    from schemahub.pipeline import compact_closed
    from tests.compact.conftest import athena_plan

    store, cat = lake
    t = Transformer(store, catalog=cat)
    for s in (0, 10):
        t.transform_object(put_raw(store, [_line(i) for i in range(s + 1, s + 11)], start=s,
                                   fetched=f"{DAY}T23:59:00Z"))
    calls = []
    for obj, names in ((store, ("put", "delete")), (cat, ("create", "update"))):
        for name in names:
            real = getattr(obj, name)

            def hooked(*a, _real=real, _name=name, **kw):
                calls.append(_name)
                if len(calls) == crash_at:
                    raise Crash(_name)
                return _real(*a, **kw)

            setattr(obj, name, hooked)
    crash_at, n = 0, 0
    compact_closed(store, catalog=cat, before=AFTER)
    writes = len(calls)
    assert writes >= 3  # copy, manifest, partition move at least
    for n in range(1, writes + 1):
        for o in store.list("compacted/"):
            store.delete(o.key)
        cat.update({PART: f"curated/{PART}/"})
        calls.clear()
        crash_at = n
        try:
            compact_closed(store, catalog=cat, before=AFTER)
        except Crash:
            pass
        crash_at = 0
        compact_closed(store, catalog=cat, before=AFTER)
        view = read_layout(store).files[PART]
        assert len(view) == 1 and view[0].startswith("compacted/"), (n, view)
        assert athena_plan(cat, store)[PART] == view, n
        assert sorted(trade_ids(store, view)) == list(range(1, 21)), n


class MemoryCatalog:
    """The catalog port in memory, with Glue's batch behaviour: BatchUpdatePartition applies the entries of the
    chunks before a failing one, then the call fails (throttling after retries, AccessDenied, a partition deleted
    by hand meanwhile)."""

    def __init__(self):
        self.loc: dict[str, str] = {}
        self.fail_next_move_to_copies = False

    def locations(self):
        return dict(self.loc)

    def create(self, items):
        for p, v in items.items():
            self.loc.setdefault(p, v)

    def update(self, items):
        from schemahub.errors import CatalogUnavailable

        if self.fail_next_move_to_copies and any("/v-" in v for v in items.values()):
            self.fail_next_move_to_copies = False
            first = sorted(items)[: max(1, len(items) // 2)]
            self.loc.update({p: items[p] for p in first})
            raise CatalogUnavailable("glue table db.trades: cannot BatchUpdatePartition: ThrottlingException")
        self.loc.update(items)

    def show_parts(self, partition):
        self.loc[partition] = f"curated/{partition}/"


def test_a_catalog_failing_mid_switch_never_leaves_a_day_on_a_copy_that_lacks_a_late_part(tmp_path):
    """The move to the copies fails half way (Glue throttles after its retries): a day whose late part landed
    while the run compacted, and whose transform found the partition still on its parts, must not be left on the
    copy that lacks it: the run fails with one clear error, and Athena still reads every trade of that day."""
    from schemahub.errors import CatalogError
    from schemahub.pipeline import compact_closed

    store = open_store(str(tmp_path / "lake"))
    cat = MemoryCatalog()
    t = Transformer(store, catalog=cat)
    day2 = "2026-11-21"  # sorts after DAY: the chunk holding DAY is applied before the failing one
    part2 = f"exchange=coinbase/product_id=BTC-USD/date={day2}"
    for s in (0, 10):
        t.transform_object(put_raw(store, [_line(i) for i in range(s + 1, s + 11)], start=s,
                                   fetched=f"{DAY}T23:59:00Z"))
    for s in (100, 110):
        lines = [json.dumps({"time": f"{day2}T10:00:{i % 60:02d}.5Z", "trade_id": i, "price": "1.5", "size": "1",
                             "side": "buy"}).encode() for i in range(s + 1, s + 11)]
        t.transform_object(put_raw(store, lines, start=s, fetched=f"{day2}T23:59:00Z"))
    # The late part lands after the run's first check and before its move (the transform sees the parts folder).
    import schemahub.compact as c

    real = c._still_exact
    late_done = []

    def still_exact(store_, targets, layout, *, trust_sizes):
        out = real(store_, targets, layout, trust_sizes=trust_sizes)
        if trust_sizes and not late_done:
            late_done.append(1)
            t.transform_object(put_raw(store, [_line(i) for i in range(21, 26)], start=20,
                                       fetched=f"{DAY}T23:59:30Z"))
        return out

    c._still_exact = still_exact
    cat.fail_next_move_to_copies = True
    try:
        with pytest.raises(CatalogError, match="ThrottlingException"):
            compact_closed(store, catalog=cat, before=date(2026, 11, 22))
    finally:
        c._still_exact = real
    for p, ids in ((PART, range(1, 26)), (part2, range(101, 121))):
        files = [o.key for o in store.list(cat.loc[p])]  # what Athena opens: every object under the location
        assert sorted(trade_ids(store, files)) == list(ids), (p, cat.loc[p])


def test_a_glue_partition_deleted_or_moved_by_hand_is_repaired_by_the_next_run(lake):
    from schemahub.pipeline import compact_closed
    from tests.compact.conftest import athena_plan

    store, cat = lake
    t = Transformer(store, catalog=cat)
    for s in (0, 10):
        t.transform_object(put_raw(store, [_line(i) for i in range(s + 1, s + 11)], start=s,
                                   fetched=f"{DAY}T23:59:00Z"))
    compact_closed(store, catalog=cat, before=AFTER)
    [copy] = read_layout(store).files[PART]
    db, table = cat.database, cat.table
    cat.client.delete_partition(DatabaseName=db, TableName=table, PartitionValues=["coinbase", "BTC-USD", DAY])
    compact_closed(store, catalog=cat, before=AFTER)
    assert athena_plan(cat, store)[PART] == [copy]
    cat.update({PART: "curated/exchange=coinbase/product_id=BTC-USD/date=2026-11-19/"})  # a wrong day, by hand
    compact_closed(store, catalog=cat, before=AFTER)
    assert athena_plan(cat, store)[PART] == [copy]
    assert sorted(trade_ids(store, [copy])) == list(range(1, 21))
