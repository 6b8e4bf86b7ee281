"""YAML table mappings: typed with pydantic, compiled once into vectorized pyarrow steps.

A mapping says, for each record-level column, where its value is in a raw
trade line (a top-level key, or an array index) and how to convert it.
Values are extracted as their exact source text with RE2 (no float ever
sees a price), validated by pattern, then cast. Rows that fail any check are
returned with a reason for quarantine; the rest proceed.

Key matches are anchored on '{' or ',' before the opening quote: inside a
JSON string every quote is escaped, so such a match is always a real key.
Raw lines were validated as JSON when they were landed.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Sourced(_Strict):
    path: str | int = Field(description="key, nested key 'a.b', or array index for array rows")
    optional: bool = False

    @field_validator("path")
    @classmethod
    def _path(cls, v):
        if isinstance(v, bool):
            raise ValueError("must be a key name or an array index")
        if isinstance(v, int):
            if not 0 <= v < 64:
                raise ValueError("array index must be 0..63")
        else:
            parts = v.split(".")
            if len(parts) > 2 or not all(_KEY.match(p) for p in parts):
                raise ValueError(f"key {v!r}: use letters, digits, '_' or '-', nested at most one level ('a.b')")
        return v


# How a time is written on the wire; one list for the JSON and the CSV columns.
TimeFormat = Literal["rfc3339", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns", "epoch_ms_or_us", "float_s"]


class StringField(_Sourced):
    type: Literal["string"]


class DecimalField(_Sourced):
    type: Literal["decimal"]


class TimeField(_Sourced):
    type: Literal["time"]
    format: TimeFormat = Field(
        description="epoch_ms_or_us: 13 digits are ms, 16 digits are µs (Binance sends µs on request, ms by default)"
    )


class EnumField(_Sourced):
    type: Literal["enum"]
    map: dict[str, str] = Field(min_length=1)

    @field_validator("map", mode="before")
    @classmethod
    def _keys(cls, v):
        # YAML reads true/false keys as booleans; the wire text is 'true'/'false'.
        if isinstance(v, dict):
            return {(str(k).lower() if isinstance(k, bool) else str(k)): val for k, val in v.items()}
        return v


class ConstField(_Strict):
    type: Literal["const"]
    value: str


Column = Annotated[Union[StringField, DecimalField, TimeField, EnumField, ConstField], Field(discriminator="type")]

REQUIRED = ("trade_id", "price", "size", "side", "trade_time")


class TableMapping(_Strict):
    columns: dict[str, Column]

    @model_validator(mode="after")
    def _complete(self):
        _check_columns(self.columns)
        return self


def _check_columns(columns: dict) -> None:
    """The rules every table mapping obeys, whatever its rows are (JSON records or CSV rows)."""
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise ValueError(f"columns must map {', '.join(missing)}")
    unknown = [c for c in columns if c not in REQUIRED]
    if unknown:
        raise ValueError(f"unknown column(s) {', '.join(unknown)}; record-level columns are {', '.join(REQUIRED)}")
    side = columns["side"]
    targets = set(side.map.values()) if side.type == "enum" else {side.value} if side.type == "const" else None
    if targets is None or not targets <= {"buy", "sell", "unknown"}:
        raise ValueError("side must be an enum or const whose values are buy, sell or unknown")
    if columns["trade_time"].type in ("string", "decimal", "enum"):
        raise ValueError("trade_time must be of type time")
    for name in ("price", "size"):
        if columns[name].type != "decimal":
            raise ValueError(f"{name} must be of type decimal")


class _Indexed(_Strict):
    column: int = Field(description="the value's column in a CSV row; 0 is the first")
    optional: bool = False

    @field_validator("column", mode="before")
    @classmethod
    def _column(cls, v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError("must be a column index (0 is the first column)")
        if not 0 <= v < 64:
            raise ValueError("column index must be 0..63")
        return v


class CsvStringField(_Indexed):
    type: Literal["string"]


class CsvDecimalField(_Indexed):
    type: Literal["decimal"]


class CsvTimeField(_Indexed):
    type: Literal["time"]
    format: TimeFormat = Field(
        description="epoch_ms_or_us: 13 digits are ms, 16 digits are µs (Binance's archive switched on 2025-01-01)"
    )


class CsvEnumField(_Indexed):
    type: Literal["enum"]
    map: dict[str, str] = Field(min_length=1, description="the cell's text exactly as the file prints it -> value")

    @field_validator("map", mode="before")
    @classmethod
    def _keys(cls, v):
        # A CSV cell is text: YAML's True/true/yes keys are booleans, which would hide the file's spelling.
        if isinstance(v, dict):
            for k in v:
                if not isinstance(k, str):
                    raise ValueError(f"key {k!r} is not text: write it in quotes exactly as the file prints it "
                                     f"(e.g. \"True\")")
        return v


CsvColumn = Annotated[Union[CsvStringField, CsvDecimalField, CsvTimeField, CsvEnumField, ConstField],
                      Field(discriminator="type")]


class CsvTableMapping(_Strict):
    """The unified columns from an archive's CSV rows, read by column index (raw objects whose header says
    `"lines": "csv"`). Every row must have `width` columns; a row with another count is quarantined. A first line
    whose decimal and time cells are names (a header row, e.g. `id,price,qty,...`) is not a trade: it is dropped."""

    width: int = Field(ge=1, le=64, description="columns in every row of the file")
    columns: dict[str, CsvColumn]

    @model_validator(mode="after")
    def _complete(self):
        _check_columns(self.columns)
        for name, col in self.columns.items():
            if not isinstance(col, ConstField) and col.column >= self.width:
                raise ValueError(f"{name}: column {col.column} is past the row's end (rows have {self.width} columns, "
                                 f"0..{self.width - 1})")
        return self


# ------------------------------------------------------------------ compile

_VAL = r'(?P<v>"(?:[^"\\]|\\.)*"|[^,}\]\s]+)'
_ELEM = r'(?:"(?:[^"\\]|\\.)*"|[^,\]"\s]*)'
_DECIMAL_BARE = r"-?[0-9]{1,26}(?:\.[0-9]{1,12})?"
_DECIMAL = "^" + _DECIMAL_BARE + "$"
_TOO_PRECISE = r"^-?[0-9]+\.[0-9]{13,}$"
_RFC3339_US_BARE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?Z"
_RFC3339_US = "^" + _RFC3339_US_BARE + "$"
_FLOAT_S = r"^(?P<secs>[0-9]{1,12})(?:\.(?P<frac>[0-9]{0,12}))?$"
_EPOCH_SCALE = {"epoch_s": 1_000_000, "epoch_ms": 1_000, "epoch_us": 1, "epoch_ns": -1_000}


def all_match(text, bare: str) -> bool:
    """Whether every value of text (a StringArray) matches the anchorless pattern bare whole, none null.

    One RE2 pass over the values joined by newlines, instead of one match per value (several times
    cheaper). bare must not match a newline; a value holding one can still pass here (its pieces each
    match), so a caller follows a True with a strict cast, which refuses it, before trusting the values.
    False means "look row by row", never "some value is bad".
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(text)
    if n == 0 or text.null_count:
        return False
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, n], pa.int32()), text), "\n")
    return bool(pc.match_substring_regex(joined, r"\A(?:" + bare + r"\n)*" + bare + r"\z")[0].as_py())


class Compiled:
    """A mapping compiled to pyarrow compute steps; apply() converts a whole object's lines at once."""

    def __init__(self, mapping: TableMapping) -> None:
        self.mapping = mapping
        self.patterns = {name: _pattern(col.path) for name, col in mapping.columns.items() if not isinstance(col, ConstField)}
        self._paths = [c.path for c in mapping.columns.values() if not isinstance(c, ConstField)]

    def _read(self, n: int, body: bytes):
        """Parse object rows with Arrow's JSON reader; None where only the source text is exact.

        The read schema comes from this object alone (its first line, mapped keys only), never from an
        earlier object: no state from one raw object changes how another is read.
        """
        schema = _first_line_schema(body, self._paths)
        if schema is not None:
            parsed = _read_objects(n, body, schema)
            if parsed is not None:
                return parsed
        return _read_objects(n, body, None)

    def apply(self, lines, body: bytes | None = None):
        """lines (pa.StringArray, and the same lines as one buffer) -> (columns, _Bad with reasons per row)."""
        import pyarrow as pa

        n = len(lines)
        state = _Bad(n)
        out: dict = {}
        parsed = self._read(n, body) if body is not None else None
        src = None  # the regex reader, built only if some field is not exact from Arrow
        for name, col in self.mapping.columns.items():
            if isinstance(col, ConstField):
                out[name] = pa.array([col.value] * n, pa.string()) if n else pa.array([], pa.string())
                continue
            text, ints = _exact_text(parsed, col.path, n)
            if ints is not None:
                state.ints[name] = ints
            if text is None:
                if src is None:
                    src = _TextSource(lines.array if hasattr(lines, "array") else lines)
                    for cond, reason in src.line_problems():
                        state.mark(cond, "line", reason, src.lines)
                text, problems = src.extract(col.path, self.patterns[name])
                for cond, reason in problems:
                    state.mark(cond, name, reason, text)
            _convert(name, col, text, state, out)
        return out, state


def _convert(name: str, col, text, state, out: dict) -> None:
    """One mapped field's exact source text -> its typed column in out; bad values marked in state."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from schemahub.table import DECIMAL, TIMESTAMP

    state.texts[name] = text
    if not col.optional:
        state.mark(text.is_null(), name, "missing", text)
    if col.type == "string":
        out[name] = text
    elif col.type == "decimal":
        if all_match(text, _DECIMAL_BARE):
            try:
                out[name] = pc.cast(text, DECIMAL)  # every value is a plain decimal: the common case
                return
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass  # a value holding a newline passed the joined check: the row-by-row path decides
        fine = pc.match_substring_regex(text, _DECIMAL)
        if not pc.all(pc.fill_null(fine, True)).as_py():
            state.mark(pc.match_substring_regex(text, _TOO_PRECISE), name, "more than 12 decimals (never rounded)", text)
            state.mark(pc.invert(fine), name, "not a plain decimal number", text)
            safe = pc.if_else(pc.fill_null(fine, False), text, "0")
            out[name] = pc.if_else(pc.fill_null(fine, False), pc.cast(safe, DECIMAL), pa.scalar(None, DECIMAL))
        else:
            out[name] = pc.cast(text, DECIMAL)  # every value is a plain decimal (or null)
    elif col.type == "enum":
        keys = pa.array(list(col.map.keys()), pa.string())
        idx = pc.index_in(text, value_set=keys)
        state.mark(pc.and_(text.is_valid(), idx.is_null()), name, "unknown value", text)
        out[name] = pc.take(pa.array(list(col.map.values()), pa.string()), idx)
    elif col.type == "time":
        micros, bad = _time_micros(text, col.format)
        state.mark(bad, name, f"not a {col.format} time", text)
        out[name] = pc.cast(micros, TIMESTAMP)


class _Bad:
    """First failure per row: reason, field and the offending text (null where the row is good)."""

    def __init__(self, n: int) -> None:
        import pyarrow as pa

        self.reason = pa.nulls(n, pa.string())
        self.field = pa.nulls(n, pa.string())
        self.value = pa.nulls(n, pa.string())
        self.texts: dict = {}  # each mapped field's source text, for later value checks
        self.ints: dict = {}   # fields read as JSON integers: their int64 values (the text is these, printed)

    def mark(self, cond, field: str, reason, text) -> None:
        """Record reason (text, or one per row) for rows where cond holds and no earlier reason does."""
        import pyarrow.compute as pc

        new = pc.and_(pc.fill_null(cond, False), self.reason.is_null())
        if not pc.any(new).as_py():
            return
        self.reason = pc.if_else(new, reason, self.reason)
        self.field = pc.if_else(new, field, self.field)
        self.value = pc.if_else(new, text, self.value)

    mark_each = mark


def _read_objects(n: int, body: bytes, schema):
    """Parse object rows with Arrow's JSON reader; None if rows are not objects of stable types.

    With a schema, only its fields are read and any other type fails (then the caller infers).
    """
    import pyarrow as pa
    import pyarrow.json as pj

    if not body or body[:1] != b"{":
        return None
    parse = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore") if schema is not None else None
    try:
        table = pj.read_json(pa.BufferReader(body), read_options=pj.ReadOptions(block_size=1 << 26), parse_options=parse)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None  # e.g. a field that is a number in one row and a string in another
    return table if table.num_rows == n else None


def _exact_text(parsed, path, n: int):
    """(a field's exact text from the parsed rows, or None where only the regex path is exact (floats);
    its int64 values when it was read as JSON integers, else None)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if parsed is None or isinstance(path, int):
        return None, None
    head, _, sub = path.partition(".")
    if head not in parsed.column_names:
        return pa.nulls(n, pa.string()), None
    col = parsed[head].combine_chunks()
    if sub:
        if not pa.types.is_struct(col.type):
            return None, None
        if col.type.get_field_index(sub) < 0:
            return pa.nulls(n, pa.string()), None
        col = pc.struct_field(col, sub)
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return col.cast(pa.string()), None
    if pa.types.is_signed_integer(t):
        return pc.cast(col, pa.string()), pc.cast(col, pa.int64())  # integers print exactly
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return pc.cast(col, pa.string()), None
    if pa.types.is_null(t):
        return pa.nulls(n, pa.string()), None
    return None, None  # doubles (or nested values): take the source text instead


def _first_line_schema(body: bytes | None, paths: list):
    """An explicit read schema for the mapped keys, from this object's first line alone.

    None (infer the whole object) if the rows are not objects, or the first line lacks a mapped key, repeats
    a key, or holds a mapped value as anything but a string, an int64 integer or a boolean: a schema must never
    hide a key or a sub-key that a later line of the same object has. The line is read with json (one line, no
    per-row cost); its types are the ones Arrow's reader gives the same values.
    """
    import json

    import pyarrow as pa

    if not body or body[:1] != b"{" or any(isinstance(p, int) for p in paths):
        return None
    first = body[: body.find(b"\n") + 1 or len(body)]
    try:
        row = json.loads(first, object_pairs_hook=_unique_keys)
    except (ValueError, UnicodeDecodeError, _RepeatedKey, RecursionError):  # nested past Python's limit: Arrow infers
        return None
    if not isinstance(row, dict):
        return None
    fields: dict = {}
    for path in paths:
        head, _, sub = path.partition(".")
        if head not in row:
            return None
        if sub:
            inner = row[head]
            if not isinstance(inner, dict) or sub not in inner:
                return None
            st = _json_type(inner[sub])
            if st is None:
                return None
            prev = fields.get(head)
            if prev is not None and not pa.types.is_struct(prev):
                return None
            subs = {} if prev is None else {f.name: f.type for f in prev}
            subs[sub] = st
            fields[head] = pa.struct(list(subs.items()))
        else:
            t = _json_type(row[head])
            if t is None or (head in fields and fields[head] != t):
                return None
            fields[head] = t
    return pa.schema(list(fields.items()))


class _RepeatedKey(Exception):
    pass


def _unique_keys(pairs):
    d = dict(pairs)
    if len(d) != len(pairs):
        raise _RepeatedKey
    return d


def _json_type(value):
    """Arrow's type for one JSON scalar that reads back exactly (string, int64, bool), else None."""
    import pyarrow as pa

    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64() if -(2**63) <= value < 2**63 else None
    if isinstance(value, str):
        return pa.string()
    return None


_NESTED = "\x01nested"  # stands for a collapsed nested value; cannot occur unquoted in JSON
_INNERMOST = r"[{\[][^{}\[\]]*[}\]]"
# A line in which some string value holds a bracket: its structure cannot be told from its characters.
_BRACKET_IN_STRING = r'^(?:[^"]|"(?:[^"\\{}\[\]]|\\.)*")*"(?:[^"\\{}\[\]]|\\.)*[{}\[\]]'
_ESCAPED_KEY = r'[{,]\s*"(?:[^"\\]|\\.)*\\u[0-9A-Fa-f]{4}(?:[^"\\]|\\.)*"\s*:'


def _key(name: str) -> str:
    return r'[{,]\s*"' + name + r'"\s*:'


class _TextSource:
    """Field text read from the source lines with RE2, never from a nested value.

    Lines with nested values (objects or arrays inside the row) are first reduced to their top level:
    innermost structures are collapsed to a placeholder until only the row's own brackets remain, so a
    key or an array index can only match at the top. A key that appears twice (a duplicate JSON key,
    which parsers read differently) and a line whose keys use \\u escapes are reported, never read.
    """

    def __init__(self, lines) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        self.lines = lines
        self.top = lines
        self.unsafe = None
        opens = pc.add(pc.count_substring(lines, "{"), pc.count_substring(lines, "["))
        nested = pc.fill_null(pc.greater(opens, 1), False)
        if pc.any(nested).as_py():
            self.unsafe = pc.and_(nested, pc.fill_null(pc.match_substring_regex(lines, _BRACKET_IN_STRING), False))
            work = pc.and_(nested, pc.invert(self.unsafe))
            top = lines
            for _ in range(64):
                if not pc.any(work).as_py():
                    break
                top = pc.if_else(work, pc.replace_substring_regex(top, _INNERMOST, _NESTED), top)
                opens = pc.add(pc.count_substring(top, "{"), pc.count_substring(top, "["))
                work = pc.and_(work, pc.greater(opens, 1))
            self.top = pc.if_else(self.unsafe, pa.scalar(None, pa.string()), top)
        self.escaped = None
        if pc.any(pc.fill_null(pc.match_substring(lines, "\\u"), False)).as_py():
            self.escaped = pc.fill_null(pc.match_substring_regex(lines, _ESCAPED_KEY), False)

    def line_problems(self):
        out = []
        if self.unsafe is not None:
            out.append((self.unsafe, "a string value holds a bracket in a line with nested values: fields cannot be located safely"))
        if self.escaped is not None:
            out.append((self.escaped, "a key is written with \\u escapes: parsers may read it differently"))
        return out

    def extract(self, path, pattern: str):
        """(text, [(mask, reason)]) for one mapped path."""
        import pyarrow as pa
        import pyarrow.compute as pc

        problems = []
        if isinstance(path, int):
            text, nested = _extract(self.top, pattern)
        else:
            head, _, sub = path.partition(".")
            count = pc.count_substring_regex(self.top, _key(head))
            dup = pc.fill_null(pc.greater(count, 1), False)
            problems.append((dup, f"key {head!r} appears more than once: a duplicate key, which parsers read differently"))
            if sub:
                # The flat inner object is read from the line itself: safe when the key occurs once in all of
                # the line (so the match is the top-level one) and the sub-key once inside it.
                everywhere = pc.count_substring_regex(self.lines, _key(head))
                deep = pc.and_(pc.fill_null(pc.greater(everywhere, 1), False), pc.invert(dup))
                problems.append((deep, f"key {head!r} also appears in a nested value: not read from there"))
                inner = r'[{,]\s*"' + head + r'"\s*:\s*\{[^{}]*?[{,]\s*"' + sub + r'"\s*:[^{}]*,\s*"' + sub + r'"\s*:'
                problems.append((pc.fill_null(pc.match_substring_regex(self.lines, inner), False),
                                 f"key {sub!r} appears more than once in {head!r}: a duplicate key"))
                top_once = pc.fill_null(pc.equal(count, 1), False)
                text, nested = _extract(pc.if_else(pc.and_(top_once, pc.invert(deep)), self.lines,
                                                   pa.scalar(None, pa.string())), pattern)
            else:
                text, nested = _extract(pc.if_else(dup, pa.scalar(None, pa.string()), self.top), pattern)
        problems.append((nested, "a nested value, not a scalar"))
        return text, problems


def _pattern(path: str | int) -> str:
    if isinstance(path, int):
        return r"^\[\s*(?:" + _ELEM + r"\s*,\s*){" + str(path) + "}" + _VAL
    head, _, sub = path.partition(".")
    if sub:  # one level down, inside a flat inner object
        # The sub-key opens the inner object or follows a comma in it; a brace inside a string stops the
        # match, so the value is reported missing, never taken from the wrong place.
        return r'[{,]\s*"' + head + r'"\s*:\s*\{(?:[^{}]*?,)?\s*"' + sub + r'"\s*:\s*' + _VAL
    return r'[{,]\s*"' + path + r'"\s*:\s*' + _VAL


def _extract(lines, pattern: str):
    """(the value's text with quotes removed, or null if the key is absent or the value is JSON null;
    mask of rows whose value is a collapsed nested value)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    m = pc.extract_regex(lines, pattern)
    v = pc.if_else(m.is_valid(), m.field("v"), pa.scalar(None, pa.string()))
    nested = pc.fill_null(pc.equal(v, _NESTED), False)
    quoted = pc.starts_with(v, '"')
    v = pc.if_else(quoted, pc.utf8_slice_codeunits(v, 1, -1), v)
    v = pc.if_else(pc.or_(nested, pc.and_(pc.invert(quoted), pc.equal(v, "null"))), pa.scalar(None, pa.string()), v)
    return v, nested


def _time_micros(text, fmt: str):
    """Exact integer microseconds since the epoch from text; (int64 array, bad mask). Sub-µs digits are truncated.

    Never raises for a bad value: an impossible date (2026-02-30), an hour 24 or a number too long for
    its unit marks its row bad. Plausibility (not before 2009, not in the future) is the caller's check.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from schemahub.table import TIMESTAMP

    if fmt == "rfc3339":
        if all_match(text, _RFC3339_US_BARE):
            try:  # every value plain, none null: one cast (strict: an impossible date is refused)
                return pc.cast(pc.cast(text, TIMESTAMP), pa.int64()), pa.repeat(pa.scalar(False), len(text))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return _rfc3339_checked(text)
        # Common case: at most 6 fraction digits, which Arrow casts exactly (and strictly: it refuses
        # impossible dates, so a refusal sends the object to the checked path below).
        plain = pc.match_substring_regex(text, _RFC3339_US)
        if pc.all(pc.fill_null(plain, True)).as_py():
            ok = pc.fill_null(plain, False)
            try:
                ts = pc.cast(pc.if_else(ok, text, "1970-01-01T00:00:00Z"), TIMESTAMP)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return _rfc3339_checked(text)
            micros = pc.cast(ts, pa.int64())
            bad = pc.and_(text.is_valid(), pc.invert(ok))
            return pc.if_else(ok, micros, pa.scalar(None, pa.int64())), bad
        return _rfc3339_checked(text)
    if fmt == "float_s":
        m = pc.extract_regex(text, _FLOAT_S)
        ok = m.is_valid()
        secs = pc.cast(pc.if_else(ok, m.field("secs"), "0"), pa.int64())
        frac = pc.utf8_rpad(pc.utf8_slice_codeunits(pc.fill_null(m.field("frac"), ""), 0, 6), width=6, padding="0")
        micros = pc.add(pc.multiply(secs, 1_000_000), pc.cast(pc.if_else(ok, frac, "0"), pa.int64()))
    elif fmt == "epoch_ms_or_us":
        fast = _epoch_ms_or_us_uniform(text)
        if fast is not None:
            return fast
        # Unambiguous by length for 2001..2286: ms have 13 digits, µs 16; anything else is quarantined.
        ms = pc.match_substring_regex(text, r"^[0-9]{13}$")
        ok = pc.or_(ms, pc.match_substring_regex(text, r"^[0-9]{16}$"))
        raw = pc.cast(pc.if_else(pc.fill_null(ok, False), text, "0"), pa.int64())
        micros = pc.if_else(pc.fill_null(ms, False), pc.multiply(raw, 1000), raw)
    else:
        # At most as many digits as fit int64 microseconds, so no multiplication can overflow.
        ok = pc.match_substring_regex(text, r"^[0-9]{1,%d}$" % _EPOCH_DIGITS[fmt])
        if fmt == "epoch_ns":
            ok = pc.and_(ok, pc.or_(pc.less(pc.utf8_length(text), 19), pc.less_equal(text, "9223372036854775807")))
        raw = pc.cast(pc.if_else(pc.fill_null(ok, False), text, "0"), pa.int64())
        scale = _EPOCH_SCALE[fmt]
        micros = pc.multiply(raw, scale) if scale > 0 else pc.divide(raw, -scale)
    ok = pc.fill_null(ok, False)
    bad = pc.and_(text.is_valid(), pc.invert(ok))
    return pc.if_else(ok, micros, pa.scalar(None, pa.int64())), bad


def _epoch_ms_or_us_uniform(text):
    """(µs, no row bad) when every value is 13 digits (ms) or every value is 16 (µs), none with a leading zero,
    else None (the regex path decides, row by row). An archive file prints one unit throughout.

    Cheap checks instead of two regex passes: one length (min = max = 13 or 16), an int64 cast, and the
    values within [10**(len-1), 10**len): a sign, a space or a leading zero cannot pass (a sign or a leading
    zero leaves fewer digits than the length; a space fails the cast)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(text) == text.null_count:
        return None
    lo, hi = (v.as_py() for v in pc.min_max(pc.binary_length(text)).values())
    if lo != hi or lo not in (13, 16):
        return None
    try:
        raw = pc.cast(text, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    vlo, vhi = (v.as_py() for v in pc.min_max(raw).values())
    if vlo < 10 ** (lo - 1) or vhi >= 10 ** lo:
        return None
    micros = pc.multiply(raw, 1000) if lo == 13 else raw
    return micros, pa.repeat(pa.scalar(False), len(text))


_EPOCH_DIGITS = {"epoch_s": 12, "epoch_ms": 15, "epoch_us": 18, "epoch_ns": 19}
_RFC3339_PARTS = (r"^(?P<y>[0-9]{4})-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})T(?P<h>[0-9]{2}):(?P<mi>[0-9]{2}):(?P<s>[0-9]{2})"
                  r"(?:\.(?P<frac>[0-9]{1,9}))?(?:Z|\+00:00)$")


def _rfc3339_checked(text):
    """RFC 3339 UTC text -> µs by calendar arithmetic, every field range-checked (days per month, leap years)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    m = pc.extract_regex(text, _RFC3339_PARTS)
    found = m.is_valid()

    def part(name):
        return pc.cast(pc.if_else(found, m.field(name), "0"), pa.int64())

    y, mo, d, h, mi, s = (part(k) for k in ("y", "mo", "d", "h", "mi", "s"))
    leap = pc.and_(pc.equal(pc.bit_wise_and(y, 3), 0),
                   pc.or_(pc.not_equal(pc.subtract(y, pc.multiply(pc.divide(y, 100), 100)), 0),
                          pc.equal(pc.subtract(y, pc.multiply(pc.divide(y, 400), 400)), 0)))
    month_days = pa.array([31, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], pa.int64())  # index 0 unused
    dim = pc.add(pc.take(month_days, pc.max_element_wise(pc.min_element_wise(mo, 12), 0)),
                 pc.cast(pc.and_(leap, pc.equal(mo, 2)), pa.int64()))
    ok = pc.and_(found, pc.and_(pc.and_(pc.greater_equal(mo, 1), pc.less_equal(mo, 12)),
                                pc.and_(pc.greater_equal(d, 1), pc.less_equal(d, dim))))
    ok = pc.and_(ok, pc.and_(pc.less_equal(h, 23), pc.and_(pc.less_equal(mi, 59), pc.less_equal(s, 59))))
    # days_from_civil (H. Hinnant), on int64 arrays; exact for every year 0000..9999.
    yy = pc.subtract(y, pc.cast(pc.less_equal(mo, 2), pa.int64()))
    era = pc.divide(yy, 400)  # yy >= -1: only year 0000 in Jan/Feb gives -1, floored below
    era = pc.if_else(pc.less(yy, 0), -1, era)
    yoe = pc.subtract(yy, pc.multiply(era, 400))
    mp = pc.if_else(pc.greater(mo, 2), pc.subtract(mo, 3), pc.add(mo, 9))
    doy = pc.add(pc.divide(pc.add(pc.multiply(mp, 153), 2), 5), pc.subtract(d, 1))
    doe = pc.add(pc.add(pc.multiply(yoe, 365), pc.divide(yoe, 4)), pc.subtract(doy, pc.divide(yoe, 100)))
    days = pc.add(pc.multiply(era, 146097), pc.subtract(doe, 719468))
    secs = pc.add(pc.multiply(days, 86400), pc.add(pc.multiply(h, 3600), pc.add(pc.multiply(mi, 60), s)))
    frac = pc.utf8_rpad(pc.utf8_slice_codeunits(pc.fill_null(m.field("frac"), ""), 0, 6), width=6, padding="0")
    micros = pc.add(pc.multiply(secs, 1_000_000), pc.cast(pc.if_else(found, frac, "0"), pa.int64()))
    ok = pc.fill_null(ok, False)
    bad = pc.and_(text.is_valid(), pc.invert(ok))
    return pc.if_else(ok, micros, pa.scalar(None, pa.int64())), bad


# A header row's decimal and time cells are names (id,price,qty,quoteQty,time,...), never numbers.
_NAME_CELL = re.compile(rb'^\s*"?[A-Za-z_][A-Za-z0-9_ ]*"?\s*$')


class CompiledCsv:
    """A CSV mapping compiled to pyarrow steps: rows read by pyarrow.csv, every cell as text, then converted by
    the same steps as a JSON mapping's fields (exact decimals from the text, quarantine with reasons).

    The rows are read verbatim: no quoting, no type inference, no empty line skipped, so row i is line i. A
    row with another number of columns than the mapping's width is quarantined; the others proceed.
    """

    lines = "csv"

    def __init__(self, mapping: CsvTableMapping) -> None:
        self.mapping = mapping
        self.width = mapping.width
        self.names = [f"c{i}" for i in range(self.width)]
        self._used = sorted({c.column for c in mapping.columns.values() if not isinstance(c, ConstField)})
        self._named = sorted({c.column for c in mapping.columns.values() if c.type in ("decimal", "time")})
        tid = mapping.columns["trade_id"]
        self._id = None if isinstance(tid, ConstField) else tid.column

    def header_row(self, body: bytes) -> int:
        """The length in bytes (with its newline) of a header row that opens body, else 0.

        A header row names the columns: its decimal and time cells are names, where a trade has numbers."""
        end = body.find(b"\n")
        first = body if end < 0 else body[:end]
        cells = first.rstrip(b"\r").split(b",")
        if len(cells) != self.width or not all(_NAME_CELL.match(cells[i]) for i in self._named):
            return 0
        if self._id is not None and cells[self._id].strip().isdigit():
            return 0  # a trade id: a damaged trade (NaN,NaN,...), quarantined as such, never dropped as a header
        return len(body) if end < 0 else end + 1

    def _read(self, body, use_threads: bool = True):
        """{column index: StringArray} of the used columns, or None if some row does not fit the width."""
        import pyarrow as pa
        import pyarrow.csv as pcsv

        names = self.names
        try:
            t = pcsv.read_csv(
                pa.BufferReader(body),
                read_options=pcsv.ReadOptions(column_names=names, use_threads=use_threads, block_size=1 << 22),
                parse_options=pcsv.ParseOptions(quote_char=False, double_quote=False, escape_char=False,
                                                newlines_in_values=False, ignore_empty_lines=False),
                convert_options=pcsv.ConvertOptions(
                    column_types={names[i]: pa.string() for i in self._used}, include_columns=[names[i] for i in self._used],
                    null_values=[""], strings_can_be_null=True, check_utf8=True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None, 0
        return {i: t.column(names[i]).combine_chunks() if t.num_rows else pa.array([], pa.string())
                for i in self._used}, t.num_rows

    def _read_checked(self, lines, state):
        """The rows one per line when some do not fit: those are quarantined and stand in as empty rows."""
        import pyarrow as pa
        import pyarrow.compute as pc

        cols = pc.add(pc.count_substring(lines, ","), 1)
        wrong = pc.not_equal(cols, self.width)
        reason = pc.binary_join_element_wise(
            "has ", pc.cast(cols, pa.string()), pc.if_else(pc.equal(cols, 1), " column", " columns"),
            f", expected {self.width} (a row of another width is not a trade of this file)", "")
        state.mark(wrong, "line", reason, lines)
        cr = pc.match_substring_regex(lines, r"\r.")  # a CR before the end: pyarrow would end the row there
        state.mark(cr, "line", "holds a carriage return inside the row", lines)
        fixed = pc.if_else(pc.or_(wrong, cr), "," * (self.width - 1), lines)
        whole = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(fixed)], pa.int32()), fixed), "\n")
        cells, rows = self._read(whole[0].as_buffer())
        if cells is None or rows != len(lines):
            raise ValueError("CSV rows could not be read one per line")  # cannot happen: every row has the width
        return cells

    def apply(self, lines, body: bytes | None = None):
        """lines (LazyLines or StringArray; body the same lines as one buffer) -> (columns, _Bad per row)."""
        import pyarrow as pa

        n = len(lines)
        state = _Bad(n)
        out: dict = {}
        cells = None
        if body is not None:
            cells, rows = self._read(body)
            if cells is not None and rows != n:
                cells = None  # e.g. a carriage return alone inside a line: one line read as two rows
        if cells is None:
            if n == 0:
                cells = {i: pa.array([], pa.string()) for i in self._used}
            else:
                try:
                    text = lines.array if hasattr(lines, "array") else lines
                except pa.ArrowInvalid:
                    raise NotText(_first_bad_utf8_line(body or b"")) from None
                cells = self._read_checked(text, state)
        for name, col in self.mapping.columns.items():
            if isinstance(col, ConstField):
                out[name] = pa.repeat(pa.scalar(col.value, pa.string()), n)
                continue
            _convert(name, col, cells[col.column], state, out)
        return out, state


class NotText(ValueError):
    """CSV lines that are not UTF-8 text: no archive prints them (the object is damaged)."""


def _first_bad_utf8_line(body: bytes) -> str:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        line = body[: e.start].count(b"\n") + 1
        return f"trade line {line} is not UTF-8 text (byte 0x{body[e.start]:02x}): not a CSV row"
    return "the lines are not UTF-8 text"


def compile_mapping(mapping: TableMapping | CsvTableMapping) -> Compiled | CompiledCsv:
    return CompiledCsv(mapping) if isinstance(mapping, CsvTableMapping) else Compiled(mapping)
