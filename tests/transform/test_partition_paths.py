"""A table file at a path that is not a valid partition (a product id with '=' or '/', written by an older
version or by hand) is skipped with a warning: query, stats and compact still serve the rest of the table."""

from __future__ import annotations

import json
import logging
from datetime import date

from schemahub.compact import compact, read_layout
from schemahub.query import connect, stats
from schemahub.transform import Transformer
from tests.transform.helpers import put_raw


def _lines(first, n):
    return [json.dumps({"time": f"2026-11-29T10:00:{i % 60:02d}.{i:06d}Z", "trade_id": i, "price": "100.5",
                        "size": "0.01", "side": "buy"}, separators=(",", ":")).encode() for i in range(first, first + n)]


def test_bad_partition_paths_are_skipped_and_the_rest_of_the_table_is_served(store, caplog):
    put_raw(store, _lines(1, 10), start=0)
    put_raw(store, _lines(11, 10), start=10)
    Transformer(store).run()
    part = next(o.key for o in store.list("curated/"))
    data = store.get(part).data
    bad = ["curated/exchange=coinbase/product_id=BTC=USD/date=2026-11-29/00000000000000000000.parquet",
           "curated/exchange=coinbase/product_id=BTC/USD/date=2026-11-29/00000000000000000000.parquet",
           "curated/exchange=coinbase/product_id=ETH-USD/date=2026-13-45/00000000000000000000.parquet",
           "compacted/exchange=coinbase/product_id=BTC/USD/date=2026-11-28/manifest.json"]
    for key in bad:
        store.put(key, data if key.endswith(".parquet") else b'{"file": "x.parquet", "parts": []}')
    store.put("raw/coinbase/BTC=USD/00000000000000000000.jsonl.gz", b"not a raw object")
    caplog.set_level(logging.WARNING)

    assert connect(store).execute("SELECT count(*), count(DISTINCT product_id) FROM trades").fetchone() == (20, 1)
    [st] = stats(store)
    assert (st["product_id"], st["rows"]) == ("BTC-USD", 20)
    res = compact(store, before=date(2026, 12, 1))
    assert res.partitions == 1 and list(read_layout(store).compacted) == [
        "exchange=coinbase/product_id=BTC-USD/date=2026-11-29"]
    assert connect(store).execute("SELECT count(*) FROM trades").fetchone() == (20,)
    warned = caplog.text
    for key in bad:
        assert key in warned
