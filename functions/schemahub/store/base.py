"""The object-store port: the only way domain code touches storage."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass

from schemahub.errors import InvalidKey, NotFound


@dataclass(frozen=True)
class StoredObject:
    """An object's bytes and its version tag."""

    key: str
    data: bytes
    etag: str


@dataclass(frozen=True)
class ObjectInfo:
    """One listing entry."""

    key: str
    size: int


class ObjectStore(abc.ABC):
    """Key/value blob store with create-only and compare-and-swap writes.

    Keys are '/'-separated relative paths. Both adapters give the same
    guarantees between processes: a create-only put succeeds for exactly one
    writer, and a compare-and-swap put succeeds only if the object still has
    the etag the writer read.
    """

    uri: str

    @abc.abstractmethod
    def get(self, key: str) -> StoredObject:
        """Return the object; raise NotFound if it does not exist."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        """Write the object and return its new etag.

        Args:
            if_none_match: create-only; raise PreconditionFailed if the key exists.
            if_match: compare-and-swap; raise PreconditionFailed unless the
                current etag equals this one (a missing key also fails).
        """

    @abc.abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Yield objects whose key starts with prefix, in key order."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete the object if it exists."""

    def get_tail(self, key: str, nbytes: int) -> tuple[bytes, int]:
        """(the last nbytes of the object, or all of it if shorter; its size). Raise NotFound if it does not exist.

        Adapters override this with a ranged read, so checking a Parquet footer costs one small read.
        """
        data = self.get(key).data
        return (data[-nbytes:] if nbytes > 0 else b""), len(data)

    def exists(self, key: str) -> bool:
        """True if the key exists."""
        try:
            self.get(key)
        except NotFound:
            return False
        return True

    def local_path(self, key: str) -> str | None:
        """A filesystem path for the key, if the store is a local folder."""
        return None


def validate_key(key: str) -> str:
    """Reject keys that could escape the store root, hide from listings or collide with internals.

    A segment starting with '.' is refused on every adapter: the local folder
    keeps its temporary and lock files under such names and skips them when
    listing, so an object there would be written but never read back.
    """
    if not isinstance(key, str) or not key or key.startswith("/") or key.endswith("/") or "\x00" in key:
        raise InvalidKey(f"invalid object key {key!r}: must be a relative path without a trailing '/'")
    for part in key.split("/"):
        if not part or part.startswith(".") or part.endswith(".lock"):
            raise InvalidKey(
                f"invalid object key {key!r}: bad path segment {part!r} (segments are non-empty, never start with '.' "
                "and never end with '.lock'; product ids are BASE-QUOTE, e.g. BTC-USD)"
            )
    return key
