"""The completeness audit against a store built by a simulator run, with damage planted in it.

Ground truth is the simulator's book: which ids exist (Book.missing are ids the exchange never printed), their
times (so their UTC days) and their bytes. Each plant is made the way the real accident would leave the store:
- ids removed from raw: an object rewritten without some lines, its header rewritten to match (not "damaged");
- rows removed from the table: a curated part rewritten without some rows (raw still has them: our bug);
- a hole the exchange confirms: ids the simulator never serves, confirmed by the landing's page checks;
- a duplicate file: a copy of a curated part under another name.
"""

from __future__ import annotations

import contextlib
import io
import json
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from schemahub import audit as au
from schemahub import pipeline, rawobject
from schemahub.landing import IngestOptions, Lander
from schemahub.layout import audit_key, curated_prefix, marker_key, raw_prefix
from schemahub.store.local import LocalStore
from schemahub.transform import Transformer, write_parquet
from tests.contract.harness import book, sim, source, steady_state
from tests.transform.helpers import curated_rows

EX, PID = "binance", "BTC-USDT"
AT = "2026-12-02T00:00:00Z"
N = 600
INTERVAL_US = 300_000_000  # 5 minutes: 600 trades span about two UTC days


@contextlib.contextmanager
def landed(tmp_path, *, exchange=EX, missing=(), interval_us=INTERVAL_US):
    """A store with every trade of a simulated book landed (page checks on) and transformed; the sim stays up."""
    b = book(exchange, initial=N, interval_us=interval_us, missing=missing)
    store = LocalStore(str(tmp_path / "store"))
    with sim(exchange, [b]) as s:
        src = source(exchange, s.url, page_size=100, pages_per_object=1)
        product = next(p for p in src.list_products() if p.product_id == b.product_id)
        steady_state(store, s, b, b.first_id - 1)
        res = Lander(store, src).run(product, IngestOptions())
        assert res.status == "ok" and not res.more_to_do, res
        assert Transformer(store).run().ok
        yield store, s, b, src


def truth_ids(b) -> set[int]:
    return {i for i in range(b.first_id, b.head() + 1) if i not in b.missing}


def day_of(b, i: int) -> str:
    return datetime.fromtimestamp(b.time_us(i) / 1e6, tz=timezone.utc).date().isoformat()


def run_audit(store, **kw):
    return pipeline.audit(store, audited_at=AT, **kw)


def holes(res) -> list[tuple[int, int, str]]:
    return [(h["from"], h["to"], h["class"]) for p in res.products for h in p.holes]


def raw_keys(store) -> list[str]:
    return sorted(o.key for o in store.list(raw_prefix(EX, PID)))


def key_holding(store, i: int) -> str:
    """The raw object whose cursor range holds trade id i (the cursor is the id on Binance and Coinbase)."""
    for k in raw_keys(store):
        h = rawobject.read_header(store.get(k).data, k)
        if h.start < i <= h.end:
            return k
    raise AssertionError(f"no raw object holds {i}")


def drop_from_raw(store, key: str, ids: set[int], id_of) -> None:
    """Rewrite a raw object without the lines of `ids`, its header consistent (count, min/max id)."""
    header, lines = rawobject.decode(store.get(key).data, key)
    kept = [ln for ln in lines if id_of(ln) not in ids]
    kept_ids = [id_of(ln) for ln in kept]
    doc = dict(header.doc, count=len(kept), min_id=min(kept_ids, default=None), max_id=max(kept_ids, default=None))
    store.put(key, rawobject.encode(doc, kept))  # with nothing kept, a header-only object over the same range


def keys_holding(store, ids: set[int]) -> list[str]:
    """Every raw object whose cursor range holds one of ids (the last trades can span two small objects)."""
    return sorted({key_holding(store, i) for i in ids})


def parts(store) -> list[str]:
    return sorted(o.key for o in store.list(curated_prefix(EX, PID)) if o.key.endswith(".parquet"))


# ------------------------------------------------------------------ a clean store

def test_a_clean_store_audits_with_exit_0_and_reports_every_day_exactly(tmp_path):
    with landed(tmp_path) as (store, s, b, _):
        res = run_audit(store)
    assert res.exit_code == 0 and res.missing_trades == 0, res.to_dict()
    (p,) = res.products
    assert holes(res) == []
    want_days: dict[str, list[int]] = {}
    for i in sorted(truth_ids(b)):
        want_days.setdefault(day_of(b, i), []).append(i)
    assert [d["date"] for d in p.days] == sorted(want_days)
    for d in p.days:
        ids = want_days[d["date"]]
        assert (d["rows"], d["first_id"], d["last_id"]) == (len(ids), ids[0], ids[-1])
        assert d["raw_lines"] == len(ids) and d["duplicates"] == 0 and d["ids_expected"] == len(ids)
        assert d["coverage"] == 1.0 and d["ok"]
        assert d["parts_rows"] == len(ids)
    # One deterministic report per product-day.
    for d in p.days:
        body = store.get(audit_key(EX, PID, d["date"])).data
        doc = json.loads(body)
        assert doc["audited_at"] == AT and doc["rows"] == d["rows"]
    again = run_audit(store)
    assert [store.get(k).data for k in again.reports] == [store.get(k).data for k in res.reports]


def test_a_clean_coinbase_store_audits_with_exit_0(tmp_path):
    with landed(tmp_path, exchange="coinbase") as (store, s, b, _):
        res = run_audit(store)
    assert res.exit_code == 0 and holes(res) == [], res.to_dict()
    assert sum(d["rows"] for p in res.products for d in p.days) == len(truth_ids(b))


# ------------------------------------------------------------------ each plant, classified

def test_a_hole_the_exchange_confirms_is_recorded_at_landing_and_classified_confirmed(tmp_path):
    first = book(EX).first_id
    missing = {first + 150, first + 151, first + 152}
    with landed(tmp_path, missing=missing) as (store, s, b, _):
        headers = [rawobject.read_header(store.get(k).data, k).doc for k in raw_keys(store)]
        assert [g for h in headers for g in h.get("gaps", [])] == [[first + 150, first + 152]]
        res = run_audit(store)
    assert holes(res) == [(first + 150, first + 152, au.CONFIRMED)]
    assert res.exit_code == 0, res.to_dict()
    (day,) = [d for d in res.products[0].days if d["holes"]]
    assert day["date"] == day_of(b, first + 149) and day["missing"][au.CONFIRMED] == 3


def test_ids_removed_from_raw_are_unexplained_and_fail_the_audit(tmp_path):
    with landed(tmp_path) as (store, s, b, _):
        gone = set(range(b.first_id + 230, b.first_id + 240))
        key = key_holding(store, b.first_id + 230)
        drop_from_raw(store, key, gone, s.id_of)
        Transformer(store).transform_object(key, rebuild=True)
        assert not gone & {int(r["trade_id"]) for r in curated_rows(store)}
        res = run_audit(store)
    assert holes(res) == [(b.first_id + 230, b.first_id + 239, au.UNEXPLAINED)]
    assert res.exit_code == au.EXIT_UNEXPLAINED and res.missing_trades == 10


def test_rows_removed_from_the_table_are_lost_our_bug(tmp_path):
    with landed(tmp_path) as (store, s, b, _):
        # The part holding most rows (the first part can be a sliver at a UTC day boundary, by the wall clock).
        part = max(parts(store), key=lambda k: pq.read_metadata(io.BytesIO(store.get(k).data)).num_rows)
        t = pq.read_table(io.BytesIO(store.get(part).data))
        ids = pc.cast(t["trade_id"], pa.int64())
        lo = pc.min(ids).as_py() + 5
        assert set(range(lo, lo + 4)) <= set(ids.to_pylist())  # the four rows cut are in this part
        cut = t.filter(pc.invert(pc.is_in(ids, value_set=pa.array(range(lo, lo + 4), pa.int64()))))
        store.put(part, write_parquet(cut))
        res = run_audit(store)
    assert holes(res) == [(lo, lo + 3, au.LOST)]
    assert res.exit_code == au.EXIT_LOST and res.missing_trades == 4


def test_a_copy_of_a_curated_part_under_another_name_is_a_duplicate(tmp_path):
    with landed(tmp_path) as (store, s, b, _):
        part = parts(store)[1]
        copy = part.rsplit("/", 1)[0] + "/copy-of-a-part.parquet"
        store.put(copy, store.get(part).data)
        res = run_audit(store)
    n = pq.read_metadata(io.BytesIO(store.get(part).data)).num_rows
    (day,) = [d for d in res.products[0].days if d["duplicates"]]
    assert day["duplicates"] == n and day["stray_parts"] == ["copy-of-a-part.parquet"] and not day["ok"]
    assert holes(res) == [] and res.exit_code == au.EXIT_UNEXPLAINED


def test_every_plant_at_once_is_found_and_classified(tmp_path):
    first = book(EX).first_id
    with landed(tmp_path, missing={first + 50}) as (store, s, b, _):
        key = key_holding(store, first + 420)
        drop_from_raw(store, key, {first + 420, first + 421}, s.id_of)
        Transformer(store).transform_object(key, rebuild=True)
        store.put(parts(store)[0].rsplit("/", 1)[0] + "/dup.parquet", store.get(parts(store)[0]).data)
        res = run_audit(store)
    assert holes(res) == [(first + 50, first + 50, au.CONFIRMED), (first + 420, first + 421, au.UNEXPLAINED)]
    assert res.exit_code == au.EXIT_UNEXPLAINED


# ------------------------------------------------------------------ repair

def test_repair_fills_a_repairable_hole_exactly_once_and_a_second_repair_is_a_no_op(tmp_path):
    first = book(EX).first_id
    with landed(tmp_path, missing={first + 10}) as (store, s, b, src):
        gone = set(range(first + 330, first + 345))
        key = key_holding(store, first + 330)
        drop_from_raw(store, key, gone, s.id_of)
        Transformer(store).transform_object(key, rebuild=True)
        res = run_audit(store, repair=True, source_for=lambda ex: src)
        # The landing-confirmed hole is asked once more too (a header can be wrong): still confirmed missing.
        assert [(r["from"], r["status"], r["trades"], r["confirmed_missing"]) for r in res.repairs] == [
            (first + 10, "landed", 0, 1), (first + 330, "landed", 15, 0)]
        assert res.exit_code == 0, res.to_dict()
        assert holes(res) == [(first + 10, first + 10, au.CONFIRMED)]  # the confirmed hole stays
        rows = curated_rows(store)
        got = sorted(int(r["trade_id"]) for r in rows)
        assert got == sorted(truth_ids(b)), "the table equals the truth: every id once"
        amended = {int(r["trade_id"]) for r in rows if r["raw_key"].endswith(".amend.jsonl.gz")}
        assert amended == gone
        before = sorted(o.key for o in store.list("raw/"))
        asked = len(s.requests)
        again = run_audit(store, repair=True, source_for=lambda ex: src)
        assert again.repairs == [] and again.exit_code == 0
        assert sorted(o.key for o in store.list("raw/")) == before and len(s.requests) == asked
    # The scheduled transform (not only the repair's own call) reads an amendment like any raw object.
    [amend] = [o.key for o in store.list("raw/") if o.key.endswith(f"{first + 344:020d}.amend.jsonl.gz")]
    store.delete(marker_key(amend))
    for p in parts(store):
        if p.endswith(amend.rsplit("/", 1)[-1].split(".")[0] + ".parquet"):
            store.delete(p)
    assert Transformer(store).pending() == [amend]
    r = Transformer(store).run()
    assert r.ok and r.objects == 1 and r.rows == 15 and not r.stray
    assert sorted(int(x["trade_id"]) for x in curated_rows(store)) == sorted(truth_ids(b))


def test_a_hole_the_exchange_now_confirms_is_recorded_by_the_repair_and_stays_confirmed(tmp_path):
    # Raw lost ids that, asked again, the exchange says it never printed (a later correction on its side):
    # the amendment records the confirmed gap and the hole becomes `confirmed`.
    with landed(tmp_path) as (store, s, b, src):
        gone = {b.first_id + 160, b.first_id + 161}
        key = key_holding(store, b.first_id + 160)
        drop_from_raw(store, key, gone, s.id_of)
        Transformer(store).transform_object(key, rebuild=True)
        b.missing = frozenset(gone)
        res = run_audit(store, repair=True, source_for=lambda ex: src)
        assert [r["status"] for r in res.repairs] == ["landed"] and res.repairs[0]["confirmed_missing"] == 2
        assert holes(res) == [(b.first_id + 160, b.first_id + 161, au.CONFIRMED)] and res.exit_code == 0
        again = run_audit(store, repair=True, source_for=lambda ex: src)
        assert again.repairs == []


def test_reports_give_each_products_audited_coverage(tmp_path):
    with landed(tmp_path) as (store, s, b, _):
        key = key_holding(store, b.first_id + 250)
        drop_from_raw(store, key, {b.first_id + 250}, s.id_of)
        Transformer(store).transform_object(key, rebuild=True)
        run_audit(store)
        cov = au.coverage(store)
    want = (len(truth_ids(b)) - 1) / len(truth_ids(b))
    assert cov[(EX, PID)]["coverage"] == pytest.approx(want, abs=1e-6) and cov[(EX, PID)]["missing"] == 1
    assert not cov[(EX, PID)]["ok"]


def test_an_untransformed_object_is_reported_not_transformed_not_lost(tmp_path):
    with landed(tmp_path) as (store, s, b, _):
        key = raw_keys(store)[-1]
        store.delete(marker_key(key))
        for p in parts(store):
            if p.endswith(key.rsplit("/", 1)[-1].split(".")[0] + ".parquet"):
                store.delete(p)
        res = run_audit(store)
    (h,) = res.products[0].holes
    assert h["class"] == au.NOT_TRANSFORMED and res.exit_code == 0


# ------------------------------------------------------------------ the CLI: what a user sees, and the exit code

def test_cli_audit_exit_codes_and_json(tmp_path, capsys):
    from schemahub.cli import main

    with landed(tmp_path) as (store, s, b, src):
        root = str(tmp_path / "store")
        assert main(["audit", "--storage", root]) == 0
        out = capsys.readouterr().out
        assert "all explained" in out and "0 unexplained" in out
        gone = {b.first_id + 300}
        key = key_holding(store, b.first_id + 300)
        drop_from_raw(store, key, gone, s.id_of)
        Transformer(store).transform_object(key, rebuild=True)
        assert main(["audit", "--storage", root, "--format", "json"]) == au.EXIT_UNEXPLAINED
        doc = json.loads(capsys.readouterr().out)
        assert doc["missing_trades"] == 1 and doc["products"][0]["holes"][0]["class"] == au.UNEXPLAINED
        assert main(["audit", "--storage", root, "--repair", "--base-url", f"binance={s.url}"]) == 0
        out = capsys.readouterr().out
        assert "landed (1 trades" in out and "all explained" in out


def test_stats_and_the_status_page_show_each_products_audited_coverage(tmp_path):
    from schemahub.api import Lake
    from schemahub.web.status import stats_payload

    with landed(tmp_path) as (store, s, b, _):
        root = str(tmp_path / "store")
        before = Lake(root).stats().to_pylist()
        assert [r["audited_coverage"] for r in before] == [None], "never audited: no coverage claimed"
        key = key_holding(store, b.first_id + 99)
        drop_from_raw(store, key, {b.first_id + 99, b.first_id + 98}, s.id_of)
        Transformer(store).transform_object(key, rebuild=True)
        run_audit(store)
        [row] = Lake(root).stats().to_pylist()
        n = len(truth_ids(b))
        assert row["audited_coverage"] == pytest.approx((n - 2) / n, abs=1e-6) and row["audited_missing"] == 2
        [p] = stats_payload(store, datetime.now(timezone.utc))["products"]
        assert p["audit"]["missing"] == 2 and p["audit"]["ok"] is False and p["audit"]["audited_at"] == AT


def test_ids_below_a_backfill_still_under_way_are_not_landed_yet(tmp_path):
    from dataclasses import replace

    from schemahub.landing.checkpoint import Checkpoints
    from schemahub.layout import checkpoint_key

    with landed(tmp_path) as (store, s, b, _):
        # A backfill walks up from the oldest trade to lo; it has reached C so far. What lies in (C, lo] is
        # not landed yet: plant it as a store where those objects and their parts do not exist yet.
        keys = raw_keys(store)
        heads = [rawobject.read_header(store.get(k).data, k) for k in keys]
        c, lo = heads[1].end, heads[3].end  # objects 2 and 3 are "not landed yet"
        for k in keys[2:4]:
            store.delete(k)
            store.delete(marker_key(k))
            for p in parts(store):
                if p.endswith(k.rsplit("/", 1)[-1].split(".")[0] + ".parquet"):
                    store.delete(p)
        cps = Checkpoints(store)
        cp = cps.load(EX, PID)
        store.delete(checkpoint_key(EX, PID))
        cps.create(replace(cp, lo=lo, backfill_target=heads[0].start, backfill_cursor=c, etag=""))
        res = run_audit(store)
    assert holes(res) == [(c + 1, lo, au.NOT_LANDED)] and res.exit_code == 0, res.to_dict()


def test_compacted_days_agree_with_their_parts_and_a_copied_part_after_compaction_is_a_duplicate(tmp_path):
    from datetime import date

    from schemahub.compact import compact

    with landed(tmp_path) as (store, s, b, _):
        compact(store, before=date(2100, 1, 1), min_parts=1)
        res = run_audit(store)
        assert res.exit_code == 0, res.to_dict()
        for d in res.products[0].days:
            assert d["compacted_rows"] == d["rows"] == d["parts_rows"] and d["compacted_agrees"] is True
        # A copy of a part after its day was compacted: readers take it beside the compacted copy (it is not in
        # the manifest), so its trades are read twice.
        part = parts(store)[0]
        n = pq.read_metadata(io.BytesIO(store.get(part).data)).num_rows
        store.put(part.rsplit("/", 1)[0] + "/copy.parquet", store.get(part).data)
        res = run_audit(store)
        (day,) = [d for d in res.products[0].days if not d["ok"]]
        assert day["stray_parts"] == ["copy.parquet"] and day["duplicates"] == n
        assert res.exit_code == au.EXIT_UNEXPLAINED
        # Compacted again, the copy is in the day's copy, its repeats dropped (one row per trade id) and counted
        # in the manifest: the readers see each trade once, and the audit still fails on the stray part.
        compact(store, before=date(2100, 1, 1), min_parts=1)
        res = run_audit(store)
    (day,) = [d for d in res.products[0].days if not d["ok"]]
    assert day["stray_parts"] == ["copy.parquet"] and day["duplicates"] == 0 and day["compaction_duplicates"] == n
    assert res.exit_code == au.EXIT_UNEXPLAINED


def test_archive_csv_objects_are_audited_through_the_archive_table(tmp_path):
    # The archive sample (recorded Binance rows) holds ids 1111468873..882 and 1111471896..905: two runs with a
    # hole between them that nothing confirms. With a header row (column names) that is not a trade.
    from schemahub.landing.checkpoint import Checkpoint, Checkpoints
    from tests.archive.test_archive_transform import put_csv, sample

    store = LocalStore(str(tmp_path / "store"))
    rows = sample("ms")
    key = put_csv(store, [b"id,price,qty,quote_qty,time,is_buyer_maker,is_best_match", *rows])
    Checkpoints(store).create(Checkpoint(EX, PID, 1111468872, 1111471905))
    assert Transformer(store).run().ok
    res = run_audit(store)
    assert holes(res) == [(1111468883, 1111471895, au.UNEXPLAINED)], res.to_dict()
    assert sum(d["raw_lines"] for d in res.products[0].days) == len(rows) == 20
    assert key.endswith("00000000001111468872.jsonl.gz")


class _Counting:
    """The store, recording which keys were read."""

    def __init__(self, store) -> None:
        self._store, self.got = store, []

    def get(self, key, *a, **kw):
        self.got.append(key)
        return self._store.get(key, *a, **kw)

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_an_audit_from_a_day_reads_those_days_alone_and_still_finds_their_holes(tmp_path):
    with landed(tmp_path, interval_us=900_000_000) as (store, s, b, _):  # 15 min: 600 trades over about 6 days
        days = sorted({day_of(b, i) for i in truth_ids(b)})
        assert len(days) >= 5
        on = {d: [i for i in sorted(truth_ids(b)) if day_of(b, i) == d] for d in days}
        full = [d for d in days if len(on[d]) >= 3]  # the first and last days may hold a trade or two
        old, new = on[full[0]][len(on[full[0]]) // 2], on[full[-1]][len(on[full[-1]]) // 2]  # inside their days
        start = days[days.index(full[-1]) - 1]
        assert days.index(full[0]) < days.index(start) - 1, "the old hole lies before the window and its edge day"
        for i in (old, new):
            key = key_holding(store, i)
            drop_from_raw(store, key, {i}, s.id_of)
            Transformer(store).transform_object(key, rebuild=True)
        counting = _Counting(store)
        res = pipeline.audit(counting, audited_at=AT, start=start)
        assert holes(res) == [(new, new, au.UNEXPLAINED)], "the window's hole, and not the older one"
        assert [d["date"] for d in res.products[0].days] == [d for d in days if d >= start]
        read_raw = {k for k in counting.got if k.startswith("raw/")}
        assert key_holding(store, old) not in read_raw and key_holding(store, new) in read_raw
        before = [d for d in days if d < start][:-1]  # the day before the window is read too, for its edge
        assert not any(f"date={d}/" in k for k in counting.got for d in before), "older days' files are not read"
        full = run_audit(store)
    assert holes(full) == [(old, old, au.UNEXPLAINED), (new, new, au.UNEXPLAINED)]
