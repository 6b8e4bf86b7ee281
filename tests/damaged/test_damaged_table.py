"""A damaged curated Parquet file (a part or a compacted copy), on a local folder and on S3 (moto's server).

A disk that filled or a partial upload leaves a table file truncated or garbage. The damage is made by hand
from a good file, so what a reader must see is known without the code: every other file's rows, the damaged
file named with what to do, a damaged count in stats, compact skipping the damaged day by name, and a
damaged compacted copy replaced by its parts (which hold the same rows).
"""

from __future__ import annotations

import json
import logging
import os
from datetime import date

import pytest

from schemahub import cli
from schemahub.compact import compact, read_layout
from schemahub.layout import curated_key, raw_key
from schemahub.query import connect, stats
from schemahub.rawobject import encode, make_header
from schemahub.transform import Transformer

PRODUCT = "BTC-USD"
DAY_A, DAY_B = "2026-11-28", "2026-11-29"
HINT = "schemahub transform --all --exchange coinbase --product BTC-USD"


@pytest.fixture(autouse=True)
def _logging_back():
    """cli.main points schemahub's log at this test's stderr; give it back to pytest afterwards."""
    yield
    log = logging.getLogger("schemahub")
    log.handlers[:], log.propagate = [], True


def _object(start: int, day: str) -> bytes:
    ids = range(start + 1, start + 11)
    lines = [json.dumps({"time": f"{day}T10:00:{i % 60:02d}.000001Z", "trade_id": i, "price": "100.5",
                         "size": "0.01", "side": "buy"}, separators=(",", ":")).encode() for i in ids]
    header = make_header(exchange="coinbase", product_id=PRODUCT, symbol=PRODUCT, start=start, end=start + 10,
                         count=10, min_id=ids[0], max_id=ids[-1], fetched_at="2026-11-30T12:00:00Z", requests=[])
    return encode(header, lines)


def _table(store) -> dict[str, str]:
    """Objects 0 and 10 on day A (two parts), 20 on day B. Returns {name: curated key}."""
    for start, day in ((0, DAY_A), (10, DAY_A), (20, DAY_B)):
        store.put(raw_key("coinbase", PRODUCT, start), _object(start, day))
    res = Transformer(store).run()
    assert res.ok and res.rows == 30
    return {f"{d}/{s}": curated_key("coinbase", PRODUCT, d, raw_key("coinbase", PRODUCT, s))
            for s, d in ((0, DAY_A), (10, DAY_A), (20, DAY_B))}


def _damage(data: bytes, how: str) -> bytes:
    if how == "truncated":
        return data[: len(data) // 2]
    if how == "footer-cut":  # a partial upload that lost the last bytes only
        return data[:-3]
    if how == "garbage":
        return os.urandom(len(data))
    if how == "garbage-with-magic":  # looks like Parquet at both ends, holds nothing
        return b"PAR1" + os.urandom(200) + (100).to_bytes(4, "little") + b"PAR1"
    if how == "empty":
        return b""
    raise AssertionError(how)


def _ids(store) -> list[int]:
    return sorted(int(r[0]) for r in connect(store).execute("SELECT trade_id FROM trades").fetchall())


@pytest.mark.parametrize("how", ["truncated", "footer-cut", "garbage", "garbage-with-magic", "empty"])
def test_a_damaged_part_is_set_aside_by_key_and_everything_else_stays_queryable(store, store_uri, how, caplog, capsys):
    keys = _table(store)
    bad = keys[f"{DAY_A}/10"]
    store.put(bad, _damage(store.get(bad).data, how))
    caplog.set_level(logging.WARNING)

    assert _ids(store) == [*range(1, 11), *range(21, 31)]  # every other file's rows, exactly
    assert bad in caplog.text and HINT in caplog.text
    line = next(r.getMessage() for r in caplog.records if r.name.startswith("schemahub") and bad in r.getMessage())
    assert "\n" not in line and "damaged" in line and "missing from queries" in line

    (row,) = [r for r in stats(store) if r["product_id"] == PRODUCT]
    assert (row["rows"], row["damaged_files"]) == (20, 1)

    caplog.clear()
    res = compact(store, before=date(2026, 12, 1), min_parts=1)
    partition_a = f"exchange=coinbase/product_id={PRODUCT}/date={DAY_A}"
    assert res.skipped_damaged == [partition_a] and partition_a not in res.planned
    assert any(r.name == "schemahub.compact" and partition_a in r.getMessage() and bad in r.getMessage()
               for r in caplog.records)
    assert _ids(store) == [*range(1, 11), *range(21, 31)]  # day B compacted, day A still its good part

    # What the warning says to do brings every row back.
    assert cli.main(["transform", "--storage", store_uri, "--all", "--exchange", "coinbase", "--product", PRODUCT]) == 0
    assert _ids(store) == list(range(1, 31))
    assert [r["damaged_files"] for r in stats(store) if r["product_id"] == PRODUCT] == [0]
    assert compact(store, before=date(2026, 12, 1)).partitions == 1
    assert _ids(store) == list(range(1, 31))


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_a_damaged_compacted_copy_falls_back_to_its_parts_and_the_next_compact_writes_it_again(store, how, caplog):
    _table(store)
    assert compact(store, before=date(2026, 12, 1)).partitions == 1  # day A: two parts -> one copy
    layout = read_layout(store)
    partition_a = f"exchange=coinbase/product_id={PRODUCT}/date={DAY_A}"
    copy = layout.compacted[partition_a]
    store.put(copy, _damage(store.get(copy).data, how))
    caplog.set_level(logging.WARNING)

    assert _ids(store) == list(range(1, 31))  # the parts hold the same rows
    assert copy in caplog.text and "read from its parts" in caplog.text
    assert partition_a not in read_layout(store).compacted

    assert compact(store, before=date(2026, 12, 1)).partitions == 1
    again = read_layout(store)
    assert again.compacted.get(partition_a) == copy and copy not in again.damaged
    assert _ids(store) == list(range(1, 31))
