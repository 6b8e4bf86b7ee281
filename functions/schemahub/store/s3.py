"""S3 (or any S3-compatible server) as an object store, through boto3."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

from botocore import exceptions as bx

from schemahub.clock import SYSTEM_CLOCK
from schemahub.errors import (
    NotFound,
    PreconditionFailed,
    StoreAccessDenied,
    StoreError,
    StoreMissing,
    StoreUnavailable,
    UsageError,
)
from schemahub.store.base import ObjectInfo, ObjectStore, StoredObject, validate_key

_ACTION = {"read": "s3:GetObject", "write": "s3:PutObject", "list": "s3:ListBucket", "delete": "s3:DeleteObject"}
_DENIED = {"AccessDenied", "AllAccessDisabled", "AccountProblem", "InvalidAccessKeyId", "SignatureDoesNotMatch",
           "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "InvalidObjectState", "403", "Forbidden"}
_BUSY = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed", "Throttling",
         "ThrottlingException", "503", "500"}
_CREDENTIALS = (bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError,
                bx.NoAuthTokenError, bx.TokenRetrievalError, bx.SSOError)
_UNREACHABLE = (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError, bx.ConnectionClosedError,
                bx.SSLError, bx.ProxyConnectionError, bx.ResponseStreamingError, bx.IncompleteReadError,
                bx.HTTPClientError)


CONFLICT_ATTEMPTS = 6  # a 409 ConditionalRequestConflict is retried up to 5 times, about 1.5 s in all


def _code(e: bx.ClientError) -> tuple[str, int | None, str]:
    err = e.response.get("Error", {})
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(err.get("Code") or status or ""), status, str(err.get("Message") or "")


class S3Store(ObjectStore):
    """Objects under s3://bucket/prefix. Conditional writes use S3's If-None-Match / If-Match.

    boto3 reads AWS_ENDPOINT_URL itself, so the same code talks to AWS,
    MinIO or moto's server. Every botocore error is translated in `_error`,
    naming the store, the key and what to do.
    """

    def __init__(self, bucket: str, prefix: str = "", *, client=None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        if client is None:
            import os

            import boto3
            from botocore.config import Config

            opts: dict = {"max_pool_connections": 32, "connect_timeout": 10}
            if not (os.environ.get("AWS_MAX_ATTEMPTS") or os.environ.get("AWS_RETRY_MODE")):
                opts["retries"] = {"mode": "standard", "max_attempts": 5}  # else boto3 applies its own variables
            try:
                client = boto3.client("s3", config=Config(**opts))
            except ValueError as e:  # e.g. "Invalid endpoint: localhost:9000"
                raise UsageError(f"{self.uri}: cannot make an S3 client: {e} (check AWS_ENDPOINT_URL, e.g. "
                                 "http://127.0.0.1:9000, and AWS_REGION)") from None
        self.client = client
        self.clock = SYSTEM_CLOCK  # backoff after a 409 (tests put a FakeClock here)

    def _key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    # ------------------------------------------------------------ errors, in one place
    def _error(self, op: str, key: str, e: Exception) -> StoreError:
        where = f"{self.uri}: cannot {op} {key!r}"
        if isinstance(e, _CREDENTIALS):
            return StoreUnavailable(f"{where}: no usable AWS credentials ({e}): set AWS_PROFILE, or "
                                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run with an IAM role")
        if isinstance(e, _UNREACHABLE):
            endpoint = getattr(getattr(self.client, "meta", None), "endpoint_url", None) or "S3"
            return StoreUnavailable(f"{where}: cannot reach {endpoint} ({e}): check the network and "
                                    "AWS_ENDPOINT_URL, then run again")
        if isinstance(e, bx.ClientError):
            code, status, message = _code(e)
            detail = f"{code}{': ' + message if message and message != code else ''}"
            if code == "NoSuchBucket":
                return StoreMissing(f"{where}: bucket {self.bucket!r} does not exist: create it, or fix --storage "
                                    "(or SCHEMAHUB_STORAGE)")
            if code in _DENIED or status == 403:
                hint = ("the credentials are unknown or expired: refresh them (AWS_PROFILE, AWS_ACCESS_KEY_ID)"
                        if code in ("InvalidAccessKeyId", "ExpiredToken", "InvalidToken", "TokenRefreshRequired",
                                    "SignatureDoesNotMatch")
                        else f"grant this identity {_ACTION.get(op, 's3:*')} on arn:aws:s3:::{self.bucket}/{self.prefix}*")
                return StoreAccessDenied(f"{where}: access denied ({detail}): {hint}")
            if code in _BUSY or (status or 0) >= 500:
                return StoreUnavailable(f"{where}: S3 is unavailable or throttling ({detail}) after retries: "
                                        "run again later")
            return StoreError(f"{where}: S3 answered {status} {detail}")
        return StoreError(f"{where}: {type(e).__name__}: {e}")

    @contextmanager
    def _translated(self, op: str, key: str):
        try:
            yield
        except StoreError:
            raise
        except (bx.BotoCoreError, bx.ClientError) as e:
            raise self._error(op, key, e) from e

    # ------------------------------------------------------------ the port
    def get(self, key: str) -> StoredObject:
        with self._translated("read", key):
            try:
                resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            except bx.ClientError as e:
                if _code(e)[0] == "NoSuchKey":
                    raise NotFound(f"{self.uri}: no object {key!r}") from None
                raise
            return StoredObject(key, resp["Body"].read(), resp["ETag"])

    def get_tail(self, key: str, nbytes: int) -> tuple[bytes, int]:
        with self._translated("read", key):
            try:
                resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key), Range=f"bytes=-{max(1, nbytes)}")
            except bx.ClientError as e:
                code = _code(e)[0]
                if code == "NoSuchKey":
                    raise NotFound(f"{self.uri}: no object {key!r}") from None
                if code == "InvalidRange":  # an empty object has no last byte to range over
                    return b"", 0
                raise
            data = resp["Body"].read()
            total = str(resp.get("ContentRange") or "").rpartition("/")[2]  # "bytes 100-199/200"
            size = int(total) if total.isdigit() else len(data)
            return (data[-nbytes:] if nbytes > 0 else b""), size

    def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        kwargs = {}
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        elif if_match is not None:
            kwargs["IfMatch"] = if_match
        for attempt in range(CONFLICT_ATTEMPTS):
            with self._translated("write", key):
                try:
                    resp = self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **kwargs)
                except bx.ClientError as e:
                    code, status, _ = _code(e)
                    if kwargs and (code == "ConditionalRequestConflict" or status == 409):
                        # AWS: "a conflicting operation occurred during the upload ... retry". Not a lost race:
                        # only S3's answer to the retry (200, or 412 if the other write won) says who won. The
                        # same condition is sent again, so a compare-and-swap never overwrites a newer object.
                        if attempt + 1 < CONFLICT_ATTEMPTS:
                            self.clock.sleep(min(1.0, 0.05 * 2 ** attempt) * random.uniform(0.5, 1.0))
                            continue
                        raise StoreUnavailable(
                            f"{self.uri}: cannot write {key!r}: S3 answered 409 ConditionalRequestConflict (a "
                            f"conflicting operation in progress) {CONFLICT_ATTEMPTS} times: run again later") from None
                    # 412: the condition failed. 404: If-Match on a missing key.
                    if kwargs and code != "NoSuchBucket" and (code in ("PreconditionFailed", "NoSuchKey")
                                                              or status == 412):
                        raise PreconditionFailed(f"{self.uri}: conditional put of {key!r} failed ({code or status})") from None
                    raise
                return resp["ETag"]
        raise AssertionError("unreachable")

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        strip = len(self.prefix)
        with self._translated("list", prefix):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(item["Key"][strip:], item["Size"])

    def delete(self, key: str) -> None:
        with self._translated("delete", key):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
