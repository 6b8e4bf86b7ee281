"""Object stores: one port, a local-folder adapter and an S3 adapter."""

from __future__ import annotations

import os

from schemahub.store.base import ObjectInfo, ObjectStore, StoredObject

DEFAULT_STORAGE = "./data"


def open_store(location: str | None = None) -> ObjectStore:
    """Open `PATH` or `s3://bucket/prefix`; default from SCHEMAHUB_STORAGE, else ./data."""
    location = location or os.environ.get("SCHEMAHUB_STORAGE") or DEFAULT_STORAGE
    if location.startswith("s3://"):
        from schemahub.store.s3 import S3Store

        bucket, _, prefix = location[5:].partition("/")
        if not bucket:
            raise ValueError(f"storage {location!r}: missing bucket name (expected s3://bucket/prefix)")
        return S3Store(bucket, prefix)
    from schemahub.store.local import LocalStore

    return LocalStore(location)


__all__ = ["ObjectInfo", "ObjectStore", "StoredObject", "open_store", "DEFAULT_STORAGE"]
