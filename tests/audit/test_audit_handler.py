"""The daily audit Lambda's handler, called directly on a local store (the IAM-enforced run is tests/aws)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from schemahub.errors import SchemahubError
from schemahub.store.local import LocalStore


def _context():
    return SimpleNamespace(function_name="AuditFunction", memory_limit_in_mb=2048, aws_request_id="r-1",
                           invoked_function_arn="arn:aws:lambda:eu-west-1:123456789012:function:AuditFunction")


def test_a_product_the_daily_audit_cannot_audit_fails_the_lambda_so_its_alarm_fires(tmp_path, monkeypatch):
    # Raw objects of an exchange whose mapping is gone: that product cannot be audited. MissingTrades counts
    # only lost and unexplained ids (0 here), so unless the run fails, no alarm would say a product went unaudited.
    from schemahub import rawobject
    from schemahub.layout import raw_key

    store = LocalStore(str(tmp_path / "store"))
    header = rawobject.make_header(exchange="gone", product_id="BTC-USD", symbol="BTC-USD", start=0, end=1, count=0,
                                   min_id=None, max_id=None, fetched_at="2026-12-01T00:00:00Z", requests=[])
    store.put(raw_key("gone", "BTC-USD", 0), rawobject.encode(header, []))
    monkeypatch.setenv("SCHEMAHUB_STORAGE", str(tmp_path / "store"))
    from handlers.audit import handler

    with pytest.raises(SchemahubError, match="gone/BTC-USD"):
        handler({"time": "2026-12-02T01:30:00Z"}, _context())


def test_the_cli_exits_1_naming_a_product_it_could_not_audit(tmp_path, capsys):
    # Not 3 ("an unexplained hole or a duplicate"): nothing was found missing; the product was not audited.
    from schemahub import rawobject
    from schemahub.cli import main
    from schemahub.layout import raw_key

    store = LocalStore(str(tmp_path / "store"))
    header = rawobject.make_header(exchange="gone", product_id="BTC-USD", symbol="BTC-USD", start=0, end=1, count=0,
                                   min_id=None, max_id=None, fetched_at="2026-12-01T00:00:00Z", requests=[])
    store.put(raw_key("gone", "BTC-USD", 0), rawobject.encode(header, []))
    assert main(["audit", "--storage", str(tmp_path / "store")]) == 1
    assert "gone/BTC-USD: not audited: unknown exchange 'gone'" in capsys.readouterr().out
