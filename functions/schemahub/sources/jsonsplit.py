"""Find a JSON array inside a response and return each element's exact source text.

Raw landing keeps every trade byte for byte as the exchange sent it, so we
cannot re-serialize parsed objects. The C scanner behind json.loads gives us
each element's parsed value and its end offset in one pass.
"""

from __future__ import annotations

import json
import re
from itertools import repeat
from typing import Any

_scan = json.JSONDecoder().scan_once
_ws = re.compile(r"[ \t\n\r]*")


class JSONShapeError(ValueError):
    """The document is not valid JSON, or lacks the array at the records path."""


def _skip(s: str, i: int) -> int:
    return _ws.match(s, i).end()


def _value(s: str, i: int) -> tuple[Any, int]:
    try:
        return _scan(s, i)
    except StopIteration as e:
        raise JSONShapeError(f"invalid JSON at offset {e.value}") from None
    except ValueError as e:  # bad escapes, invalid numbers
        raise JSONShapeError(str(e)) from None


def _array(s: str, i: int, out: list, spans: list) -> int:
    # Hot loop (1000 elements a page): compact JSON takes the fast path with
    # one C scan per element; whitespace falls back to the regex.
    scan, ws, add, add_span = _scan, _ws.match, out.append, spans.append
    i = ws(s, i + 1).end()
    if s.startswith("]", i):
        return i + 1
    try:
        while True:
            obj, end = scan(s, i)
            add(obj)
            add_span((i, end))
            c = s[end : end + 1]
            if c in _WS:
                end = ws(s, end).end()
                c = s[end : end + 1]
            if c == ",":
                i = end + 1
                if s[i : i + 1] in _WS:
                    i = ws(s, i).end()
            elif c == "]":
                return end + 1
            else:
                raise JSONShapeError(f"expected ',' or ']' at offset {end}")
    except StopIteration as e:
        raise JSONShapeError(f"invalid JSON at offset {e.value}") from None
    except ValueError as e:
        if isinstance(e, JSONShapeError):
            raise
        raise JSONShapeError(str(e)) from None


_WS = frozenset(" \t\n\r")


_NOT_COMPACT = (b" ", b"\n", b"\r", b"\t")


def split_compact_array(body: bytes) -> tuple[list, list[bytes]] | None:
    """Fast exact split of a compact top-level array of objects; None if not provably exact.

    With no whitespace anywhere and every element an object, each boundary
    between elements is exactly '},{', so the body holds at least n-1 of them,
    and exactly n-1 only if no string or nested value holds one too. Then the
    split points are precisely the element boundaries.
    """
    if len(body) < 2 or body[:1] != b"[" or body[-1:] != b"]" or any(c in body for c in _NOT_COMPACT):
        return None
    try:
        records = json.loads(body)
    except ValueError:
        return None
    if not records:
        return records, []
    if not all(map(isinstance, records, repeat(dict))) or body.count(b"},{") != len(records) - 1:
        return None
    return records, body[1:-1].replace(b"},{", b"}\n{").split(b"\n")


def split_records(text: str, path: tuple = ()) -> tuple[Any, list, list[tuple[int, int]]]:
    """Parse text; return (document, records, spans) for the array at path.

    path elements are object keys, or "*" for the first key whose value is an
    array (Kraken names its result key after the pair). The returned document
    holds the records list at that place.
    """
    records: list = []
    spans: list[tuple[int, int]] = []

    def walk(i: int, rest: tuple) -> tuple[Any, int]:
        i = _skip(s, i)
        if not rest:
            if not s.startswith("[", i):
                raise JSONShapeError(f"expected an array of records at offset {i}")
            end = _array(s, i, records, spans)
            return records, end
        if not s.startswith("{", i):
            return _value(s, i)
        want = rest[0]
        obj: dict = {}
        i = _skip(s, i + 1)
        if s.startswith("}", i):
            return obj, i + 1
        while True:
            key, i = _value(s, i)
            i = _skip(s, i)
            if not s.startswith(":", i):
                raise JSONShapeError(f"expected ':' at offset {i}")
            i = _skip(s, i + 1)
            descend = not spans and not records and (key == want or (want == "*" and s.startswith("[", i)))
            if descend:
                obj[key], i = walk(i, rest[1:])
            else:
                obj[key], i = _value(s, i)
            i = _skip(s, i)
            c = s[i : i + 1]
            if c == ",":
                i = _skip(s, i + 1)
            elif c == "}":
                return obj, i + 1
            else:
                raise JSONShapeError(f"expected ',' or '}}' at offset {i}")

    s = text
    doc, end = walk(0, tuple(path))
    if _skip(s, end) != len(s):
        raise JSONShapeError(f"unexpected data after the JSON document at offset {end}")
    if path and not isinstance(doc, dict):
        raise JSONShapeError(f"expected a JSON object with {'.'.join(map(str, path))}")
    return doc, records, spans
