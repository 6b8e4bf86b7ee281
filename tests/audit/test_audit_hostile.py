"""The audit attacked: damage a hostile exchange, a damaged store or a sceptical user would plant.

Ground truth is the simulator's book and the plant itself (ids computed by hand from the book), never audit.py.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemahub import audit as au
from schemahub import rawobject
from schemahub.layout import checkpoint_key, marker_key
from schemahub.transform import Transformer, write_parquet
from tests.audit.test_audit import (
    EX,
    PID,
    day_of,
    drop_from_raw,
    holes,
    key_holding,
    keys_holding,
    landed,
    parts,
    raw_keys,
    run_audit,
    truth_ids,
)
from tests.transform.helpers import curated_rows


def part_of(store, key: str) -> list[str]:
    name = key.rsplit("/", 1)[-1].split(".")[0] + ".parquet"
    return [p for p in parts(store) if p.endswith("/" + name)]


def test_a_part_misfiled_under_another_day_is_a_duplicate_the_readers_see(tmp_path):
    # A part copied into another day's folder under its own (raw) name: the readers read its trades twice, once
    # per day. Neither day repeats an id inside itself.
    with landed(tmp_path) as (store, s, b, _):
        src = parts(store)[0]
        day = src.split("date=")[1].split("/")[0]
        name = src.rsplit("/", 1)[1]
        other = next(p for p in parts(store) if f"date={day}/" not in p and not p.endswith("/" + name)
                     and not any(q.endswith("/" + name) and q.split("date=")[1][:10] == p.split("date=")[1][:10]
                                 for q in parts(store)))
        dst = other.rsplit("/", 1)[0] + "/" + name
        assert not store.exists(dst)
        store.put(dst, store.get(src).data)
        n = pq.read_metadata(io.BytesIO(store.get(src).data)).num_rows
        res = run_audit(store)
    assert res.products[0].duplicates == n, res.to_dict()
    assert res.exit_code == au.EXIT_UNEXPLAINED


def test_without_its_checkpoint_a_product_is_still_audited_over_its_raw_chain(tmp_path):
    # The checkpoint object is lost (a damaged store): the raw chain still says which ids were landed.
    with landed(tmp_path) as (store, s, b, _):
        gone = set(range(b.first_id + 230, b.first_id + 240))
        key = key_holding(store, b.first_id + 230)
        drop_from_raw(store, key, gone, s.id_of)
        Transformer(store).transform_object(key, rebuild=True)
        store.delete(checkpoint_key(EX, PID))
        res = run_audit(store)
    assert holes(res) == [(b.first_id + 230, b.first_id + 239, au.UNEXPLAINED)], res.to_dict()
    assert res.exit_code == au.EXIT_UNEXPLAINED


def test_a_product_whose_raw_and_table_are_gone_but_its_checkpoint_remains_is_audited(tmp_path):
    with landed(tmp_path) as (store, s, b, _):
        for k in [o.key for o in store.list("raw/")] + [o.key for o in store.list("curated/")]:
            store.delete(k)
        res = run_audit(store)
    assert [(p.exchange, p.product_id) for p in res.products] == [(EX, PID)]
    assert holes(res) == [(b.first_id, b.head(), au.UNEXPLAINED)], res.to_dict()
    assert res.exit_code == au.EXIT_UNEXPLAINED


def test_a_confirmed_gap_contradicted_by_the_trades_the_object_holds_is_not_believed(tmp_path):
    # A header that lies: it claims ids [a, a+19] were never printed, yet its own lines hold a..a+9 (the
    # exchange served them). The ids a+10..a+19, dropped from raw, are therefore not confirmed missing.
    with landed(tmp_path) as (store, s, b, src):
        key = key_holding(store, b.first_id + 300)
        a = rawobject.read_header(store.get(key).data, key).start + 5  # [a, a+19] inside this one object
        assert key_holding(store, a + 20) == key
        drop_from_raw(store, key, set(range(a + 10, a + 20)), s.id_of)
        header, lines = rawobject.decode(store.get(key).data, key)
        store.put(key, rawobject.encode(dict(header.doc, gaps=[[a, a + 19]]), lines))
        Transformer(store).transform_object(key, rebuild=True)
        res = run_audit(store)
        assert holes(res) == [(a + 10, a + 19, au.UNEXPLAINED)], res.to_dict()
        fixed = run_audit(store, repair=True, source_for=lambda ex: src)
        assert fixed.exit_code == 0 and holes(fixed) == [], fixed.to_dict()
        assert sorted(int(r["trade_id"]) for r in curated_rows(store)) == sorted(truth_ids(b))


def test_a_confirmed_gap_outside_its_objects_range_is_not_believed(tmp_path):
    # A gap recorded in the header of an object whose cursor range does not hold it: no page of that object
    # could have confirmed it.
    with landed(tmp_path) as (store, s, b, _):
        a = b.first_id + 450
        key = key_holding(store, a)
        drop_from_raw(store, key, {a, a + 1}, s.id_of)
        Transformer(store).transform_object(key, rebuild=True)
        liar = key_holding(store, b.first_id + 50)
        header, lines = rawobject.decode(store.get(liar).data, liar)
        store.put(liar, rawobject.encode(dict(header.doc, gaps=[[a, a + 1]]), lines))
        res = run_audit(store)
    assert holes(res) == [(a, a + 1, au.UNEXPLAINED)], res.to_dict()


def test_a_hole_at_the_first_and_at_the_last_id_of_the_chain_is_found_and_repaired(tmp_path):
    with landed(tmp_path) as (store, s, b, src):
        first, last = b.first_id, b.head()
        for ids in ({first, first + 1, first + 2}, {last - 1, last}):
            for key in keys_holding(store, ids):
                drop_from_raw(store, key, ids, s.id_of)
                Transformer(store).transform_object(key, rebuild=True)
        res = run_audit(store)
        assert holes(res) == [(first, first + 2, au.UNEXPLAINED), (last - 1, last, au.UNEXPLAINED)], res.to_dict()
        fixed = run_audit(store, repair=True, source_for=lambda ex: src)
        assert [r["status"] for r in fixed.repairs] == ["landed", "landed"], fixed.repairs
        assert fixed.exit_code == 0 and holes(fixed) == [], fixed.to_dict()
        assert sorted(int(r["trade_id"]) for r in curated_rows(store)) == sorted(truth_ids(b))


def test_a_hole_over_several_days_is_in_a_window_that_lies_inside_it(tmp_path):
    # 15-minute trades over ~6 days; every trade of two whole middle days is gone from raw and table. A window
    # over one of those days alone must not say "all explained".
    with landed(tmp_path, interval_us=900_000_000) as (store, s, b, src):
        days = sorted({day_of(b, i) for i in truth_ids(b)})
        d1, d2 = days[2], days[3]
        gone = {i for i in truth_ids(b) if day_of(b, i) in (d1, d2)}
        for key in sorted({key_holding(store, i) for i in gone}):
            header, lines = rawobject.decode(store.get(key).data, key)
            kept = [ln for ln in lines if s.id_of(ln) not in gone]
            ids = [s.id_of(ln) for ln in kept]
            store.put(key, rawobject.encode(dict(header.doc, count=len(kept), min_id=min(ids, default=None),
                                                 max_id=max(ids, default=None)), kept))
            for p in part_of(store, key):
                store.delete(p)
            Transformer(store).transform_object(key, rebuild=True)
        want = [(min(gone), max(gone), au.UNEXPLAINED)]
        assert holes(run_audit(store)) == want
        res = run_audit(store, start=d2, end=d2)
        assert holes(res) == want and res.exit_code == au.EXIT_UNEXPLAINED, res.to_dict()
        assert any(h["from"] == min(gone) for d in res.products[0].days for h in d["holes"]), "a day reports it"
        fixed = run_audit(store, repair=True, source_for=lambda ex: src)
        assert fixed.exit_code == 0 and sorted(int(r["trade_id"]) for r in curated_rows(store)) == sorted(truth_ids(b))


def test_rows_removed_from_a_compacted_copy_are_lost_and_the_copy_disagrees(tmp_path):
    from datetime import date

    from schemahub.compact import compact, read_layout

    with landed(tmp_path) as (store, s, b, _):
        compact(store, before=date(2100, 1, 1), min_parts=1)
        ckey = sorted(read_layout(store).compacted.values())[1]
        t = pq.read_table(io.BytesIO(store.get(ckey).data))
        ids = pc.cast(t["trade_id"], pa.int64())
        lo = pc.min(ids).as_py() + 3
        store.put(ckey, write_parquet(t.filter(pc.invert(pc.is_in(ids, value_set=pa.array([lo, lo + 1], pa.int64()))))))
        res = run_audit(store)
    assert holes(res) == [(lo, lo + 1, au.LOST)] and res.exit_code == au.EXIT_LOST, res.to_dict()
    assert [d["compacted_agrees"] for d in res.products[0].days].count(False) == 1


def test_a_curated_part_deleted_entirely_is_lost(tmp_path):
    with landed(tmp_path) as (store, s, b, _):
        key = raw_keys(store)[2]
        h = rawobject.read_header(store.get(key).data, key)
        for p in part_of(store, key):
            store.delete(p)
        res = run_audit(store)
    assert holes(res) == [(h.min_id, h.max_id, au.LOST)] and res.exit_code == au.EXIT_LOST, res.to_dict()


def test_a_raw_object_and_its_parts_deleted_entirely_are_unexplained_and_repaired_once(tmp_path):
    with landed(tmp_path) as (store, s, b, src):
        key = raw_keys(store)[3]
        h = rawobject.read_header(store.get(key).data, key)
        for p in part_of(store, key):
            store.delete(p)
        store.delete(key)
        store.delete(marker_key(key))
        res = run_audit(store)
        assert holes(res) == [(h.min_id, h.max_id, au.UNEXPLAINED)], res.to_dict()
        fixed = run_audit(store, repair=True, source_for=lambda ex: src)
        assert fixed.exit_code == 0 and [r["trades"] for r in fixed.repairs] == [h.count]
        assert sorted(int(r["trade_id"]) for r in curated_rows(store)) == sorted(truth_ids(b))


def test_a_trade_in_two_raw_objects_is_a_duplicate(tmp_path):
    # An object planted by hand over a range the chain already holds (its name is a different start).
    with landed(tmp_path) as (store, s, b, _):
        key = raw_keys(store)[2]
        header, lines = rawobject.decode(store.get(key).data, key)
        start = header.start + 40
        kept = [ln for ln in lines if s.id_of(ln) > start]
        name = key.rsplit("/", 1)[0] + f"/{start:020d}.jsonl.gz"
        store.put(name, rawobject.encode(dict(header.doc, cursor_start=str(start), count=len(kept),
                                              min_id=s.id_of(kept[0])), kept))
        Transformer(store).run()
        res = run_audit(store)
    assert res.products[0].duplicates == len(kept) and res.exit_code == au.EXIT_UNEXPLAINED, res.to_dict()


def test_a_repeated_row_inside_one_part_is_a_duplicate(tmp_path):
    with landed(tmp_path) as (store, s, b, _):
        p = parts(store)[2]
        t = pq.read_table(io.BytesIO(store.get(p).data))
        store.put(p, write_parquet(pa.concat_tables([t, t.slice(0, 1)])))
        res = run_audit(store)
    assert res.products[0].duplicates == 1 and res.exit_code == au.EXIT_UNEXPLAINED


def test_a_part_deleted_beyond_a_stale_checkpoint_is_lost_not_not_landed(tmp_path):
    # The lander wrote its last object, then died before moving the checkpoint: the object is in raw (and
    # transformed). Its table rows deleted are our loss, not "not landed yet".
    from dataclasses import replace

    from schemahub.landing.checkpoint import Checkpoints

    with landed(tmp_path) as (store, s, b, _):
        key = raw_keys(store)[-1]
        h = rawobject.read_header(store.get(key).data, key)
        cps = Checkpoints(store)
        cp = cps.load(EX, PID)
        store.delete(checkpoint_key(EX, PID))
        prev = rawobject.read_header(store.get(raw_keys(store)[-2]).data, raw_keys(store)[-2])
        cps.create(replace(cp, hi=h.start, last=prev.start, etag=""))
        assert cps.load(EX, PID).hi == h.start
        for p in part_of(store, key):
            store.delete(p)
        res = run_audit(store)
    assert holes(res) == [(h.min_id, h.max_id, au.LOST)] and res.exit_code == au.EXIT_LOST, res.to_dict()


def test_a_days_report_does_not_outlive_the_days_trades(tmp_path):
    # A day audited clean, then every trade of it lost from raw and table: its old report must not go on saying
    # the day is fine (stats and the status page read the reports).
    import json

    from schemahub.layout import audit_key

    with landed(tmp_path, interval_us=900_000_000) as (store, s, b, _):
        days = sorted({day_of(b, i) for i in truth_ids(b)})
        run_audit(store)
        d = days[3]
        gone = {i for i in truth_ids(b) if day_of(b, i) == d}
        for key in sorted({key_holding(store, i) for i in gone}):
            header, lines = rawobject.decode(store.get(key).data, key)
            kept = [ln for ln in lines if s.id_of(ln) not in gone]
            ids = [s.id_of(ln) for ln in kept]
            store.put(key, rawobject.encode(dict(header.doc, count=len(kept), min_id=min(ids, default=None),
                                                 max_id=max(ids, default=None)), kept))
            for p in part_of(store, key):
                store.delete(p)
            Transformer(store).transform_object(key, rebuild=True)
        res = run_audit(store)
        assert res.exit_code == au.EXIT_UNEXPLAINED
        k = audit_key(EX, PID, d)
        assert not store.exists(k) or not json.loads(store.get(k).data)["ok"], json.loads(store.get(k).data)
        assert not au.coverage(store)[(EX, PID)]["ok"]


class _RacingStore:
    """The store, with another `audit --repair` process running to completion just before this one's first
    amendment is written (both fetched the same hole)."""

    def __init__(self, store, other) -> None:
        self._store, self._other, self.raced = store, other, False

    def put(self, key, data, *a, **kw):
        if key.endswith(".amend.jsonl.gz") and not self.raced:
            self.raced = True
            self._other()
        return self._store.put(key, data, *a, **kw)

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_two_repairs_racing_land_the_hole_once(tmp_path):
    with landed(tmp_path) as (store, s, b, src):
        gone = set(range(b.first_id + 330, b.first_id + 345))
        key = key_holding(store, b.first_id + 330)
        drop_from_raw(store, key, gone, s.id_of)
        Transformer(store).transform_object(key, rebuild=True)
        other = []
        racing = _RacingStore(store, lambda: other.append(run_audit(store, repair=True, source_for=lambda ex: src)))
        res = run_audit(racing, repair=True, source_for=lambda ex: src)
        assert racing.raced and [r["status"] for r in other[0].repairs] == ["landed"]
        assert [r["status"] for r in res.repairs] == ["already landed"]
        assert res.exit_code == 0 and other[0].exit_code == 0, res.to_dict()
        ids = sorted(int(r["trade_id"]) for r in curated_rows(store))
        assert ids == sorted(truth_ids(b))
        assert len([o for o in store.list("raw/") if o.key.endswith(".amend.jsonl.gz")]) == 1


class _FailsFrom:
    """The exchange's source, failing every fetch from a cursor on (an outage in the middle of a repair)."""

    def __init__(self, src, at: int) -> None:
        self._src, self._at = src, at

    def fetch(self, symbol, cursor, **kw):
        from schemahub.errors import SourceError

        if cursor >= self._at:
            raise SourceError(f"simulated outage from {cursor}")
        return self._src.fetch(symbol, cursor, **kw)

    def __getattr__(self, name):
        return getattr(self._src, name)


def test_a_repair_that_fails_on_one_hole_still_lands_and_transforms_the_others(tmp_path):
    with landed(tmp_path) as (store, s, b, src):
        one, two = set(range(b.first_id + 120, b.first_id + 125)), set(range(b.first_id + 420, b.first_id + 425))
        for gone in (one, two):
            key = key_holding(store, min(gone))
            drop_from_raw(store, key, gone, s.id_of)
            Transformer(store).transform_object(key, rebuild=True)
        res = run_audit(store, repair=True, source_for=lambda ex: _FailsFrom(src, b.first_id + 400))
        assert [r["status"].split(":")[0] for r in res.repairs] == ["landed", "failed"], res.repairs
        assert holes(res) == [(min(two), max(two), au.UNEXPLAINED)], res.to_dict()
        assert one <= {int(r["trade_id"]) for r in curated_rows(store)}


def test_a_window_over_the_first_and_last_days_finds_the_holes_at_the_chains_ends(tmp_path):
    # The first and last ids of the chain are gone from raw and table; a window over exactly the first day and
    # one over exactly the last day each find theirs (no day beyond them to bound the ids by).
    with landed(tmp_path) as (store, s, b, _):
        first, last = b.first_id, b.head()
        for ids in ({first, first + 1}, {last - 1, last}):
            for key in keys_holding(store, ids):
                drop_from_raw(store, key, ids, s.id_of)
                Transformer(store).transform_object(key, rebuild=True)
        d0, d1 = day_of(b, first + 2), day_of(b, last - 2)
        assert d0 != d1
        lo = run_audit(store, start=d0, end=d0)
        hi = run_audit(store, start=d1, end=d1)
    assert holes(lo) == [(first, first + 1, au.UNEXPLAINED)] and lo.exit_code == au.EXIT_UNEXPLAINED, lo.to_dict()
    assert holes(hi) == [(last - 1, last, au.UNEXPLAINED)] and hi.exit_code == au.EXIT_UNEXPLAINED, hi.to_dict()


def test_coinbase_and_okx_holes_at_both_ends_are_repaired_once_through_their_id_windows(tmp_path):
    from tests.contract.harness import PRODUCT

    for exchange in ("coinbase", "okx"):
        with landed(tmp_path / exchange, exchange=exchange) as (store, s, b, src):
            pid = PRODUCT[exchange]
            keys = sorted(o.key for o in store.list(f"raw/{exchange}/{pid}/"))

            def holding(i):
                return next(k for k in keys if (h := rawobject.read_header(store.get(k).data, k)).start < i <= h.end)

            first, last = b.first_id, b.head()
            plants = ({first}, set(range(first + 200, first + 230)), {last})
            for ids in plants:
                key = holding(min(ids))
                drop_from_raw(store, key, ids, s.id_of)
                Transformer(store).transform_object(key, rebuild=True)
            res = run_audit(store)
            assert holes(res) == [(min(g), max(g), au.UNEXPLAINED) for g in plants], (exchange, res.to_dict())
            fixed = run_audit(store, repair=True, source_for=lambda ex: src)
            assert [r["status"] for r in fixed.repairs] == ["landed"] * 3, (exchange, fixed.repairs)
            assert fixed.exit_code == 0 and holes(fixed) == [], (exchange, fixed.to_dict())
            assert sorted(int(r["trade_id"]) for r in curated_rows(store)) == sorted(truth_ids(b)), exchange


def test_a_confirmed_gap_that_is_a_lie_is_asked_once_more_by_the_repair_and_filled(tmp_path):
    # A header claims [a, a+9] was never printed; nothing in the store contradicts it, but the exchange has
    # those trades. The audit alone cannot know (confirmed, exit 0); `--repair` asks each landing-confirmed gap
    # once more, lands what is served, and never asks again.
    with landed(tmp_path) as (store, s, b, src):
        key = key_holding(store, b.first_id + 300)
        a = rawobject.read_header(store.get(key).data, key).start + 5  # [a, a+9] inside this one object
        assert key_holding(store, a + 10) == key
        gone = set(range(a, a + 10))
        drop_from_raw(store, key, gone, s.id_of)
        header, lines = rawobject.decode(store.get(key).data, key)
        store.put(key, rawobject.encode(dict(header.doc, gaps=[[a, a + 9]]), lines))
        Transformer(store).transform_object(key, rebuild=True)
        res = run_audit(store)
        assert holes(res) == [(a, a + 9, au.CONFIRMED)] and res.exit_code == 0
        fixed = run_audit(store, repair=True, source_for=lambda ex: src)
        assert [(r["status"], r["trades"], r["was"]) for r in fixed.repairs] == [("landed", 10, au.CONFIRMED)]
        assert fixed.exit_code == 0 and holes(fixed) == [], fixed.to_dict()
        assert sorted(int(r["trade_id"]) for r in curated_rows(store)) == sorted(truth_ids(b))
        asked = len(s.requests)
        again = run_audit(store, repair=True, source_for=lambda ex: src)
        assert again.repairs == [] and len(s.requests) == asked


def test_the_vectorized_search_counts_ids_below_each_query_as_bisect_does():
    import bisect
    import random

    rnd = random.Random(7)
    ids = sorted(rnd.sample(range(1000), 300))
    queries = [rnd.randrange(-5, 1005) for _ in range(400)] + [ids[0], ids[-1], ids[10]]
    got = au._below(pa.array(ids, pa.int64()), pa.array(queries, pa.int64())).to_pylist()
    assert got == [bisect.bisect_left(ids, q) for q in queries]


def test_a_damaged_checkpoint_does_not_stop_the_audit_of_the_raw_chain(tmp_path):
    with landed(tmp_path) as (store, s, b, _):
        key = key_holding(store, b.first_id + 100)
        drop_from_raw(store, key, {b.first_id + 100}, s.id_of)
        Transformer(store).transform_object(key, rebuild=True)
        store.put(checkpoint_key(EX, PID), b'{"lo": "not json')
        res = run_audit(store)
    assert holes(res) == [(b.first_id + 100, b.first_id + 100, au.UNEXPLAINED)], res.to_dict()
    assert any("checkpoint" in line for line in res.products[0].damaged)


def test_a_product_with_nothing_left_but_its_checkpoint_still_shows_in_the_reports(tmp_path):
    # Audited before (reports say all is well), then raw and table gone: the reports must now say it is not.
    with landed(tmp_path) as (store, s, b, _):
        run_audit(store)
        assert au.coverage(store)[(EX, PID)]["ok"]
        for k in [o.key for o in store.list("raw/")] + [o.key for o in store.list("curated/")]:
            store.delete(k)
        res = run_audit(store)
        cov = au.coverage(store)
    assert res.exit_code == au.EXIT_UNEXPLAINED
    assert cov[(EX, PID)]["ok"] is False and cov[(EX, PID)]["missing"] == len(truth_ids(b)), cov


def test_a_window_that_ends_before_it_starts_is_a_usage_error_not_all_explained(tmp_path, capsys):
    from schemahub.cli import main

    with landed(tmp_path) as (store, s, b, _):
        key = key_holding(store, b.first_id + 300)
        drop_from_raw(store, key, {b.first_id + 300}, s.id_of)
        Transformer(store).transform_object(key, rebuild=True)
        d = day_of(b, b.first_id + 300)
        code = main(["audit", "--storage", str(tmp_path / "store"), "--start", d, "--end", "2000-01-01"])
    err = capsys.readouterr().err
    assert code == 2 and "--start" in err and "--end" in err, err


def test_quarantined_rows_are_explained_and_counted_on_their_day(tmp_path):
    with landed(tmp_path) as (store, s, b, _):
        bad = b.first_id + 222
        key = key_holding(store, bad)
        header, lines = rawobject.decode(store.get(key).data, key)
        text = [ln for ln in lines if s.id_of(ln) == bad][0]
        # The exchange printed a price that is not a number: the mapping refuses the row (quarantine, a reason).
        price = b.fields(bad)["price"].encode()
        assert price in text
        store.put(key, rawobject.encode(header.doc, [ln.replace(price, b"NaN?") if ln == text else ln for ln in lines]))
        Transformer(store).transform_object(key, rebuild=True)
        assert bad not in {int(r["trade_id"]) for r in curated_rows(store)}
        res = run_audit(store)
    assert holes(res) == [(bad, bad, au.QUARANTINED)] and res.exit_code == 0, res.to_dict()
    (day,) = [d for d in res.products[0].days if d["quarantined"]]
    assert day["date"] == day_of(b, bad) and day["quarantined"] == 1
