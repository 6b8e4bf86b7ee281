"""The verbatim splitter: exact element bytes, for compact and pretty bodies, and adversarial strings."""

from __future__ import annotations

import json
import random

import pytest

from schemahub.sources.jsonsplit import JSONShapeError, split_compact_array, split_records


def _exact(body: bytes) -> list[bytes]:
    text = body.decode()
    _, _, spans = split_records(text)
    return [text[a:b].encode() for a, b in spans]


@pytest.mark.parametrize("body", [
    b'[{"a":"},{"},{"b":1}]',                       # separator inside a string
    b'[{"a":[{"x":1},{"y":2}]},{"b":1}]',           # nested separator
    b'[{"a":"x\\"},{\\"y"},{"b":2}]',                # escaped quotes around a separator
    b'[{"a":1},5,{"b":"},{"}]',                     # mixed element types
    b'[{"a":1}, {"b":2}]',                          # whitespace
    b'[]', b'[{"a":1}]',
])
def test_fast_path_is_exact_or_declines(body):
    fast = split_compact_array(body)
    exact = _exact(body)
    if fast is not None:
        assert fast[1] == exact
        assert fast[0] == json.loads(body)


def test_fast_path_matches_exact_split_on_random_documents():
    rng = random.Random(5)
    alphabet = ['}', '{', ',', '"', '\\"', 'a', ':', '[', ']', '},{']
    for _ in range(500):
        recs = [{"k": "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6))).replace('"', '\\"'),
                 "n": [{"x": 1}, {"y": 2}] if rng.random() < 0.2 else 1} for _ in range(rng.randint(0, 5))]
        body = json.dumps(recs, separators=(",", ":")).encode()
        fast = split_compact_array(body)
        if fast is not None:
            assert fast[1] == _exact(body), body


def test_records_path_and_wildcard_keys():
    text = '{"error":[],"result":{"XXBTZUSD":[["1.5","2",1.25,"b","l","",7]],"last":"123"}}'
    doc, records, spans = split_records(text, ("result", "*"))
    assert records == [["1.5", "2", 1.25, "b", "l", "", 7]]
    assert text[spans[0][0]:spans[0][1]] == '["1.5","2",1.25,"b","l","",7]'
    assert doc["result"]["last"] == "123" and doc["error"] == []


@pytest.mark.parametrize("bad", ['[{"a":1},', '[{"a":1}] x', '{"a":1}', '<html>', '[{"a":1}{"b":2}]'])
def test_broken_documents_raise(bad):
    with pytest.raises(JSONShapeError):
        split_records(bad)
