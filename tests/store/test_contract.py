"""One contract for every ObjectStore adapter: local folder and S3 (moto server over HTTP)."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from schemahub.errors import NotFound, PreconditionFailed
from schemahub.store import open_store


def test_put_get_roundtrip_returns_matching_etag(store):
    etag = store.put("a/b/c.bin", b"\x00hello\xff")
    obj = store.get("a/b/c.bin")
    assert obj.data == b"\x00hello\xff"
    assert obj.etag == etag


def test_get_missing_raises_not_found(store):
    with pytest.raises(NotFound):
        store.get("nope/missing.json")
    assert not store.exists("nope/missing.json")


def test_create_only_put_refuses_existing_key_and_keeps_first_value(store):
    store.put("k.json", b"first", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put("k.json", b"second", if_none_match=True)
    assert store.get("k.json").data == b"first"


def test_compare_and_swap_needs_current_etag(store):
    e1 = store.put("cp.json", b"v1", if_none_match=True)
    e2 = store.put("cp.json", b"v2", if_match=e1)
    with pytest.raises(PreconditionFailed):
        store.put("cp.json", b"v3", if_match=e1)  # stale etag
    assert store.get("cp.json").data == b"v2"
    assert store.get("cp.json").etag == e2


def test_compare_and_swap_on_missing_key_fails(store):
    with pytest.raises(PreconditionFailed):
        store.put("never.json", b"x", if_match='"0123456789abcdef0123456789abcdef"')
    assert not store.exists("never.json")


def test_list_by_prefix_is_sorted_and_scoped(store):
    for key in ["raw/x/2.gz", "raw/x/1.gz", "raw/y/1.gz", "rawish/1.gz", "checkpoints/x.json"]:
        store.put(key, key.encode())
    assert [o.key for o in store.list("raw/x/")] == ["raw/x/1.gz", "raw/x/2.gz"]
    assert [o.key for o in store.list("raw/")] == ["raw/x/1.gz", "raw/x/2.gz", "raw/y/1.gz"]
    assert {o.key: o.size for o in store.list("raw")}["rawish/1.gz"] == len(b"rawish/1.gz")
    assert list(store.list("zzz/")) == []


def test_delete_removes_and_is_idempotent(store):
    store.put("d.txt", b"x")
    store.delete("d.txt")
    store.delete("d.txt")
    assert not store.exists("d.txt")


@pytest.mark.parametrize("bad", ["", "/abs", "a/../b", "a//b", "dir/", "a/.tmp-x", "x.lock"])
def test_invalid_keys_are_rejected(store, bad):
    with pytest.raises(ValueError):
        store.put(bad, b"x")


# --------------------------------------------------------- racing processes

def _race_create(uri: str, key: str, me: int, start, out) -> None:
    store = open_store(uri)
    start.wait()
    try:
        store.put(key, f"writer-{me}".encode(), if_none_match=True)
        out.put(me)
    except PreconditionFailed:
        out.put(-1)


def _race_increment(uri: str, key: str, n: int, start, out) -> None:
    store = open_store(uri)
    start.wait()
    done = conflicts = 0
    while done < n:
        obj = store.get(key)
        try:
            store.put(key, str(int(obj.data) + 1).encode(), if_match=obj.etag)
            done += 1
        except PreconditionFailed:
            conflicts += 1
    out.put(conflicts)


def _run(target, uri, args_list):
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(uri, *args, start, out)) for args in args_list]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results


@pytest.mark.xdist_group("race")
def test_racing_create_only_writers_exactly_one_wins(store, store_uri):
    results = _run(_race_create, store_uri, [("race/key", i) for i in range(6)])
    winners = [r for r in results if r >= 0]
    assert len(winners) == 1
    assert store.get("race/key").data == f"writer-{winners[0]}".encode()


@pytest.mark.xdist_group("race")
def test_racing_compare_and_swap_loses_no_update(store, store_uri):
    store.put("race/counter", b"0", if_none_match=True)
    procs, each = 4, 15
    conflicts = _run(_race_increment, store_uri, [("race/counter", each)] * procs)
    assert int(store.get("race/counter").data) == procs * each
    assert sum(conflicts) >= 0
