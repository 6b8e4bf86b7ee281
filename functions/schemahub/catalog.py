"""The catalog port: where a query engine that plans from a catalog (Athena, through Glue) reads each day.

A catalog holds one location per partition (exchange, product_id, date), a folder of the store. Which folder
is decided by schemahub.compact.day_files, the rule the local `trades` view uses too:

- the transform registers each new partition at the day's parts folder, and points it back there when a part
  arrives for a day that was compacted (`show_parts`);
- compaction moves a partition to its compacted copy's version folder after the manifest is written, and
  checks the day again after the move (schemahub.compact.switch_to_copies, sync_catalog).

Locations are store-relative folders ('curated/exchange=.../date=.../'); an adapter maps them to its own
URIs. Adapters translate their backend's errors into schemahub.errors.CatalogError subclasses.
"""

from __future__ import annotations

from typing import Protocol

from schemahub.layout import parts_prefix


class Catalog(Protocol):
    def locations(self) -> dict[str, str] | None:
        """partition path -> store-relative folder, for every registered partition (None: no partitions kept)."""

    def create(self, items: dict[str, str]) -> None:
        """Register partitions at these folders; one that exists already is left as it is."""

    def update(self, items: dict[str, str]) -> None:
        """Point existing partitions at these folders (one atomic change per partition)."""

    def show_parts(self, partition: str) -> None:
        """Register the partition at its parts folder, or point it back there (idempotent)."""


class NullCatalog:
    """No catalog: the local folder, where DuckDB reads the store itself (read_layout)."""

    def locations(self) -> None:
        return None

    def create(self, items: dict[str, str]) -> None:
        pass

    def update(self, items: dict[str, str]) -> None:
        pass

    def show_parts(self, partition: str) -> None:
        pass


def open_catalog(store) -> Catalog:
    """The catalog for a store: Glue when SCHEMAHUB_GLUE_TABLE names a table (an s3:// store), else none."""
    from schemahub import settings

    table = settings.glue_table()
    if table is None:
        return NullCatalog()
    uri = getattr(store, "uri", "")
    if not str(uri).startswith("s3://"):
        from schemahub.errors import UsageError

        raise UsageError(f"{settings.GLUE_TABLE} is set, but the storage {uri!r} is not s3://bucket/prefix: Athena "
                         "reads S3 only; unset it for a local folder")
    from schemahub.store.glue import GlueCatalog

    database, name = table
    return GlueCatalog(database, name, root=str(uri).rstrip("/") + "/")


__all__ = ["Catalog", "NullCatalog", "open_catalog", "parts_prefix"]
