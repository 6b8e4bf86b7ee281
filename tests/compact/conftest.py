"""Fixtures for compaction with a catalog: a fresh Glue table in moto's server per test, and Athena's planner
modelled from the Glue metadata (one location per partition, every object under it)."""

from __future__ import annotations

import io
import uuid

import pytest


def glue_client():
    import boto3

    return boto3.client("glue")  # AWS_ENDPOINT_URL: moto's server (tests/conftest.py)


@pytest.fixture
def glue_table(moto_endpoint, s3_bucket):
    """(database, table, bucket): the stack's table definition (columns, Parquet SerDe, partition keys),
    registered partitions, no projection."""
    from cdk_app.stack import GLUE_COLUMNS, GLUE_PARTITIONS

    glue = glue_client()
    db = f"schemahub_{uuid.uuid4().hex[:8]}"
    glue.create_database(DatabaseInput={"Name": db})
    glue.create_table(DatabaseName=db, TableInput={
        "Name": "trades", "TableType": "EXTERNAL_TABLE",
        "Parameters": {"classification": "parquet", "EXTERNAL": "TRUE"},
        "PartitionKeys": [{"Name": n, "Type": t} for n, t in GLUE_PARTITIONS],
        "StorageDescriptor": {
            "Columns": [{"Name": n, "Type": t} for n, t in GLUE_COLUMNS],
            "Location": f"s3://{s3_bucket}/root/curated/",
            "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
            "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
            "SerdeInfo": {"SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"}}})
    return db, "trades", s3_bucket


@pytest.fixture
def lake(glue_table):
    """(S3 store at s3://bucket/root, GlueCatalog of the fresh table)."""
    from schemahub.store import open_store
    from schemahub.store.glue import GlueCatalog

    db, table, bucket = glue_table
    store = open_store(f"s3://{bucket}/root")
    return store, GlueCatalog(db, table, root=f"s3://{bucket}/root/")


def athena_plan(catalog, store) -> dict[str, list[str]]:
    """What an Athena query of the whole table opens, from the Glue metadata alone: for each registered
    partition, every object under its location (Athena lists the prefix and skips names starting with '_' or
    '.'). Store-relative keys, per partition."""
    root = catalog.root
    locations = {}
    for page in catalog.client.get_paginator("get_partitions").paginate(DatabaseName=catalog.database,
                                                                        TableName=catalog.table):
        for p in page["Partitions"]:
            from schemahub.layout import partition

            loc = p["StorageDescriptor"]["Location"]
            assert loc.startswith(root) and loc.endswith("/"), loc
            locations[partition(*p["Values"])] = loc[len(root):]
    # One listing of each top folder, grouped by location: the same objects as one LIST per location (which
    # moto answers in time linear in the bucket, so a year of per-location LISTs would take minutes).
    keys = [o.key for base in ("curated/", "compacted/") for o in store.list(base)]
    out = {p: [] for p in locations}
    by_prefix = {}
    for p, loc in locations.items():
        by_prefix.setdefault(loc, []).append(p)
    for k in keys:
        if k.rsplit("/", 1)[-1].startswith(("_", ".")):
            continue
        folder = k.rsplit("/", 1)[0] + "/"
        while folder:
            for p in by_prefix.get(folder, []):
                out[p].append(k)
            folder = folder[:-1].rsplit("/", 1)[0] + "/" if "/" in folder[:-1] else ""
    return {p: sorted(v) for p, v in out.items()}


def trade_ids(store, keys) -> list[int]:
    """The trade ids in these Parquet files, every row (a trade in two files counts twice)."""
    import pyarrow.parquet as pq

    out = []
    for k in keys:
        out += [int(t) for t in pq.read_table(io.BytesIO(store.get(k).data), columns=["trade_id"])["trade_id"].to_pylist()]
    return out
