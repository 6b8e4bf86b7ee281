"""The unified trades table: one schema for every exchange, in one place."""

from __future__ import annotations

import pyarrow as pa

DECIMAL = pa.decimal128(38, 12)  # exact to 12 decimals; price*size is DECIMAL(38,24) in DuckDB and Athena
TIMESTAMP = pa.timestamp("us", tz="UTC")

#: (name, type, meaning) for every column, in table order.
COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("exchange", pa.string(), "lower-case exchange id (coinbase)"),
    ("product_id", pa.string(), "unified BASE-QUOTE in upper case (BTC-USD)"),
    ("symbol", pa.string(), "the exchange's own symbol"),
    ("base_asset", pa.string(), "unified base asset (BTC)"),
    ("quote_asset", pa.string(), "unified quote asset (USD)"),
    ("trade_id", pa.string(), "the exchange's trade id"),
    ("price", DECIMAL, "exact price"),
    ("size", DECIMAL, "exact base amount"),
    ("side", pa.string(), "taker side: buy, sell or unknown"),
    ("trade_time", TIMESTAMP, "exchange time, UTC, microseconds"),
    ("ingested_at", TIMESTAMP, "when the raw object was fetched (from its header, so deterministic)"),
    ("raw_key", pa.string(), "the raw object the row came from"),
]

TRADES = pa.schema([(n, t) for n, t, _ in COLUMNS])

#: Hive partition keys, in path order: curated/exchange=../product_id=../date=YYYY-MM-DD/
PARTITION_KEYS = ("exchange", "product_id", "date")

#: What a curated file holds: everything but the partition keys, which live in its path.
FILE_SCHEMA = pa.schema([f for f in TRADES if f.name not in PARTITION_KEYS])

SIDES = ("buy", "sell", "unknown")
