"""Damaged store, landing side: invalid and inconsistent checkpoints, a corrupt object at key(hi), a full disk,
leftover temporary files; on the local folder and on S3 through moto's server (the `store` fixture).

Each case checks what a careful operator expects: the product fails alone with one line naming the key and
what to do, nothing is overwritten or lost, and `schemahub repair-checkpoint` gets it going again exactly once.
Ground truth is the scripted tape (tests/ingest/scripted.py), never the lander's counters.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
from collections.abc import Iterator

import pytest

from schemahub import rawobject
from schemahub.cli import main as cli_main
from schemahub.errors import ChainBroken, DamagedObject, InvalidCheckpoint
from schemahub.ingest import ingest
from schemahub.landing import Checkpoints, IngestOptions, Lander
from schemahub.landing.repair import repair_checkpoint
from schemahub.layout import checkpoint_key, raw_key
from schemahub.sources.base import Product
from schemahub.store.base import ObjectInfo, ObjectStore, StoredObject
from tests.ingest.scripted import P, FakeClock, ScriptedSource, chain, landed_ids, since

ETH = Product("ETH-USD", "ETH-USD", "ETH", "USD")
CP = checkpoint_key("coinbase", "BTC-USD")
PRESENT = list(range(1, 1001))


def _raw_write(store, key: str, data: bytes) -> None:
    """Write bytes at any key, bypassing the adapter's checks, as a crash, a tool or a human would."""
    if store.local_path(CP) is not None:
        path = os.path.join(store.root, *key.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    else:
        store.client.put_object(Bucket=store.bucket, Key=store.prefix + key, Body=data)


def _landed(store, upto: int = 1000, page: int = 100, ppo: int = 2) -> Lander:
    """BTC-USD landed over (0, upto] in objects of ppo pages; returns a lander whose source serves (0, 1000]."""
    Lander(store, ScriptedSource(PRESENT, head=upto, page_size=page, pages_per_object=ppo)).run(P, IngestOptions(since=since(0)))
    return Lander(store, ScriptedSource(PRESENT, head=1000, page_size=page, pages_per_object=ppo), clock=FakeClock())


def _both(store, lander: Lander) -> dict[str, object]:
    """One ingest of BTC-USD and ETH-USD, by product id."""
    if Checkpoints(store).load("coinbase", "ETH-USD") is None:
        Lander(store, ScriptedSource(PRESENT, head=1000)).run(ETH, IngestOptions(since=since(0)))
    return {r.product_id: r for r in ingest(store, lander.source, [P, ETH], IngestOptions(), workers=2)}


def _exactly_once(store, upto: int = 1000) -> None:
    ids = landed_ids(store)
    assert len(ids) == len(set(ids)), f"{len(ids)} rows for {len(set(ids))} ids"
    assert sorted(ids) == PRESENT[:upto]
    ch = chain(store)
    for (_, end, _), (start, _, _) in zip(ch, ch[1:]):
        assert start == end, ch


def _put_cp(store, doc) -> None:
    store.put(CP, doc if isinstance(doc, bytes) else json.dumps(doc).encode())


def _cp_doc(**kw) -> dict:
    doc = {"exchange": "coinbase", "product_id": "BTC-USD", "lo": "0", "hi": "400", "backfill": None}
    doc.update(kw)
    return doc


# ------------------------------------------------------------------ invalid checkpoints

INVALID = {
    "not json": b'{"exchange": "coinbase", "lo": "0", "hi": "4',
    "not an object": b'["coinbase", 0, 400]',
    "hi below lo": _cp_doc(lo="400", hi="200"),
    "lo not a number": _cp_doc(lo="zero"),
    "negative hi": _cp_doc(hi="-5"),
    "missing hi": {"exchange": "coinbase", "product_id": "BTC-USD", "lo": "0"},
    "another product": _cp_doc(product_id="ETH-USD"),
    "backfill above lo": _cp_doc(backfill={"target": "500", "cursor": "600"}),
    "empty file": b"",
    "binary garbage": gzip.compress(b"\x00\xff" * 50),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_an_invalid_checkpoint_fails_its_product_alone_naming_the_key(store, case):
    # GIVEN BTC-USD landed up to 400, then its checkpoint damaged
    lander = _landed(store, upto=400)
    before = chain(store)
    _put_cp(store, INVALID[case])
    # WHEN both products are ingested
    res = _both(store, lander)
    # THEN BTC-USD fails with one line naming the checkpoint and the repair; ETH-USD lands; nothing is written
    btc = res["BTC-USD"]
    assert btc.status == "failed" and CP in btc.message and "repair-checkpoint" in btc.message, btc.message
    assert "\n" not in btc.message
    assert res["ETH-USD"].status == "ok", res["ETH-USD"].message
    assert chain(store) == before
    with pytest.raises(InvalidCheckpoint):
        Checkpoints(store).load("coinbase", "BTC-USD")


def test_a_checkpoint_restored_to_a_hi_inside_an_object_is_refused_then_repaired(store):
    """#9: a checkpoint restored to a hi that is not an object boundary was trusted (45,000 rows for 25,000 ids)."""
    lander = _landed(store, upto=600)  # objects (0,200], (200,400], (400,600]
    _put_cp(store, _cp_doc(hi="300"))  # hand-restored: 300 is inside (200, 400]
    res = lander.run(P, IngestOptions())
    assert res.status == "failed" and "not an object boundary" in res.message and CP in res.message, res.message
    assert landed_ids(store) == PRESENT[:600]
    # The documented repair: dry run first (writes nothing), then for real; then ingest goes on exactly once.
    dry = repair_checkpoint(store, "coinbase", "BTC-USD", dry_run=True)
    assert dry.action == "write" and (dry.after.lo, dry.after.hi) == (0, 600)
    assert json.loads(store.get(CP).data)["hi"] == "300"
    done = repair_checkpoint(store, "coinbase", "BTC-USD")
    assert done.action == "write" and Checkpoints(store).load("coinbase", "BTC-USD").hi == 600
    assert lander.run(P, IngestOptions()).status == "ok"
    _exactly_once(store)


def test_a_checkpoint_whose_last_disagrees_with_its_hi_is_refused(store):
    lander = _landed(store, upto=600)
    _put_cp(store, _cp_doc(hi="500", last="400"))  # the object at key(400) ends at 600
    res = lander.run(P, IngestOptions())
    assert res.status == "failed" and "not an object boundary" in res.message, res.message
    assert landed_ids(store) == PRESENT[:600]


def test_a_checkpoint_whose_lo_is_not_the_chain_start_is_refused(store):
    # lo raised to a later boundary: a backfill would then land (target, lo] again over the first objects.
    lander = _landed(store, upto=600)
    _put_cp(store, _cp_doc(lo="200", hi="600", last="400"))
    res = lander.run(P, IngestOptions(since=since(0)))
    assert res.status == "failed" and "not the start of the raw chain" in res.message, res.message
    assert landed_ids(store) == PRESENT[:600]


def test_a_checkpoint_claiming_trades_with_no_raw_object_is_refused(store):
    lander = _landed(store, upto=0)
    _put_cp(store, _cp_doc(hi="400"))
    res = lander.run(P, IngestOptions())
    assert res.status == "failed" and "no raw object" in res.message, res.message
    assert landed_ids(store) == []


def test_an_older_valid_checkpoint_restored_from_a_backup_is_followed_exactly_once(store):
    lander = _landed(store, upto=400)
    backup = store.get(CP).data
    lander.run(P, IngestOptions())  # up to 1000
    _put_cp(store, backup)
    res = lander.run(P, IngestOptions())
    assert res.status == "ok" and res.adopted >= 3 and res.trades == 0, res
    _exactly_once(store)


def test_repair_rebuilds_a_missing_checkpoint_and_the_missing_error_says_how(store):
    lander = _landed(store, upto=600)
    store.delete(CP)
    res = lander.run(P, IngestOptions())
    assert res.status == "failed" and "repair-checkpoint --exchange coinbase --product BTC-USD" in res.message
    assert repair_checkpoint(store, "coinbase", "BTC-USD").action == "write"
    assert lander.run(P, IngestOptions()).status == "ok"
    _exactly_once(store)


def test_repair_reads_two_runs_of_objects_as_a_backfill_in_progress(store):
    lander = Lander(store, ScriptedSource(PRESENT, head=1000, pages_per_object=2), clock=FakeClock())
    lander.run(P, IngestOptions(since=since(600)))  # (600, 1000]
    src = lander.source
    src.hooks[src.calls + 6] = lambda: setattr(src, "offline", True)  # the backfill's third object never comes
    assert lander.run(P, IngestOptions(since=since(0))).status == "failed"
    src.offline = False
    cp = Checkpoints(store).load("coinbase", "BTC-USD")
    assert cp.backfill_target == 0 and 0 < cp.backfill_cursor < 600
    _put_cp(store, b"lost")
    done = repair_checkpoint(store, "coinbase", "BTC-USD")
    assert (done.after.lo, done.after.hi, done.after.backfill_target, done.after.backfill_cursor) == \
        (600, 1000, 0, cp.backfill_cursor)
    while Checkpoints(store).load("coinbase", "BTC-USD").backfill_target is not None:
        assert lander.run(P, IngestOptions()).status == "ok"
    _exactly_once(store)


def test_repair_refuses_an_overlapping_chain_and_names_both_objects(store):
    _landed(store, upto=400)
    extra = raw_key("coinbase", "BTC-USD", 100)  # (100, 300] over (0,200] and (200,400]
    header = rawobject.make_header(exchange="coinbase", product_id="BTC-USD", symbol="BTC-USD", start=100, end=300,
                                   count=0, min_id=None, max_id=None, fetched_at="2026-11-29T00:00:00Z", requests=[])
    store.put(extra, rawobject.encode(header, []))
    before = store.get(CP).data
    with pytest.raises(ChainBroken, match=r"00000000000000000100\.jsonl\.gz.*overlapping"):
        repair_checkpoint(store, "coinbase", "BTC-USD")
    assert store.get(CP).data == before


def test_repair_checkpoint_command_dry_run_then_write(store, store_uri, capsys):
    lander = _landed(store, upto=400)
    _put_cp(store, b"{")
    assert cli_main(["repair-checkpoint", "--storage", store_uri, "--exchange", "coinbase", "--product", "BTC-USD",
                     "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would write lo 0, hi 400" in out and store.get(CP).data == b"{"
    assert cli_main(["repair-checkpoint", "--storage", store_uri, "--exchange", "coinbase", "--product", "BTC-USD"]) == 0
    assert "wrote lo 0, hi 400" in capsys.readouterr().out
    assert lander.run(P, IngestOptions()).status == "ok"
    _exactly_once(store)


# ------------------------------------------------------------------ a corrupt object at key(hi)

def _header_claiming(start: int, end: int) -> bytes:
    h = rawobject.make_header(exchange="coinbase", product_id="BTC-USD", symbol="BTC-USD", start=start, end=end,
                              count=0, min_id=None, max_id=None, fetched_at="2026-11-29T00:00:00Z", requests=[])
    return rawobject.encode(h, [])


CORRUPT = {
    "garbage": b"this is not gzip at all",
    "truncated gzip": rawobject.encode({"format": "schemahub.raw/1"}, [b"{}"] * 50)[:20],
    "no header": gzip.compress(b"not json\n"),
    "empty": b"",
    "header of another start": _header_claiming(300, 500),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_a_corrupt_object_at_key_hi_fails_its_product_alone_and_is_never_overwritten(store, case):
    # GIVEN BTC-USD landed up to 400, and a damaged object where its next object would land
    lander = _landed(store, upto=400)
    key = raw_key("coinbase", "BTC-USD", 400)
    _raw_write(store, key, CORRUPT[case])
    # WHEN both products are ingested
    res = _both(store, lander)
    # THEN BTC-USD fails naming the object and what to do; ETH-USD lands; the object is untouched
    btc = res["BTC-USD"]
    assert btc.status == "failed" and key in btc.message and "never overwrites" in btc.message, btc.message
    assert "move it out of raw/" in btc.message
    assert res["ETH-USD"].status == "ok"
    assert store.get(key).data == CORRUPT[case]
    assert Checkpoints(store).load("coinbase", "BTC-USD").hi == 400
    # AND once the operator moves it aside, the next run lands the rest exactly once
    store.delete(key)
    assert lander.run(P, IngestOptions()).status == "ok"
    _exactly_once(store)


def test_a_damaged_object_at_the_checkpoints_end_is_reported_by_key(store):
    lander = _landed(store, upto=400)
    last = raw_key("coinbase", "BTC-USD", 200)
    _raw_write(store, last, b"\x1f\x8b\x08\x00garbage")
    res = lander.run(P, IngestOptions())
    assert res.status == "failed" and last in res.message and "restore it from a backup" in res.message, res.message
    with pytest.raises(DamagedObject):
        rawobject.read_header(store.get(last).data, last)


# ------------------------------------------------------------------ a full disk, other per-product errors

class FullDisk(ObjectStore):
    """Delegates to a store, but puts under `prefix` fail with ENOSPC after `ok` successful ones."""

    def __init__(self, inner: ObjectStore, prefix: str, ok: int) -> None:
        self.inner, self.prefix, self.ok = inner, prefix, ok
        self.uri = inner.uri
        self.failed = 0

    def get(self, key: str) -> StoredObject:
        return self.inner.get(key)

    def put(self, key: str, data: bytes, **kw) -> str:
        if key.startswith(self.prefix):
            if self.ok <= 0:
                self.failed += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), key)
            self.ok -= 1
        return self.inner.put(key, data, **kw)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def local_path(self, key: str) -> str | None:
        return self.inner.local_path(key)


@pytest.mark.parametrize("where,ok", [("raw/coinbase/BTC-USD/", 2), (CP, 1)])
def test_a_full_disk_fails_that_product_alone_and_the_next_run_lands_exactly_once(store, where, ok):
    # GIVEN the disk fills while BTC-USD lands (on its third raw object, or on a checkpoint write)
    lander = _landed(store, upto=0)
    full = FullDisk(store, where, ok)
    src = ScriptedSource(PRESENT, head=1000, pages_per_object=2)
    Lander(store, ScriptedSource(PRESENT, head=1000)).run(ETH, IngestOptions(since=since(0)))
    res = {r.product_id: r for r in ingest(full, src, [P, ETH], IngestOptions(), workers=2)}
    # THEN BTC-USD fails with the OS's words; ETH-USD is not held up
    assert full.failed == 1
    assert res["BTC-USD"].status == "failed" and "No space left on device" in res["BTC-USD"].message
    assert res["ETH-USD"].status == "ok"
    # AND no half state: the checkpoint is valid, and a later run (disk freed) lands the rest exactly once
    assert lander.run(P, IngestOptions()).status == "ok"
    _exactly_once(store)
    _no_tmp(store)


def _no_tmp(store) -> None:
    if store.local_path(CP) is None:
        return
    left = [os.path.join(d, n) for d, _, names in os.walk(os.path.join(store.root, "raw")) for n in names
            if n.startswith(".tmp-")]
    assert not left, left


class Buggy(ScriptedSource):
    def fetch(self, symbol, cursor, **kw):
        if symbol == "BTC-USD":
            raise ValueError("invalid literal for int() with base 10: 'x'")
        return super().fetch(symbol, cursor, **kw)


def test_a_value_error_fails_its_product_alone_and_the_run_exits_non_zero(store):
    src = Buggy(PRESENT, head=1000)
    res = {r.product_id: r for r in ingest(store, src, [P, ETH], IngestOptions(since=since(0)), workers=2)}
    assert res["BTC-USD"].status == "failed" and "ValueError" in res["BTC-USD"].message
    assert res["ETH-USD"].status == "ok" and res["ETH-USD"].trades == 1000


# ------------------------------------------------------------------ leftover temporary files, stray keys

def test_leftover_temporary_files_and_stray_keys_under_raw_are_ignored(store):
    # GIVEN what a crash or a full disk leaves behind, before the first run and mid-chain
    prefix = "raw/coinbase/BTC-USD/"
    for name in (".tmp-0123456789abcdef", "00000000000000000200.jsonl.gz.tmp", "README.txt"):
        _raw_write(store, prefix + name, b"half-written \x00")
    _raw_write(store, "checkpoints/coinbase/.tmp-feedface", b"{")
    # WHEN the product is landed in two runs
    lander = _landed(store, upto=500)
    assert lander.run(P, IngestOptions()).status == "ok"
    # THEN every trade lands exactly once, the leftovers are untouched, and repair ignores them too
    _exactly_once(store)
    repaired = repair_checkpoint(store, "coinbase", "BTC-USD", dry_run=True)
    assert repaired.action == "unchanged" and (repaired.after.lo, repaired.after.hi) == (0, 1000)


# ------------------------------------------------------------------ leases and bans read back

@pytest.mark.parametrize("data", [b"{", b"[]", b'{"owner": "x", "expires_at": "soon"}', b'{"expires_at": NaN}', b""])
def test_an_unreadable_lease_is_taken_over_not_a_product_stopped_forever(store, data):
    # The lease only saves duplicate work; a torn lease file must not fail the product on every run.
    from schemahub.layout import lease_key

    _raw_write(store, lease_key("coinbase", "BTC-USD"), data)
    res = Lander(store, ScriptedSource(PRESENT, head=1000)).run(P, IngestOptions(since=since(0)))
    assert res.status == "ok", res.message
    _exactly_once(store)


@pytest.mark.parametrize("data", [b"{", b'{"until": "tomorrow"}', b'{"until": 1e300, "until_iso": "5195-01-01"}', b"[1]"])
def test_an_unreadable_or_absurd_ban_note_does_not_block_the_exchange_forever(store, data):
    from schemahub.layout import ban_key

    _raw_write(store, ban_key("coinbase"), data)
    res = ingest(store, ScriptedSource(PRESENT, head=1000), [P], IngestOptions(since=since(0)))
    assert [r.status for r in res] == ["ok"], [r.message for r in res]


def test_a_recorded_ban_lasts_at_most_three_days_and_nan_is_not_zero(store):
    from schemahub.errors import ExchangeBanned
    from schemahub.landing import active_ban, record_ban
    from schemahub.layout import ban_key

    clock = FakeClock()
    record_ban(store, "binance", ExchangeBanned("418", retry_after_s=1e20), clock)
    assert json.loads(store.get(ban_key("binance")).data)["until"] == clock.time() + 3 * 86400
    record_ban(store, "binance", ExchangeBanned("418", retry_after_s=float("nan")), clock)
    clock.advance(60)
    assert active_ban(store, "binance", clock) is not None  # NaN is not a 0-second ban
