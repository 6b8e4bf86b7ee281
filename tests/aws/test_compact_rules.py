"""The daily Compact Lambda and the transform's Glue calls under AWS's rules: each function from its asset and
layers, under its own role (Glue partition calls authorized on the catalog, database and table ARNs), against
moto's S3 and Glue. A late part after compaction is visible to Athena at once; the next run compacts again."""

from __future__ import annotations

import json

import pytest

from tests.aws.test_rules import s3_notification, sqs_event
from tests.transform.helpers import put_raw

pytestmark = pytest.mark.xdist_group("aws")

DAY = "2026-11-20"  # closed: before the sandbox's today
PART = f"exchange=coinbase/product_id=LTC-USD/date={DAY}"


def _line(i: int) -> bytes:
    return json.dumps({"time": f"{DAY}T10:{i // 60:02d}:{i % 60:02d}.5Z", "trade_id": i, "price": "80.5",
                       "size": "1", "side": "buy"}, separators=(",", ":")).encode()


def _transform(world, key: str):
    inv = world.sandbox("handlers.transform.handler").invoke(sqs_event([s3_notification(world.bucket, f"schemahub/{key}")]))
    assert not inv.denied(), inv.denied()
    assert inv.error is None and inv.result == {"batchItemFailures": []}, (inv.error, inv.result, inv.stdout[-5:])
    return inv


def _files_under(world, location: str) -> list[str]:
    """What Athena opens for one partition: every object under its location (names starting _ or . skipped)."""
    root = f"s3://{world.bucket}/"
    assert location.startswith(root), location
    return [o.key for o in world.store().list(location[len(root) + len("schemahub/"):])
            if not o.key.rsplit("/", 1)[-1].startswith(("_", "."))]


def test_transform_registers_compact_moves_and_a_late_part_moves_back_under_each_role(world):
    store = world.store()
    parts = f"s3://{world.bucket}/schemahub/curated/{PART}/"
    for start in (0, 10):
        inv = _transform(world, put_raw(store, [_line(i) for i in range(start + 1, start + 11)], start=start,
                                        product="LTC-USD", fetched=f"{DAY}T23:59:00Z"))
    assert {c["action"] for c in inv.calls} >= {"glue:CreatePartition", "glue:GetPartition"}
    assert world.partitions()[PART] == parts  # registered at the parts folder by the transform

    compact = world.sandbox("handlers.compact.handler")
    run = compact.invoke({})
    assert not run.denied(), run.denied()
    assert run.error is None, run.error
    assert run.result["partitions"] >= 1 and run.result["pending"] == 0
    loc = world.partitions()[PART]
    assert "/compacted/" in loc and loc.rstrip("/").rsplit("/", 1)[-1].startswith("v-"), loc
    [copy] = _files_under(world, loc)  # the location holds exactly the one compacted file
    assert copy.endswith(".parquet")
    assert {c["action"] for c in run.calls} >= {"glue:GetPartitions", "glue:BatchUpdatePartition", "s3:PutObject"}

    _transform(world, put_raw(store, [_line(i) for i in range(21, 26)], start=20, product="LTC-USD",
                              fetched=f"{DAY}T23:59:30Z"))  # late: after the day was compacted
    assert world.partitions()[PART] == parts  # visible to Athena at once: read as all its parts
    assert len(_files_under(world, parts)) == 3

    again = compact.invoke({})
    assert again.error is None and not again.denied(), (again.error, again.denied())
    loc2 = world.partitions()[PART]
    assert "/compacted/" in loc2 and loc2 != loc and len(_files_under(world, loc2)) == 1
    import pyarrow.parquet as pq
    import io

    [key] = _files_under(world, loc2)
    table = pq.read_table(io.BytesIO(store.get(key).data))
    assert sorted(int(t) for t in table["trade_id"].to_pylist()) == list(range(1, 26))


def test_compact_role_holds_only_what_it_uses(world):
    from tests.aws.iam import allowed, decide_all, glue_request

    dep = world.dep
    stmts = dep.role_statements(dep.role_of(dep.function_id("handlers.compact.handler")))
    b = f"arn:aws:s3:::{dep.bucket}/schemahub"
    assert allowed(stmts, "s3:DeleteObject", f"{b}/compacted/{PART}/manifest.json")
    for key in (f"compacted/{PART}/v-0123456789abcdef/compact-0123456789abcdef.parquet", f"curated/{PART}/x.parquet",
                "raw/coinbase/LTC-USD/x", "transformed/x"):
        assert not allowed(stmts, "s3:DeleteObject", f"{b}/{key}"), key
    assert not allowed(stmts, "s3:PutObject", f"{b}/curated/{PART}/x.parquet")
    db, table = world.glue_table
    ok = glue_request("BatchUpdatePartition", {"DatabaseName": db, "TableName": table}, region=dep.region,
                      account=dep.account)
    assert decide_all(stmts, ok.action, ok.resources).allowed
    for op in ("DeletePartition", "BatchDeletePartition", "CreateTable"):
        params = {"DatabaseName": db, "TableName": table, "TableInput": {"Name": table}}
        r = glue_request(op, params, region=dep.region, account=dep.account)
        assert not decide_all(stmts, r.action, r.resources).allowed, op
    other = glue_request("BatchUpdatePartition", {"DatabaseName": db, "TableName": "other"}, region=dep.region,
                         account=dep.account)
    assert not decide_all(stmts, other.action, other.resources).allowed


def test_a_damaged_compacted_copy_is_written_again_under_the_compact_role(world):
    """A copy truncated by hand (or a partial upload): the next scheduled run writes it again, with what its
    role allows (it may not delete copies), and Athena ends on a whole copy of every trade."""
    import io

    import pyarrow.parquet as pq

    store = world.store()
    part = PART.replace("LTC-USD", "ETH-USD")  # its own day: the world is shared with the tests above
    for start in (0, 10):
        _transform(world, put_raw(store, [_line(i) for i in range(start + 1, start + 11)], start=start,
                                  product="ETH-USD", fetched=f"{DAY}T23:59:00Z"))
    compact = world.sandbox("handlers.compact.handler")
    first = compact.invoke({})
    assert first.error is None and not first.denied(), (first.error, first.denied())
    [copy] = _files_under(world, world.partitions()[part])
    store.put(copy, store.get(copy).data[:100])  # truncated
    again = compact.invoke({})
    assert not again.denied(), again.denied()
    assert again.error is None, again.error
    [key] = _files_under(world, world.partitions()[part])
    table = pq.read_table(io.BytesIO(store.get(key).data))
    assert sorted(int(t) for t in table["trade_id"].to_pylist()) == list(range(1, 21))
