"""A local folder as an object store, safe between processes on one machine."""

from __future__ import annotations

import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from schemahub.errors import NotFound, PreconditionFailed
from schemahub.store.base import ObjectInfo, ObjectStore, StoredObject, validate_key


def _etag(data: bytes) -> str:
    # Same scheme as S3 single-part uploads: the content's MD5.
    return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'


class LocalStore(ObjectStore):
    """Objects are plain files under root, so DuckDB and humans can read them.

    Create-only uses link(2), which fails atomically if the name exists.
    Compare-and-swap holds an flock on a lock file (under .locks/) while it
    checks the etag and renames the new version into place; readers never see
    a torn file.
    """

    def __init__(self, root: str, *, fsync: bool = True) -> None:
        self.root = os.path.abspath(root)
        self.uri = self.root
        self.fsync = fsync  # folders are created on first write, so a dry run leaves no trace

    def local_path(self, key: str) -> str:
        return os.path.join(self.root, *validate_key(key).split("/"))

    def get(self, key: str) -> StoredObject:
        try:
            with open(self.local_path(key), "rb") as f:
                data = f.read()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{self.uri}: no object {key!r}") from None
        return StoredObject(key, data, _etag(data))

    def _write_tmp(self, path: str, data: bytes) -> str:
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}")
        with open(tmp, "wb") as f:
            f.write(data)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        return tmp

    def _sync_dir(self, path: str) -> None:
        if self.fsync:
            fd = os.open(os.path.dirname(path), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    @contextmanager
    def _locked(self, path: str):
        # Lock files live in a hidden tree, so the data tree holds only objects.
        lock_path = os.path.join(self.root, ".locks", os.path.relpath(path, self.root) + ".lock")
        os.makedirs(os.path.dirname(lock_path), exist_ok=True)
        with open(lock_path, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        path = self.local_path(key)
        tmp = self._write_tmp(path, data)
        try:
            if if_none_match:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise PreconditionFailed(f"{self.uri}: {key!r} already exists") from None
            elif if_match is not None:
                with self._locked(path):
                    try:
                        with open(path, "rb") as f:
                            current = _etag(f.read())
                    except FileNotFoundError:
                        raise PreconditionFailed(f"{self.uri}: {key!r} does not exist") from None
                    if current != if_match:
                        raise PreconditionFailed(f"{self.uri}: {key!r} changed (etag {current} != {if_match})")
                    os.replace(tmp, path)
                    tmp = None
            else:
                with self._locked(path):
                    os.replace(tmp, path)
                    tmp = None
            self._sync_dir(path)
        finally:
            if tmp is not None:
                os.unlink(tmp)
        return _etag(data)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Walk only the deepest directory the prefix names, not the whole tree.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = os.path.join(self.root, *base.split("/")) if base else self.root
        found: list[tuple[str, str]] = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = os.path.relpath(dirpath, self.root)
            for name in filenames:
                if name.startswith(".tmp-") or name.endswith(".lock"):
                    continue
                key = name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}"
                if key.startswith(prefix):
                    found.append((key, os.path.join(dirpath, name)))
        for key, path in sorted(found):
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                continue
            yield ObjectInfo(key, size)

    def delete(self, key: str) -> None:
        path = self.local_path(key)
        with self._locked(path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
