"""Objects transformed as they land (`schemahub run`, and bench/bench_archive.py), as S3 events do on AWS.

The lander tells `on_landed` of each object it wrote, with the object's text where it has it (an archive
slice). Ground truth: the store (what was written, read back and decompressed) and the simulator's book
(which trades exist). A transform that fails as its object lands is left to the pass after ingest, which
does it once; the run's counts hold every object once.
"""

from __future__ import annotations

import gzip
import json
import threading
from datetime import timedelta

import pytest

from schemahub import cli
from schemahub.clock import FakeClock
from schemahub.errors import SchemahubError
from schemahub.landing import IngestOptions, Lander
from schemahub.pipeline import TransformAsLanded
from schemahub.query import connect
from schemahub.store.local import LocalStore
from schemahub.transform import Transformer
from tests.archive.landing_sim import NOW, PRODUCT, check_exactly_once, expected_ids, make_book, make_sim, make_source, utc


@pytest.fixture
def world():
    clock = FakeClock(NOW.timestamp())
    book = make_book()
    sim = make_sim(book, clock)
    url = sim.start()
    yield book, sim, url, clock
    sim.stop()


def _since():
    return utc(NOW.date() - timedelta(days=4))


def _table_ids(store) -> list[int]:
    return [int(r[0]) for r in connect(store).execute("SELECT trade_id FROM trades ORDER BY trade_id::BIGINT").fetchall()]


def test_each_landed_object_is_told_once_with_exactly_the_text_the_store_holds(tmp_path, world):
    book, sim, url, clock = world
    store = LocalStore(str(tmp_path))
    told: list[tuple[str, bytes | None]] = []
    res = Lander(store, make_source(url, clock), clock=clock, on_landed=lambda k, t: told.append((k, t))).run(
        PRODUCT, IngestOptions(since=_since()))
    assert res.status == "ok" and res.archive_objects > 1 and res.objects > res.archive_objects  # REST's too
    keys = sorted(o.key for o in store.list("raw/"))
    assert sorted(k for k, _ in told) == keys and len(told) == len(keys)  # every object once, nothing else
    for key, text in told:
        stored = gzip.decompress(store.get(key).data)
        header = json.loads(stored.partition(b"\n")[0])
        if header.get("lines") == "csv":
            assert text == stored, key  # byte for byte what the store holds
        else:
            assert text is None, key  # REST pages: the transform reads the object back


def test_objects_transformed_as_they_land_give_the_simulators_table_and_leave_nothing_pending(tmp_path, world):
    book, sim, url, clock = world
    store = LocalStore(str(tmp_path))
    names: set[str] = set()
    tr = Transformer(store)
    inner = tr.transform_object

    def spy(key, **kw):
        names.add(threading.current_thread().name.split("_")[0])
        return inner(key, **kw)

    tr.transform_object = spy
    early = TransformAsLanded(tr, workers=2)
    res = Lander(store, make_source(url, clock), clock=clock, on_landed=early).run(PRODUCT, IngestOptions(since=_since()))
    done = early.close()
    assert names == {"transform"}  # on the pool, while landing went on
    assert done.objects == res.objects and done.ok
    assert Transformer(store).pending() == []
    figures = check_exactly_once(store, sim, book, *_chain_range(store))
    assert figures
    lo, hi = _chain_range(store)
    assert _table_ids(store) == expected_ids(book, lo, hi)
    assert done.rows == len(expected_ids(book, lo, hi))


def _chain_range(store) -> tuple[int, int]:
    from schemahub.landing import Checkpoints

    cp = Checkpoints(store).load("binance", PRODUCT.product_id)
    return cp.lo, cp.hi


def test_a_transform_that_fails_as_its_object_lands_is_done_once_by_the_pass_after_ingest(tmp_path, world):
    book, sim, url, clock = world
    store = LocalStore(str(tmp_path))
    tr = Transformer(store)
    inner, failed = tr.transform_object, []

    def flaky(key, **kw):
        if not failed:
            failed.append(key)
            raise SchemahubError(f"{key}: a passing fault")
        return inner(key, **kw)

    tr.transform_object = flaky
    early = TransformAsLanded(tr, workers=1)
    res = Lander(store, make_source(url, clock), clock=clock, on_landed=early).run(PRODUCT, IngestOptions(since=_since()))
    done = early.close()
    assert done.objects == res.objects - 1
    assert Transformer(store).pending() == failed
    rest = Transformer(store).run()
    assert rest.objects == 1 and rest.ok
    done.merge(rest)
    lo, hi = _chain_range(store)
    assert done.objects == res.objects and done.rows == len(expected_ids(book, lo, hi))
    assert _table_ids(store) == expected_ids(book, lo, hi)  # once each: the retried object wrote its rows once


def test_schemahub_run_transforms_as_it_lands_and_reports_every_object_once(tmp_path, world, monkeypatch, capsys):
    book, sim, url, clock = world
    from tests.ingest.test_chaos import _mappings

    mappings = _mappings(tmp_path, page_size=200, exchanges=["binance"], products={"binance": [PRODUCT.product_id]})
    names: list[str] = []
    inner = Transformer.transform_object

    def spy(self, key, **kw):
        names.append(threading.current_thread().name.split("_")[0])
        return inner(self, key, **kw)

    monkeypatch.setattr(Transformer, "transform_object", spy)
    monkeypatch.setenv("SCHEMAHUB_BINANCE_BASE_URL", url)
    monkeypatch.setenv("SCHEMAHUB_BINANCE_RATE_LIMIT", "1000")
    monkeypatch.setenv("SCHEMAHUB_MAPPINGS", str(mappings))
    store_dir = tmp_path / "data"
    # The simulator's clock stands at NOW; run's wall clock is later, so every archive day is published and
    # only the head is REST's.
    code = cli.main(["run", "--storage", str(store_dir), "--since", _since().isoformat()])
    out = capsys.readouterr().out
    store = LocalStore(str(store_dir))
    raw = sum(1 for _ in store.list("raw/"))
    assert code == 0, out
    assert f"transformed {raw} raw object(s)" in out, out
    assert "transform" in names and len(names) == raw  # on the pool as they landed, each once
    lo, hi = _chain_range(store)
    assert _table_ids(store) == expected_ids(book, lo, hi)


def test_a_landing_faster_than_its_transforms_holds_at_most_max_texts_texts():
    # A year's backfill lands ~16 MB slices faster than one worker transforms them: past max_texts, objects are
    # queued by key alone (and read back from the store), so memory stays bounded.
    release, calls = threading.Event(), []

    class Store:
        def exists(self, key):
            return False

    class Slow:
        store = Store()

        def transform_object(self, key, text=None):
            release.wait(10)
            calls.append((key, text is not None))

    early = TransformAsLanded(Slow(), workers=1, max_texts=2)
    for k in range(10):
        early(f"k{k}", b"x" * 1000)
    release.set()
    early.close()
    assert [k for k, _ in calls] == [f"k{k}" for k in range(10)]
    assert [k for k, held in calls if held] == ["k0", "k1"]


def test_files_written_as_objects_land_are_the_bytes_a_later_rebuild_writes(tmp_path, world):
    # The transform must write byte-identical files on a re-transform: an early transform (from the lander's
    # text, on a pool, beside other transforms) and a rebuild that reads each object back give the same files.
    book, sim, url, clock = world
    store = LocalStore(str(tmp_path))
    early = TransformAsLanded(Transformer(store), workers=2)
    Lander(store, make_source(url, clock), clock=clock, on_landed=early).run(PRODUCT, IngestOptions(since=_since()))
    assert early.close().ok
    first = {o.key: store.get(o.key).data for o in store.list("curated/")}
    assert first
    again = Transformer(store).run(rebuild=True)
    assert again.ok and not any(again.by_product[k]["quarantined"] for k in again.by_product)
    assert {o.key: store.get(o.key).data for o in store.list("curated/")} == first
