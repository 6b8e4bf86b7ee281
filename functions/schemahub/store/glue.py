"""Glue Data Catalog partitions as the catalog port (schemahub.catalog), through boto3.

Athena plans a query of a table with registered partitions from Glue: one location per partition, every
object under it read. Each partition's storage descriptor is the table's (columns, formats, SerDe) with
the partition's own location. Every botocore error is translated in `_error`, in one place.
"""

from __future__ import annotations

from contextlib import contextmanager

from botocore import exceptions as bx

from schemahub.errors import CatalogAccessDenied, CatalogError, CatalogMissing, CatalogUnavailable, UsageError
from schemahub.layout import parse_partition, partition, parts_prefix

_BATCH = 100  # BatchCreatePartition and BatchUpdatePartition take at most 100 partitions per call
_BUSY = {"ThrottlingException", "InternalServiceException", "OperationTimeoutException", "ServiceUnavailable",
         "ConcurrentModificationException", "ResourceNumberLimitExceededException"}
_DENIED = {"AccessDeniedException", "AccessDenied", "UnrecognizedClientException", "InvalidSignatureException",
           "ExpiredTokenException"}
_UNREACHABLE = (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError, bx.ConnectionClosedError,
                bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError, bx.HTTPClientError)


class GlueCatalog:
    """The partitions of one Glue table (database.table) whose locations live under root (s3://bucket/prefix/)."""

    def __init__(self, database: str, table: str, *, root: str, client=None) -> None:
        self.database, self.table, self.root = database, table, root.rstrip("/") + "/"
        self.name = f"glue table {database}.{table}"
        if client is None:
            import boto3
            from botocore.config import Config

            try:
                client = boto3.client("glue", config=Config(retries={"mode": "standard", "max_attempts": 8},
                                                            connect_timeout=10))
            except ValueError as e:
                raise UsageError(f"{self.name}: cannot make a Glue client: {e} (check AWS_REGION and "
                                 "AWS_ENDPOINT_URL)") from None
        self.client = client
        self._sd: dict | None = None

    # ------------------------------------------------------------ errors, in one place
    def _error(self, op: str, e: Exception) -> CatalogError:
        where = f"{self.name}: cannot {op}"
        if isinstance(e, _UNREACHABLE):
            return CatalogUnavailable(f"{where}: cannot reach Glue or no usable credentials ({e}): check the "
                                      "network, AWS_REGION and the credentials, then run again")
        if isinstance(e, bx.ClientError):
            err = e.response.get("Error", {})
            code, message = str(err.get("Code", "")), str(err.get("Message", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            detail = f"{code}: {message}" if message else code
            if code == "EntityNotFoundException":
                return CatalogMissing(f"{where}: {detail}: deploy the stack (it creates the table), or fix "
                                      "SCHEMAHUB_GLUE_TABLE=<database>.<table>")
            if code in _DENIED or status == 403:
                return CatalogAccessDenied(f"{where}: access denied ({detail}): grant glue:{op} on the catalog, "
                                           f"database/{self.database} and table/{self.database}/{self.table}")
            if code in _BUSY or (status or 0) >= 500:
                return CatalogUnavailable(f"{where}: Glue is unavailable or throttling ({detail}) after retries: "
                                          "run again later")
            return CatalogError(f"{where}: Glue answered {status} {detail}")
        return CatalogError(f"{where}: {type(e).__name__}: {e}")

    @contextmanager
    def _translated(self, op: str):
        try:
            yield
        except CatalogError:
            raise
        except (bx.BotoCoreError, bx.ClientError) as e:
            raise self._error(op, e) from e

    # ------------------------------------------------------------ helpers
    def _uri(self, folder: str) -> str:
        return self.root + folder

    def _folder(self, uri: str) -> str:
        return uri[len(self.root):] if uri.startswith(self.root) else uri

    def _values(self, part: str) -> list[str]:
        parsed = parse_partition(part)
        if parsed is None:
            raise ValueError(f"{part!r} is not exchange=<e>/product_id=<p>/date=<d>")
        return list(parsed)

    def _input(self, part: str, folder: str) -> dict:
        if self._sd is None:
            with self._translated("GetTable"):
                table = self.client.get_table(DatabaseName=self.database, Name=self.table)["Table"]
            sd = table["StorageDescriptor"]
            self._sd = {k: sd[k] for k in ("Columns", "InputFormat", "OutputFormat", "SerdeInfo", "Compressed",
                                           "Parameters") if k in sd}
        return {"Values": self._values(part), "StorageDescriptor": {**self._sd, "Location": self._uri(folder)}}

    # ------------------------------------------------------------ the port
    def locations(self) -> dict[str, str]:
        out = {}
        with self._translated("GetPartitions"):
            pages = self.client.get_paginator("get_partitions").paginate(DatabaseName=self.database,
                                                                         TableName=self.table)
            for page in pages:
                for p in page["Partitions"]:
                    out[partition(*p["Values"])] = self._folder(p["StorageDescriptor"]["Location"])
        return out

    def create(self, items: dict[str, str]) -> None:
        parts = sorted(items)
        for i in range(0, len(parts), _BATCH):
            chunk = [self._input(p, items[p]) for p in parts[i:i + _BATCH]]
            with self._translated("BatchCreatePartition"):
                resp = self.client.batch_create_partition(DatabaseName=self.database, TableName=self.table,
                                                          PartitionInputList=chunk)
            for err in resp.get("Errors", []):
                code = err.get("ErrorDetail", {}).get("ErrorCode", "")
                if code != "AlreadyExistsException":  # registered meanwhile (another run): fine
                    raise CatalogError(f"{self.name}: cannot register partition {err.get('PartitionValues')}: "
                                       f"{code}: {err.get('ErrorDetail', {}).get('ErrorMessage', '')}")

    def update(self, items: dict[str, str]) -> None:
        parts = sorted(items)
        for i in range(0, len(parts), _BATCH):
            entries = [{"PartitionValueList": self._values(p), "PartitionInput": self._input(p, items[p])}
                       for p in parts[i:i + _BATCH]]
            with self._translated("BatchUpdatePartition"):
                resp = self.client.batch_update_partition(DatabaseName=self.database, TableName=self.table,
                                                          Entries=entries)
            for err in resp.get("Errors", []):
                detail = err.get("ErrorDetail", {})
                raise CatalogError(f"{self.name}: cannot move partition {err.get('PartitionValueList')}: "
                                   f"{detail.get('ErrorCode', '')}: {detail.get('ErrorMessage', '')}")

    def show_parts(self, part: str) -> None:
        folder = parts_prefix(part)
        with self._translated("CreatePartition"):
            try:
                self.client.create_partition(DatabaseName=self.database, TableName=self.table,
                                             PartitionInput=self._input(part, folder))
                return
            except bx.ClientError as e:
                if e.response.get("Error", {}).get("Code") != "AlreadyExistsException":
                    raise
        with self._translated("GetPartition"):
            have = self.client.get_partition(DatabaseName=self.database, TableName=self.table,
                                             PartitionValues=self._values(part))["Partition"]
        if self._folder(have["StorageDescriptor"]["Location"]) != folder:
            with self._translated("UpdatePartition"):
                self.client.update_partition(DatabaseName=self.database, TableName=self.table,
                                             PartitionValueList=self._values(part),
                                             PartitionInput=self._input(part, folder))


__all__ = ["GlueCatalog"]
