"""Compaction: one file per closed product-day, swapped in for readers without ever showing a day twice."""

from __future__ import annotations

from datetime import date

import pytest

from schemahub.compact import COMPACTED, compact, read_layout
from schemahub.errors import SchemahubError
from schemahub.query import connect
from schemahub.sim import Book
from schemahub.transform import Transformer
from tests.transform.helpers import put_raw

DAY0_US = 1_793_491_200_000_000  # 2026-11-01T00:00:00Z
PER_OBJECT = 200


def _land(store, book: Book, first: int, last: int) -> None:
    """Raw objects of PER_OBJECT trades, as landing writes them, covering ids first..last."""
    for start in range(first - 1, last, PER_OBJECT):
        ids = range(start + 1, min(start + PER_OBJECT, last) + 1)
        put_raw(store, [book.trade_bytes(i) for i in ids], start=start, product=book.product_id)


def _table(store) -> list[tuple]:
    return connect(store).execute(
        "SELECT exchange, product_id, date, trade_id, price, size, side, trade_time, raw_key FROM trades "
        "ORDER BY product_id, trade_time, trade_id").fetchall()


@pytest.fixture
def book():
    # One trade every 2 minutes: 720 a day, 4 objects a day, 3 days (2026-11-01 .. 03).
    return Book("BTC-USD", first_id=1, initial=2160, interval_us=120_000_000, start_us=DAY0_US, t0=0, seed=3)


def test_compaction_keeps_the_table_identical_and_each_day_is_read_once(store, book):
    _land(store, book, 1, 2160)
    Transformer(store).run()
    before = _table(store)
    assert len(before) == 2160
    files_before = len(read_layout(store).keys())

    res = compact(store, before=date(2026, 11, 3))  # the 3rd is still open
    assert (res.partitions, res.skipped_open) == (2, 1) and res.rows == 1440

    layout = read_layout(store)
    assert sorted(layout.compacted) == ["exchange=coinbase/product_id=BTC-USD/date=2026-11-01",
                                        "exchange=coinbase/product_id=BTC-USD/date=2026-11-02"]
    for p, key in layout.compacted.items():
        assert layout.files[p] == [key] and len(layout.parts[p]) >= 4  # one file read instead of the parts
    assert len(layout.keys()) < files_before
    assert _table(store) == before  # same rows, same values, none twice
    n, distinct = connect(store).execute("SELECT count(*), count(DISTINCT trade_id) FROM trades").fetchone()
    assert n == distinct == 2160
    again = compact(store, before=date(2026, 11, 3))
    assert again.partitions == 0  # idempotent
    from schemahub.query import stats

    [st] = stats(store)
    assert st["rows"] == 2160 and st["compacted_bytes"] > 0 and st["curated_bytes"] > st["compacted_bytes"]


def test_a_crash_between_the_compacted_file_and_its_manifest_leaves_readers_on_the_parts(store, book):
    _land(store, book, 1, 1440)
    Transformer(store).run()
    before = _table(store)

    real_put = store.put

    def put(key, data, **kw):
        if key.endswith("manifest.json"):
            raise SchemahubError("killed before the manifest")
        return real_put(key, data, **kw)

    store.put = put
    with pytest.raises(SchemahubError):
        compact(store, before=date(2026, 12, 1))
    store.put = real_put
    orphans = [o.key for o in store.list(COMPACTED)]
    assert orphans and not read_layout(store).compacted  # an unnamed compacted file is never read
    assert _table(store) == before
    res = compact(store, before=date(2026, 12, 1))  # the rerun adopts the same file and names it
    assert res.partitions == 2 and set(read_layout(store).compacted.values()) >= set(orphans)
    assert _table(store) == before


def test_a_part_arriving_after_compaction_is_still_read(store, book):
    _land(store, book, 1, 600)  # most of the first day
    Transformer(store).run()
    assert compact(store, before=date(2026, 12, 1)).partitions == 1
    _land(store, book, 601, 720)  # the rest of that day arrives late (e.g. a backfill)
    Transformer(store).run()
    rows = _table(store)
    assert [int(r[3]) for r in rows] == list(range(1, 721))  # every trade once: compacted copy + the late part


def test_compacted_bytes_are_deterministic(tmp_path, book):
    from schemahub.store.local import LocalStore

    out = []
    for run in ("a", "b"):
        store = LocalStore(str(tmp_path / run))
        _land(store, book, 1, 1440)
        Transformer(store).run()
        compact(store, before=date(2026, 12, 1))
        out.append({o.key: store.get(o.key).data for o in store.list(COMPACTED) if o.key.endswith(".parquet")})
    assert out[0] == out[1] and len(out[0]) == 2


def test_a_manifest_whose_compacted_file_is_gone_reads_the_parts_and_the_next_compact_restores_it(tmp_path):
    """Found by a hostile review: one deleted compacted file made every query of the whole lake fail."""
    import json as _json
    import os as _os
    from datetime import date as _date

    from schemahub.compact import compact, read_layout
    from schemahub.query import connect
    from schemahub.store.local import LocalStore
    from schemahub.transform import Transformer
    from tests.transform.helpers import put_raw

    def line(i):
        return _json.dumps({"time": "2026-11-28T10:00:00.5Z", "trade_id": i, "price": "100.5", "size": "1",
                            "side": "buy"}, separators=(",", ":")).encode()

    store = LocalStore(str(tmp_path))
    put_raw(store, [line(1), line(2)], start=0)
    put_raw(store, [line(3), line(4)], start=2)
    Transformer(store).run()
    assert compact(store, before=_date(2026, 11, 29)).partitions == 1
    [copy] = read_layout(store).compacted.values()
    _os.remove(store.local_path(copy))  # a lifecycle rule or an operator removed it; the parts are still there
    assert connect(store).execute("SELECT count(*), count(DISTINCT trade_id) FROM trades").fetchall() == [(4, 4)]
    assert compact(store, before=_date(2026, 11, 29)).partitions == 1  # written again
    assert read_layout(store).compacted and connect(store).execute("SELECT count(*) FROM trades").fetchall() == [(4,)]
