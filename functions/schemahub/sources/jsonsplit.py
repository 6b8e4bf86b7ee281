"""Find a JSON array inside a response and return each element's exact source text.

Raw landing keeps every trade byte for byte as the exchange sent it, so we
cannot re-serialize parsed objects. The C scanner behind json.loads gives us
each element's parsed value and its end offset in one pass.
"""

from __future__ import annotations

import json
import re
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
    i = _skip(s, i + 1)
    if s.startswith("]", i):
        return i + 1
    while True:
        obj, end = _value(s, i)
        out.append(obj)
        spans.append((i, end))
        i = _skip(s, end)
        c = s[i : i + 1]
        if c == ",":
            i = _skip(s, i + 1)
        elif c == "]":
            return i + 1
        else:
            raise JSONShapeError(f"expected ',' or ']' at offset {i}")


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
