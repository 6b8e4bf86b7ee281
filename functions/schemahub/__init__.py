"""schemahub: exact, gap-free public trades from many exchanges in one table.

    import schemahub
    lake = schemahub.open("demo-data")     # a folder or s3://bucket/prefix; default $SCHEMAHUB_STORAGE, else ./data
    lake.trades(exchange="coinbase", product="BTC-USD", start="2026-11-30", end="2026-12-01")   # pyarrow.Table

See schemahub.api. The API is imported on first use, so the Lambda functions (no DuckDB) import the package freely.
"""

__version__ = "0.1.0"

__all__ = ["Lake", "open", "__version__"]


def __getattr__(name: str):
    if name in ("open", "Lake"):
        from schemahub import api

        return getattr(api, name)
    raise AttributeError(f"module 'schemahub' has no attribute {name!r}")
