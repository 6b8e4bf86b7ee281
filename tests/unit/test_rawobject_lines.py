"""The raw format's line kinds: JSON records (REST) or verbatim CSV rows (an archive file)."""

import gzip
import json

import pytest

from schemahub import rawobject
from schemahub.errors import DamagedObject


def _header(**kw):
    return rawobject.make_header(exchange="binance", product_id="BTC-USDT", symbol="BTCUSDT", start=10, end=12,
                                 count=2, min_id=11, max_id=12, fetched_at="2026-12-01T00:00:00Z", requests=[], **kw)


def test_a_json_header_has_no_lines_field_and_reads_as_json():
    h = _header()
    assert "lines" not in h
    header, lines = rawobject.decode(rawobject.encode(h, [b'{"id":11}', b'{"id":12}']), "k")
    assert header.lines == "json" and lines == [b'{"id":11}', b'{"id":12}']


def test_csv_lines_are_kept_verbatim_and_the_header_says_so():
    rows = [b"11,100.01,0.5,50.005,1735689600000000,True,True", b"12,100.02,0.1,10.002,1735689600000001,False,True"]
    h = _header(lines="csv", source={"file": "BTCUSDT-trades-2025-01-01.zip", "sha256": "ab" * 32, "rows": [1, 2]})
    header, lines = rawobject.decode(rawobject.encode(h, rows), "k")
    assert header.lines == "csv" and lines == rows
    assert header.doc["source"]["file"] == "BTCUSDT-trades-2025-01-01.zip"


def test_an_unknown_line_format_is_refused_on_write_and_on_read():
    with pytest.raises(ValueError):
        _header(lines="xml")
    doc = _header()
    doc["lines"] = "xml"
    data = gzip.compress((json.dumps(doc) + "\n").encode().replace(b'"count": 2', b'"count": 0'))
    with pytest.raises(DamagedObject, match="line format"):
        rawobject.read_header(data, "raw/x")
