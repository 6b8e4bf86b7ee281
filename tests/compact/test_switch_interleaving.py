"""Readers never see a day twice or partly: a reader's listing (the local view's read_layout and Athena's plan
from Glue) is taken after every single write of the switch (compacted copy, manifest, partition move, a late
part, its partition move back, the re-compaction), with a late part injected after each step of a
compaction in turn. Rows are compared with the ground truth of the raw objects, never with the code's own
output. At rest, DuckDB and Athena's plan read the same files for every day."""

from __future__ import annotations

import json
from datetime import date

import pytest

from schemahub.compact import read_layout
from schemahub.layout import marker_key, raw_key
from schemahub.pipeline import compact_closed
from schemahub.query import connect
from schemahub.transform import Transformer
from tests.compact.conftest import athena_plan, trade_ids
from tests.transform.helpers import put_raw

DAY = "2026-11-20"
PART = f"exchange=coinbase/product_id=BTC-USD/date={DAY}"
OBJECTS = {0: range(1, 11), 10: range(11, 21), 20: range(21, 31)}  # raw start cursor -> trade ids
LATE = (30, range(31, 36))


def _line(i: int) -> bytes:
    return json.dumps({"time": f"{DAY}T10:{i // 60:02d}:{i % 60:02d}.5Z", "trade_id": i, "price": "100.5",
                       "size": "1", "side": "buy"}, separators=(",", ":")).encode()


def _put(store, start, ids):
    return put_raw(store, [_line(i) for i in ids], start=start, fetched=f"{DAY}T23:59:00Z")


class Probe:
    """After every write to the store or the catalog: both readers, checked against the truth."""

    def __init__(self, store, catalog, objects: dict) -> None:
        self.store, self.catalog, self.objects = store, catalog, objects
        self.steps: list[str] = []
        self.on_step = None  # called with the step's index during the phase under test
        self.checking = True
        self.floor = None  # set while a compaction's move to its copy is not re-checked yet
        self._wrap()

    def _wrap(self) -> None:
        store, cat = self.store, self.catalog
        for obj, names in ((store, ("put", "delete")), (cat, ("create", "update", "show_parts"))):
            for name in names:
                real = getattr(obj, name)

                def hooked(*a, _real=real, _name=name, **kw):
                    if _name == "update" and self.floor is None and any("/v-" in v for v in a[0].values()):
                        # A move to a copy is a blind write (Glue has no conditional UpdatePartition): from here
                        # until the compaction's re-check, Athena is only owed the objects done before it.
                        self.floor = self.truth()[0]
                    out = _real(*a, **kw)
                    what = a[0] if a and isinstance(a[0], str) else sorted(a[0].items()) if a else ""
                    self.step(f"{_name} {what}")
                    return out

                setattr(obj, name, hooked)

    def truth(self) -> tuple[set, set]:
        """(ids of objects whose marker exists: must be read; ids of objects with a part written: may be read)."""
        done, written = set(), set()
        keys = {o.key for o in self.store.list("transformed/")} | {o.key for o in self.store.list("curated/")}
        for start, ids in self.objects.items():
            if marker_key(raw_key("coinbase", "BTC-USD", start)) in keys:
                done |= set(ids)
            if f"curated/{PART}/{start:020d}.parquet" in keys:
                written |= set(ids)
        return done, written

    def step(self, what: str) -> None:
        self.steps.append(what)
        if not self.checking:
            return
        done, written = self.truth()
        local = read_layout(self.store).files.get(PART, [])
        athena = athena_plan(self.catalog, self.store).get(PART, [])
        for reader, keys in (("local view", local), ("athena", athena)):
            ids = trade_ids(self.store, keys)
            owed = self.floor if reader == "athena" and self.floor is not None else done
            assert len(ids) == len(set(ids)), f"after {what!r}: the {reader} reads a trade twice: {keys}"
            assert owed <= set(ids) <= written, (f"after {what!r}: the {reader} misses "
                                                 f"{sorted(done - set(ids))} or reads {sorted(set(ids) - written)}")
        if self.on_step is not None:
            hook, self.on_step = self.on_step, None
            hook(len(self.steps), what)
            self.on_step = hook


def _agree(store, catalog) -> None:
    """At rest: the files of every day are the same for DuckDB's view and Athena's plan, and so are the rows."""
    local = read_layout(store).files
    athena = athena_plan(catalog, store)
    assert {p: sorted(k) for p, k in local.items()} == {p: k for p, k in athena.items() if k}
    con = connect(store)
    for p, keys in athena.items():
        day = p.rsplit("=", 1)[1]
        got = sorted(int(r[0]) for r in con.execute("SELECT trade_id FROM trades WHERE date = ?", [date.fromisoformat(day)]).fetchall())
        assert got == sorted(trade_ids(store, keys)), p


def _scenario(lake, inject_at: int | None):
    """Three objects transformed, a compaction (the late object transformed right after its step
    `inject_at`), then every outstanding step run; returns the probe."""
    store, catalog = lake
    objects = dict(OBJECTS)
    objects[LATE[0]] = LATE[1]
    probe = Probe(store, catalog, objects)
    for start, ids in OBJECTS.items():
        _put(store, start, ids)
    transformer = Transformer(store, catalog=catalog)
    transformer.run()
    _agree(store, catalog)
    assert athena_plan(catalog, store)[PART] == [f"curated/{PART}/{s:020d}.parquet" for s in sorted(OBJECTS)]
    first = len(probe.steps)
    injected = []

    def late(n, what):
        if inject_at is not None and n - first == inject_at and not injected:
            injected.append(what)
            _put(store, *LATE)
            Transformer(store, catalog=catalog).run()

    probe.on_step = late
    compact_closed(store, catalog=catalog, before=date(2026, 12, 1))
    probe.on_step = None
    probe.floor = None  # the compaction returned: its re-check is done, Athena owes every finished object again
    probe.step("compaction returned")
    steps = len(probe.steps) - first - 1
    if inject_at is not None and not injected:
        return probe, steps, False
    if inject_at is None:
        _agree(store, catalog)
        _put(store, *LATE)
        Transformer(store, catalog=catalog).run()
    # The late part is read by both, at once: the day is its parts again.
    _agree(store, catalog)
    assert sorted(trade_ids(store, athena_plan(catalog, store)[PART])) == list(range(1, 36))
    compact_closed(store, catalog=catalog, before=date(2026, 12, 1))  # the next run compacts it again
    probe.floor = None
    probe.step("second compaction returned")
    _agree(store, catalog)
    [copy] = athena_plan(catalog, store)[PART]
    assert "/v-" in copy and sorted(trade_ids(store, [copy])) == list(range(1, 36))
    return probe, steps, True


def test_the_switch_step_by_step_with_a_late_part_after_it(lake):
    probe, steps, _ = _scenario(lake, None)
    kinds = [s.split(" ", 1)[0] for s in probe.steps]
    assert {"put", "update", "show_parts"} <= set(kinds) and "delete" in kinds  # the re-compaction replaced a manifest
    assert steps >= 3  # copy, manifest, partition move


@pytest.mark.parametrize("inject_at", range(1, 6))
def test_a_late_part_landing_after_each_step_of_a_compaction(lake, inject_at):
    """The late object is transformed (part + partition back to parts) right after compaction step inject_at:
    after the copy, after the manifest, after the partition moved (the re-check sends it back), ..."""
    probe, steps, injected = _scenario(lake, inject_at)
    if not injected:
        assert inject_at > steps  # fewer steps than this one: nothing to inject into
