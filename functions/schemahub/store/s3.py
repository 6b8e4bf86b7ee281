"""S3 (or any S3-compatible server) as an object store, through boto3."""

from __future__ import annotations

from collections.abc import Iterator

from schemahub.errors import NotFound, PreconditionFailed, StoreError
from schemahub.store.base import ObjectInfo, ObjectStore, StoredObject, validate_key


class S3Store(ObjectStore):
    """Objects under s3://bucket/prefix. Conditional writes use S3's If-None-Match / If-Match.

    boto3 reads AWS_ENDPOINT_URL itself, so the same code talks to AWS,
    MinIO or moto's server.
    """

    def __init__(self, bucket: str, prefix: str = "", *, client=None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3", config=Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=32)
            )
        self.client = client
        self._errors = client.exceptions

    def _key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def get(self, key: str) -> StoredObject:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self._errors.NoSuchKey:
            raise NotFound(f"{self.uri}: no object {key!r}") from None
        return StoredObject(key, resp["Body"].read(), resp["ETag"])

    def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        kwargs = {}
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        elif if_match is not None:
            kwargs["IfMatch"] = if_match
        try:
            resp = self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **kwargs)
        except self.client.exceptions.ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            # 412: the condition failed. 409: a concurrent conditional write won. 404: If-Match on a missing key.
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey") or status in (409, 412):
                raise PreconditionFailed(f"{self.uri}: conditional put of {key!r} failed ({code or status})") from None
            raise StoreError(f"{self.uri}: put {key!r} failed: {e}") from e
        return resp["ETag"]

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        strip = len(self.prefix)
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for item in page.get("Contents", []):
                yield ObjectInfo(item["Key"][strip:], item["Size"])

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
