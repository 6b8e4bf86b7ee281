"""A local folder as an object store, safe between processes on one machine."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from schemahub.errors import NotFound, PreconditionFailed, StoreAccessDenied, StoreError, StoreUnavailable
from schemahub.store.base import ObjectInfo, ObjectStore, StoredObject, validate_key

log = logging.getLogger("schemahub.store")

TMP_PREFIX = ".tmp-"
#: A temporary file this old was left by a crash or a full disk (a put holds one for milliseconds).
STALE_TMP_S = 3600.0


def _etag(data: bytes) -> str:
    # Same scheme as S3 single-part uploads: the content's MD5.
    return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'


class LocalStore(ObjectStore):
    """Objects are plain files under root, so DuckDB and humans can read them.

    Create-only uses link(2), which fails atomically if the name exists.
    Compare-and-swap holds an flock on a lock file (under .locks/) while it
    checks the etag and renames the new version into place; readers never see
    a torn file.

    Every OSError is translated in `_translated`, naming the key. A put that
    fails removes its temporary file; temporary files left by a crash are
    never listed, and the first write into a folder (per process) removes
    those older than STALE_TMP_S.
    """

    def __init__(self, root: str, *, fsync: bool = True) -> None:
        self.root = os.path.abspath(root)
        self.uri = self.root
        self.fsync = fsync  # folders are created on first write, so a dry run leaves no trace
        self._swept: set[str] = set()

    def local_path(self, key: str) -> str:
        return os.path.join(self.root, *validate_key(key).split("/"))

    # ------------------------------------------------------------ errors, in one place
    def _error(self, op: str, key: str, e: OSError) -> StoreError:
        where = f"{self.uri}: cannot {op} {key!r}"
        what = f"{e.strerror or e}" + (f" ({e.filename})" if e.filename else "")
        if e.errno in (errno.EACCES, errno.EPERM):
            return StoreAccessDenied(f"{where}: {what}: give this user access to the folder, or choose another --storage")
        if e.errno == errno.EROFS:
            return StoreAccessDenied(f"{where}: {what}: the folder is on a read-only file system; remount it "
                                     "read-write, or choose another --storage")
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return StoreUnavailable(f"{where}: {what}: free space on {self.root} (nothing partial was kept), "
                                    "then run again")
        return StoreUnavailable(f"{where}: {what}: check the folder {self.root}")

    @contextmanager
    def _translated(self, op: str, key: str):
        try:
            yield
        except StoreError:
            raise
        except OSError as e:
            raise self._error(op, key, e) from e

    # ------------------------------------------------------------ reads
    def get(self, key: str) -> StoredObject:
        path = self.local_path(key)
        with self._translated("read", key):
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                raise NotFound(f"{self.uri}: no object {key!r}") from None
        return StoredObject(key, data, _etag(data))

    def get_tail(self, key: str, nbytes: int) -> tuple[bytes, int]:
        path = self.local_path(key)
        with self._translated("read", key):
            try:
                with open(path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    f.seek(max(0, size - max(0, nbytes)))
                    return f.read(), size
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                raise NotFound(f"{self.uri}: no object {key!r}") from None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Walk only the deepest directory the prefix names, not the whole tree.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = os.path.join(self.root, *base.split("/")) if base else self.root

        def unreadable(e: OSError) -> None:
            if not isinstance(e, (FileNotFoundError, NotADirectoryError)):  # gone, or never there: nothing to list
                raise e  # os.walk would otherwise skip the folder silently

        found: list[tuple[str, str]] = []
        with self._translated("list", prefix):
            for dirpath, dirnames, filenames in os.walk(start, onerror=unreadable):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                rel = os.path.relpath(dirpath, self.root)
                for name in filenames:
                    if name.startswith(".") or name.endswith(".lock"):
                        continue  # temporary files (.tmp-*) and anything hidden are never objects
                    key = name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}"
                    if key.startswith(prefix):
                        found.append((key, os.path.join(dirpath, name)))
        for key, path in sorted(found):
            with self._translated("list", key):
                try:
                    size = os.stat(path).st_size
                except FileNotFoundError:
                    continue
            yield ObjectInfo(key, size)

    # ------------------------------------------------------------ writes
    def _sweep(self, directory: str) -> None:
        """Remove temporary files a crash or a full disk left in directory (once per folder per process)."""
        if directory in self._swept:
            return
        self._swept.add(directory)
        cutoff = time.time() - STALE_TMP_S
        removed = 0
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.name.startswith(TMP_PREFIX) and entry.is_file(follow_symlinks=False):
                        try:
                            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                                os.unlink(entry.path)
                                removed += 1
                        except FileNotFoundError:
                            pass
        except OSError as e:
            if not isinstance(e, FileNotFoundError):
                log.debug("could not sweep temporary files in %s: %s", directory, e)
            return
        if removed:
            log.warning("removed %d temporary file(s) left by an earlier crash in %s", removed, directory)

    def _discard(self, tmp: str) -> None:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("could not remove temporary file %s: %s (it is never read; delete it by hand)", tmp, e)

    def _write_tmp(self, path: str, data: bytes) -> str:
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        self._sweep(directory)
        tmp = os.path.join(directory, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
        except BaseException:
            self._discard(tmp)  # a full disk must not leave half a file behind
            raise
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
        with self._translated("write", key):
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
                    self._discard(tmp)
        return _etag(data)

    def delete(self, key: str) -> None:
        path = self.local_path(key)
        with self._translated("delete", key), self._locked(path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
