"""Shared fixtures: a moto S3 server on loopback, stores, and the exchange simulator."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures" / "exchanges"
sys.path.insert(0, str(ROOT / "functions"))

# Never talk to real AWS, whatever the developer's shell has.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1",
)
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("SCHEMAHUB_STORAGE", None)
os.environ.pop("SCHEMAHUB_COINBASE_BASE_URL", None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serialized_moto_server(port: int):
    """moto's threaded server, processing one request at a time.

    Real S3 evaluates If-None-Match / If-Match atomically. moto checks and
    writes in separate steps, so two threads can both pass a check (a lost
    update seen in CI under load). One request at a time restores S3's
    atomicity while connections stay concurrent.
    """
    import threading

    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    class Serialized(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = DomainDispatcherApplication(create_backend_app)
            lock = threading.Lock()

            def serialized(environ, start_response):
                with lock:
                    return list(app(environ, start_response))

            self._server = make_server(self._ip_address, self._port, serialized, True, request_handler=MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    return Serialized(ip_address="127.0.0.1", port=port, verbose=False)


@pytest.fixture(scope="session")
def moto_endpoint():
    """moto in server mode: our code speaks real S3 HTTP to 127.0.0.1."""
    port = free_port()
    server = _serialized_moto_server(port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    old = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = url
    yield url
    if old is None:
        os.environ.pop("AWS_ENDPOINT_URL", None)
    server.stop()


@pytest.fixture
def s3_bucket(moto_endpoint):
    import boto3

    name = f"schemahub-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def store_uri(request, tmp_path):
    """A fresh store location for each adapter; the same tests must pass on both."""
    if request.param == "local":
        return str(tmp_path / "store")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/root"


@pytest.fixture
def store(store_uri):
    from schemahub.store import open_store

    return open_store(store_uri)


def coinbase_fixture_pages():
    """The real 2016 BTC-USD pages recorded by coinbase-pro-node: (index entry, body bytes, raw headers)."""
    import json

    d = FIXTURES / "coinbase_exchange" / "coinbase-pro-node_2017-06-06"
    wrappers = {1: json.loads((d / "pubclient_stream_trades.nock-wrapper.json").read_text()),
                2: json.loads((d / "pubclient_stream_trades_function.nock-wrapper.json").read_text())}
    out = []
    for run in (1, 2):
        for n, entry in enumerate(json.loads((d / f"run{run}_index.json").read_text())):
            body = (d / (entry["file"] or entry.get("identical_to"))).read_bytes()
            raw = wrappers[run][n].get("rawHeaders", []) if n < len(wrappers[run]) else []
            headers = list(zip(raw[::2], raw[1::2]))
            out.append((run, entry, body, headers))
    return out


@pytest.fixture
def make_source():
    """Build a Coinbase Source pointed at a simulator URL, with test-friendly limits."""
    from schemahub.ingest import make_source as _make

    def build(url: str, *, rate: float = 5000.0, timeout: float | None = None, attempts: int | None = None,
              page_size: int | None = None):
        src = _make("coinbase", base_url=url, rate=rate)
        if timeout is not None:
            import urllib3

            src.http.timeout = urllib3.Timeout(connect=timeout, read=timeout)
        if attempts is not None:
            src.http.max_attempts = attempts
        src.http.base_delay_s = 0.01
        src.http.max_delay_s = 0.05
        if page_size is not None:
            src.t = src.t.model_copy(update={"page_size": page_size})
        return src

    return build
