"""A damaged store: full disk, read-only folder, leftover temporary files, and S3 that is missing, down or refusing.

Ground truth is the operating system's and S3's documented behaviour: a real
tmpfs that fills up (ENOSPC) or is remounted read-only (EROFS) where this
process may mount, real S3 wire errors from moto's server and from a loopback
server answering like S3 (XML error bodies), and botocore's own credential chain.
"""

from __future__ import annotations

import errno
import http.server
import os
import socket
import subprocess
import threading
import time
import uuid

import pytest

from schemahub.errors import (
    InvalidKey,
    NotFound,
    PreconditionFailed,
    StoreAccessDenied,
    StoreError,
    StoreMissing,
    StoreUnavailable,
)
from schemahub.store import open_store
from schemahub.store.local import STALE_TMP_S, LocalStore
from tests.conftest import free_port

# ------------------------------------------------------------------ local folder: a real small disk


def _mount_tmpfs(path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def _umount(path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """A 64 KiB file system (tmpfs) when this process may mount; otherwise writes past 64 KiB fail with ENOSPC."""
    root = tmp_path / "disk"
    if _mount_tmpfs(root, "64k"):
        yield root, "tmpfs"
        _umount(root)
        return
    real_fsync = os.fsync

    def fsync(fd):  # the kernel reports a full disk at write-back time at the latest
        if os.fstat(fd).st_size > 48 * 1024:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    yield root, "injected"


def _tmp_files(root) -> list[str]:
    return [os.path.join(d, n) for d, _, names in os.walk(root) for n in names if n.startswith(".tmp-")]


def test_full_disk_names_the_key_keeps_earlier_objects_and_leaves_no_temporary_file(small_disk):
    root, _how = small_disk
    store = LocalStore(str(root))
    key1 = "raw/coinbase/BTC-USD/00000000000000000001.jsonl.gz"
    key2 = "raw/coinbase/BTC-USD/00000000000000001001.jsonl.gz"
    first = os.urandom(8 * 1024)
    store.put(key1, first, if_none_match=True)
    with pytest.raises(StoreUnavailable) as err:
        store.put(key2, os.urandom(200 * 1024), if_none_match=True)
    msg = str(err.value)
    assert key2 in msg and "No space left on device" in msg and "free space" in msg
    assert _tmp_files(root) == []  # no half-written file stays behind
    assert store.get(key1).data == first
    assert [o.key for o in store.list("raw/")] == [key1]
    with pytest.raises(NotFound):
        store.get(key2)
    # Compare-and-swap and plain writes fail the same way, and the old version survives.
    cp = "checkpoints/coinbase/BTC-USD.json"
    etag = store.put(cp, b'{"lo": 1, "hi": 1000}')
    with pytest.raises(StoreUnavailable, match="checkpoints/coinbase/BTC-USD.json"):
        store.put(cp, os.urandom(200 * 1024), if_match=etag)
    assert store.get(cp).data == b'{"lo": 1, "hi": 1000}' and _tmp_files(root) == []


@pytest.fixture
def read_only_folder(tmp_path, monkeypatch):
    """A store folder holding one object that then becomes read-only: EROFS (remounted tmpfs) or EACCES (chmod)."""
    root = tmp_path / "ro"
    key = "raw/coinbase/BTC-USD/00000000000000000001.jsonl.gz"
    mounted = os.geteuid() == 0 and _mount_tmpfs(root, "1m")
    LocalStore(str(root)).put(key, b"landed", if_none_match=True)
    if mounted:
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
        yield root, key, "read-only file system"
        _umount(root)
    elif os.geteuid() != 0:
        for d, _, _ in os.walk(root):
            os.chmod(d, 0o555)
        yield root, key, "Permission denied"
        for d, _, _ in os.walk(root):
            os.chmod(d, 0o755)
    else:  # root without mount: permissions do not bind root, so report EROFS the way the kernel would
        real_open = os.open

        def ro_open(path, flags, *a, **kw):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
            return real_open(path, flags, *a, **kw)

        monkeypatch.setattr(os, "open", ro_open)
        monkeypatch.setattr("builtins.open", lambda p, mode="r", *a, **kw: __import__("io").open(
            p, mode, *a, opener=lambda f, fl: ro_open(f, fl, 0o666), **kw))
        yield root, key, "Read-only file system"


def test_read_only_folder_is_access_denied_naming_the_key_and_reads_still_work(read_only_folder):
    root, key, why = read_only_folder
    store = LocalStore(str(root))
    assert store.get(key).data == b"landed"
    assert [o.key for o in store.list("raw/")] == [key]
    new = "raw/coinbase/BTC-USD/00000000000000000002.jsonl.gz"
    with pytest.raises(StoreAccessDenied) as err:
        store.put(new, b"x", if_none_match=True)
    assert new in str(err.value) and why.lower() in str(err.value).lower() and "--storage" in str(err.value)
    with pytest.raises(StoreAccessDenied, match="checkpoints/coinbase/BTC-USD.json"):
        store.put("checkpoints/coinbase/BTC-USD.json", b"{}")
    with pytest.raises(StoreAccessDenied, match=key):
        store.delete(key)
    assert store.get(key).data == b"landed"


def test_leftover_temporary_files_are_never_read_and_stale_ones_are_removed_by_the_next_write(tmp_path):
    store = LocalStore(str(tmp_path / "s"))
    folder = tmp_path / "s" / "raw" / "coinbase" / "BTC-USD"
    folder.mkdir(parents=True)
    stale = folder / f".tmp-{uuid.uuid4().hex}"  # a crash between write and link, two hours ago
    stale.write_bytes(b"half an obj")
    old = time.time() - 2 * STALE_TMP_S
    os.utime(stale, (old, old))
    fresh = folder / f".tmp-{uuid.uuid4().hex}"  # possibly another process's write in flight: keep it
    fresh.write_bytes(b"in flight")
    assert list(store.list("raw/")) == []
    key = "raw/coinbase/BTC-USD/00000000000000000001.jsonl.gz"
    store.put(key, b"landed", if_none_match=True)
    assert not stale.exists() and fresh.exists()
    assert [o.key for o in store.list("raw/coinbase/BTC-USD/")] == [key]
    # A stale temporary file in another folder is removed by the first write there.
    leases = tmp_path / "s" / "leases" / "coinbase"
    leases.mkdir(parents=True)
    stale2 = leases / f".tmp-{uuid.uuid4().hex}"
    stale2.write_bytes(b"{")
    os.utime(stale2, (old, old))
    store.put("leases/coinbase/BTC-USD.json", b"{}")
    assert not stale2.exists()


def _one_row_parquet() -> bytes:
    import datetime as dt
    from decimal import Decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    from schemahub.table import FILE_SCHEMA

    row = {}
    for f in FILE_SCHEMA:
        if pa.types.is_timestamp(f.type):
            row[f.name] = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
        elif pa.types.is_decimal(f.type):
            row[f.name] = Decimal("1.5")
        else:
            row[f.name] = "buy" if f.name == "side" else "1"
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist([row], schema=FILE_SCHEMA), sink)
    return sink.getvalue().to_pybytes()


def test_leftover_temporary_files_in_the_table_are_not_read_and_the_next_write_removes_them(tmp_path):
    from schemahub.query import connect, dataset

    store = LocalStore(str(tmp_path / "s"))
    part = "curated/exchange=coinbase/product_id=BTC-USD/date=2026-11-01"
    data = _one_row_parquet()
    folder = tmp_path / "s" / part
    folder.mkdir(parents=True)
    # A crash mid-write left a complete Parquet copy under a temporary name, and a torn one, a day ago.
    stale = [folder / f".tmp-{uuid.uuid4().hex}" for _ in range(2)]
    stale[0].write_bytes(data)
    stale[1].write_bytes(b"PAR1 torn")
    old = time.time() - 24 * 3600
    for f in stale:
        os.utime(f, (old, old))
    store.put(f"{part}/00000000000000000001.parquet", data)
    assert not any(f.exists() for f in stale)
    for f in stale:  # the same leftovers from a crash after this process's sweep: never read either
        f.write_bytes(data if f is stale[0] else b"PAR1 torn")
    assert connect(store).execute("SELECT count(*) FROM trades").fetchone()[0] == 1
    assert dataset(store).count_rows() == 1
    assert [o.key for o in store.list("curated/")] == [f"{part}/00000000000000000001.parquet"]


@pytest.mark.parametrize("key", ["raw/coinbase/.BTC-USD/00000000000000000001.jsonl.gz", "checkpoints/.x.json",
                                 ".hidden", "curated/exchange=coinbase/.product_id=X/date=2026-11-01/1.parquet"])
def test_keys_the_local_folder_would_hide_are_refused_on_both_adapters(store, key):
    # LocalStore.list skips dot folders: such an object would land but never reach the table.
    with pytest.raises(InvalidKey, match="starts with '.'|never start with '.'"):
        store.put(key, b"x")
    assert isinstance(InvalidKey("k"), ValueError) and isinstance(InvalidKey("k"), StoreError)


# ------------------------------------------------------------------ S3: missing, down, refusing, no credentials

def _s3_client(endpoint: str):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint,
                        config=Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=2, read_timeout=5))


def _every_operation(store):
    key = "checkpoints/coinbase/BTC-USD.json"
    return [
        ("read", key, lambda: store.get(key)),
        ("read", key, lambda: store.exists(key)),
        ("write", key, lambda: store.put(key, b"{}")),
        ("write", key, lambda: store.put(key, b"{}", if_none_match=True)),
        ("write", key, lambda: store.put(key, b"{}", if_match='"0123456789abcdef0123456789abcdef"')),
        ("list", "raw/", lambda: list(store.list("raw/"))),
        ("delete", key, lambda: store.delete(key)),
    ]


def test_s3_bucket_that_does_not_exist_is_named_on_every_operation(moto_endpoint):
    from schemahub.store.s3 import S3Store

    bucket = f"never-created-{uuid.uuid4().hex[:8]}"
    store = S3Store(bucket, "root", client=_s3_client(moto_endpoint))
    for op, key, call in _every_operation(store):
        with pytest.raises(StoreMissing) as err:
            call()
        msg = str(err.value)
        assert f"s3://{bucket}/root" in msg and f"cannot {op} {key!r}" in msg and "does not exist" in msg, msg


def test_s3_endpoint_that_is_down_is_unavailable_naming_the_endpoint(monkeypatch):
    port = free_port()  # nothing listens there: connection refused
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # boto3's own variable, honoured by the adapter
    store = open_store("s3://some-bucket/root")
    for op, key, call in _every_operation(store):
        with pytest.raises(StoreUnavailable) as err:
            call()
        msg = str(err.value)
        assert f"cannot {op} {key!r}" in msg and f"127.0.0.1:{port}" in msg and "AWS_ENDPOINT_URL" in msg, msg


def test_s3_without_credentials_says_how_to_give_them(monkeypatch, moto_endpoint, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # a session caches the credentials it found
    store = open_store("s3://some-bucket/root")
    for op, key, call in _every_operation(store):
        with pytest.raises(StoreUnavailable) as err:
            call()
        msg = str(err.value)
        assert f"cannot {op} {key!r}" in msg and "credentials" in msg and "AWS_ACCESS_KEY_ID" in msg, msg


class _S3Answers(http.server.BaseHTTPRequestHandler):
    """Answers every request the way S3 answers an error: a status and an XML body with Code and Message."""

    protocol_version = "HTTP/1.1"
    status, code, message = 403, "AccessDenied", "Access Denied"
    truncate = False

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.truncate:  # a 200 whose body stops short of its Content-Length
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.send_header("ETag", '"abc"')
            self.end_headers()
            self.wfile.write(b"only part")
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{self.code}</Code>'
                f"<Message>{self.message}</Message><RequestId>1</RequestId></Error>").encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_DELETE = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def s3_answering():
    servers = []

    def start(status: int, code: str, message: str = "", truncate: bool = False) -> str:
        handler = type("H", (_S3Answers,), {"status": status, "code": code, "message": message or code,
                                            "truncate": truncate})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.mark.parametrize("code,want", [("AccessDenied", "grant this identity"),
                                       ("InvalidAccessKeyId", "refresh them"),
                                       ("ExpiredToken", "refresh them")])
def test_s3_access_denied_names_the_key_and_the_permission_to_grant(s3_answering, code, want):
    from schemahub.store.s3 import S3Store

    store = S3Store("locked-bucket", "root", client=_s3_client(s3_answering(403, code)))
    actions = {"read": "s3:GetObject", "write": "s3:PutObject", "list": "s3:ListBucket", "delete": "s3:DeleteObject"}
    for op, key, call in _every_operation(store):
        with pytest.raises(StoreAccessDenied) as err:
            call()
        msg = str(err.value)
        assert f"s3://locked-bucket/root: cannot {op} {key!r}" in msg and code in msg and want in msg, msg
        if code == "AccessDenied":
            assert actions[op] in msg and "arn:aws:s3:::locked-bucket/root/*" in msg


def test_s3_server_errors_and_other_refusals_are_store_errors_naming_the_key(s3_answering):
    from schemahub.store.s3 import S3Store

    busy = S3Store("b", "", client=_s3_client(s3_answering(503, "SlowDown", "Please reduce your request rate.")))
    with pytest.raises(StoreUnavailable, match=r"cannot read 'k.json': S3 is unavailable or throttling \(SlowDown"):
        busy.get("k.json")
    odd = S3Store("b", "", client=_s3_client(s3_answering(400, "InvalidArgument", "bad header")))
    with pytest.raises(StoreError, match=r"s3://b: cannot write 'k.json': S3 answered 400 InvalidArgument: bad header"):
        odd.put("k.json", b"x")
    with pytest.raises(StoreError) as err:
        odd.put("k.json", b"x", if_none_match=True)
    assert not isinstance(err.value, PreconditionFailed)  # only 409/412 and their codes mean "the condition lost"
    cut = S3Store("b", "", client=_s3_client(s3_answering(200, "", truncate=True)))
    with pytest.raises(StoreUnavailable, match=r"cannot read 'k.json': cannot reach"):
        cut.get("k.json")
