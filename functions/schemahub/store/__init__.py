"""Object stores: one port, a local-folder adapter and an S3 adapter."""

from __future__ import annotations

from schemahub import settings
from schemahub.errors import UsageError
from schemahub.store.base import ObjectInfo, ObjectStore, StoredObject

DEFAULT_STORAGE = "./data"


def open_store(location: str | None = None) -> ObjectStore:
    """Open `PATH` or `s3://bucket/prefix`; default from SCHEMAHUB_STORAGE, else ./data.

    An empty location is refused (UsageError), never taken to mean the default.
    """
    if location is None:
        location = settings.storage() or DEFAULT_STORAGE
    location = settings.storage_location(location, "storage")
    if location.startswith("s3://"):
        try:
            from schemahub.store.s3 import S3Store
        except ModuleNotFoundError as e:  # boto3 is the `aws` extra, not a dependency of the local path
            if (e.name or "").split(".")[0] not in ("boto3", "botocore"):
                raise
            raise UsageError(f"storage {location!r} needs boto3, which is not installed: "
                             "pip install boto3 (the package's `aws` extra: pip install '.[aws]' from a checkout)") from None

        bucket, _, prefix = location[5:].partition("/")
        return S3Store(bucket, prefix)
    from schemahub.store.local import LocalStore

    return LocalStore(location)


__all__ = ["ObjectInfo", "ObjectStore", "StoredObject", "open_store", "DEFAULT_STORAGE"]
