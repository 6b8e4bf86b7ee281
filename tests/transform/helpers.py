"""Build raw objects the way landing does, and read curated rows back."""

from __future__ import annotations

from schemahub.layout import raw_key
from schemahub.rawobject import encode as encode_raw


def put_raw(store, lines: list[bytes], *, product="BTC-USD", start=1, fetched="2026-11-29T12:00:00.123456Z", exchange="coinbase"):
    header = {"format": "schemahub.raw/1", "exchange": exchange, "product_id": product, "symbol": product,
              "cursor_start": str(start), "cursor_end": str(start + len(lines)), "count": len(lines),
              "fetched_at": fetched, "requests": []}
    key = raw_key(exchange, product, start)
    store.put(key, encode_raw(header, lines))
    return key


def curated_rows(store) -> list[dict]:
    from schemahub.query import dataset

    data = dataset(store)
    return [] if data is None else data.to_table().to_pylist()
