"""SQL over the curated table with DuckDB: a `trades` view, from a local folder or S3."""

from __future__ import annotations

import os
from datetime import datetime, timezone

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

from schemahub.compact import table_partition
from schemahub.layout import COMPACTED, CURATED, RAW, parse_source_key
from schemahub.store.base import ObjectStore
from schemahub.table import FILE_SCHEMA, TRADES

_PARTITIONING = ds.partitioning(
    pa.schema([("exchange", pa.string()), ("product_id", pa.string()), ("date", pa.date32())]), flavor="hive"
)
_COLUMNS = ", ".join([f.name for f in TRADES] + ["date"])

OHLCV_1M = """
SELECT time_bucket(INTERVAL 1 minute, trade_time) AS minute,
       arg_min(price, trade_time) AS open, max(price) AS high, min(price) AS low,
       arg_max(price, trade_time) AS close, sum(size) AS volume, sum(price * size) AS notional, count(*) AS trades
FROM trades
WHERE exchange = '{exchange}' AND product_id = '{product}'
  AND trade_time >= (SELECT max(trade_time) FROM trades WHERE exchange = '{exchange}' AND product_id = '{product}') - INTERVAL {minutes} minute
GROUP BY 1 ORDER BY 1
"""

# One asset's 1-minute VWAP on every exchange that trades it, side by side (exact sums; the ratio is rounded).
VWAP_1M_ACROSS = """
WITH m AS (
  SELECT time_bucket(INTERVAL 1 minute, trade_time) AS minute, exchange || ' ' || product_id AS market,
         round(sum(price * size) / sum(size), 2) AS vwap
  FROM trades
  WHERE base_asset = '{base}' AND trade_time >= (SELECT max(trade_time) FROM trades WHERE base_asset = '{base}') - INTERVAL {minutes} minute
  GROUP BY 1, 2
)
PIVOT m ON market USING first(vwap) GROUP BY minute ORDER BY minute
"""


def dataset(store: ObjectStore, keys: list[str] | None = None) -> ds.Dataset | None:
    """The table's files as a pyarrow dataset (None if there are none yet): parts, or a day's compacted copy.

    Rows as stored: a trade id held by two raw objects appears twice here; the `trades` view keeps one.
    """
    from schemahub.compact import read_layout

    keys = read_layout(store).keys() if keys is None else keys
    if not keys:
        return None
    fs_kwargs = {}
    local = store.local_path("curated/x")
    if local is not None:
        root = os.path.dirname(os.path.dirname(local))
    else:
        from pyarrow import fs

        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        kwargs = {}
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            kwargs = {"endpoint_override": host, "scheme": scheme}
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        fs_kwargs = {"filesystem": fs.S3FileSystem(region=region, **kwargs)}
        root = f"{store.bucket}/{store.prefix}".rstrip("/")
    parts = []
    for base in ("curated", "compacted"):
        paths = [f"{root}/{k}" for k in keys if k.startswith(base + "/")]
        if paths:
            parts.append(ds.dataset(paths, format="parquet", partitioning=_PARTITIONING, schema=_file_and_keys(),
                                    partition_base_dir=f"{root}/{base}", **fs_kwargs))
    return parts[0] if len(parts) == 1 else ds.dataset(parts)


def _file_and_keys() -> pa.Schema:
    return pa.schema(list(FILE_SCHEMA) + [pa.field("exchange", pa.string()), pa.field("product_id", pa.string()),
                                          pa.field("date", pa.date32())])


def connect(store: ObjectStore, *, layout=None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with a `trades` view over the store's curated table (UTC session).

    Each part holds a trade id once (the transform), and so does each compacted day, across parts too
    (compaction keeps the row from the lowest raw key). The view adds no dedupe of its own: a window over
    every row cost 10-20x on days read as parts (bench_query), and with a unique raw chain no two objects
    hold the same trade.
    """
    from schemahub.compact import read_layout

    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    local = store.local_path("curated/x") is not None
    keys = (layout or read_layout(store)).keys()
    if keys and local:
        # Local folder: DuckDB's own Parquet reader (parallel, partition keys from the paths) over the files
        # a consistent reader takes: per product-day, its parts or its compacted copy (schemahub.compact).
        files = ", ".join("'" + store.local_path(k).replace("'", "''") + "'" for k in keys)
        con.execute(f"CREATE VIEW _curated AS SELECT * FROM read_parquet([{files}], hive_partitioning = true, "
                    "hive_types = {'exchange': VARCHAR, 'product_id': VARCHAR, 'date': DATE})")
    else:
        # S3 (DuckDB has no httpfs offline) or an empty table: a registered pyarrow dataset.
        data = dataset(store, keys) if keys else None
        con.register("_curated", data if data is not None else
                     pa.table({f.name: pa.array([], f.type) for f in _file_and_keys()}))
    con.execute(f"CREATE VIEW trades AS SELECT {_COLUMNS} FROM _curated")
    return con


def stats(store: ObjectStore, now: datetime | None = None) -> list[dict]:
    """Per exchange and product: rows, first/last trade, freshness, bytes (raw, curated parts, compacted copies),
    curated/raw size ratio and curated bytes per trade."""
    from schemahub.compact import read_layout

    now = now or datetime.now(timezone.utc)
    layout = read_layout(store)
    con = connect(store, layout=layout)
    damaged: dict[tuple[str, str], int] = {}  # table files set aside (schemahub.tablefiles)
    for key in layout.damaged:
        parsed = table_partition(key, warn=False)
        if parsed is not None:
            damaged[parsed[1][:2]] = damaged.get(parsed[1][:2], 0) + 1
    rows = con.execute(
        "SELECT exchange, product_id, count(*) AS rows, min(trade_time) AS first_trade, max(trade_time) AS last_trade "
        "FROM trades GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    sizes: dict[tuple[str, str], list[int]] = {}
    for info in store.list(RAW):
        rk = parse_source_key(info.key)
        if rk is not None:  # a stray file under raw/ belongs to no product
            sizes.setdefault((rk.exchange, rk.product_id), [0, 0, 0])[0] += info.size
    for base, slot in ((CURATED, 1), (COMPACTED, 2)):
        for info in store.list(base):
            parsed = table_partition(info.key, warn=False)  # read_layout has warned about the others
            if parsed is not None:
                sizes.setdefault(parsed[1][:2], [0, 0, 0])[slot] += info.size
    out = []
    seen = set()
    for ex, pid, n, first, last in rows:
        raw, cur, comp = sizes.get((ex, pid), [0, 0, 0])
        seen.add((ex, pid))
        out.append({"exchange": ex, "product_id": pid, "rows": n, "first_trade": first, "last_trade": last,
                    "freshness_s": round((now - last).total_seconds(), 1), "raw_bytes": raw, "curated_bytes": cur,
                    "compacted_bytes": comp, "curated_to_raw": round(cur / raw, 3) if raw else None,
                    "bytes_per_trade": round(cur / n, 2) if n else None, "damaged_files": damaged.get((ex, pid), 0)})
    for (ex, pid), (raw, cur, comp) in sorted(sizes.items()):
        if (ex, pid) not in seen:
            out.append({"exchange": ex, "product_id": pid, "rows": 0, "raw_bytes": raw, "curated_bytes": cur,
                        "compacted_bytes": comp, "damaged_files": damaged.get((ex, pid), 0)})
    return out
