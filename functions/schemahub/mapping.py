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


class StringField(_Sourced):
    type: Literal["string"]


class DecimalField(_Sourced):
    type: Literal["decimal"]


class TimeField(_Sourced):
    type: Literal["time"]
    format: Literal["rfc3339", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns", "epoch_ms_or_us", "float_s"] = Field(
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
        missing = [c for c in REQUIRED if c not in self.columns]
        if missing:
            raise ValueError(f"columns must map {', '.join(missing)}")
        unknown = [c for c in self.columns if c not in REQUIRED]
        if unknown:
            raise ValueError(f"unknown column(s) {', '.join(unknown)}; record-level columns are {', '.join(REQUIRED)}")
        side = self.columns["side"]
        targets = set(side.map.values()) if isinstance(side, EnumField) else {side.value} if isinstance(side, ConstField) else None
        if targets is None or not targets <= {"buy", "sell", "unknown"}:
            raise ValueError("side must be an enum or const whose values are buy, sell or unknown")
        if isinstance(self.columns["trade_time"], (StringField, DecimalField, EnumField)):
            raise ValueError("trade_time must be of type time")
        for name in ("price", "size"):
            if not isinstance(self.columns[name], DecimalField):
                raise ValueError(f"{name} must be of type decimal")
        return self


# ------------------------------------------------------------------ compile

_VAL = r'(?P<v>"(?:[^"\\]|\\.)*"|[^,}\]\s]+)'
_ELEM = r'(?:"(?:[^"\\]|\\.)*"|[^,\]"\s]*)'
_DECIMAL = r"^-?[0-9]{1,26}(\.[0-9]{1,12})?$"
_TOO_PRECISE = r"^-?[0-9]+\.[0-9]{13,}$"
_RFC3339 = r"^(?P<base>[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.(?P<frac>[0-9]{1,9}))?(?:Z|\+00:00)$"
_RFC3339_US = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z$"
_FLOAT_S = r"^(?P<secs>[0-9]{1,12})(?:\.(?P<frac>[0-9]{0,12}))?$"
_EPOCH_SCALE = {"epoch_s": 1_000_000, "epoch_ms": 1_000, "epoch_us": 1, "epoch_ns": -1_000}


class Compiled:
    """A mapping compiled to pyarrow compute steps; apply() converts a whole object's lines at once."""

    def __init__(self, mapping: TableMapping) -> None:
        self.mapping = mapping
        self.patterns = {name: _pattern(col.path) for name, col in mapping.columns.items() if not isinstance(col, ConstField)}

    def _read(self, n: int, body: bytes):
        """Parse object rows, first with the types the last object had (cheaper than inference)."""
        import pyarrow as pa

        keys = [c.path for c in self.mapping.columns.values() if not isinstance(c, ConstField) and isinstance(c.path, str)]
        if self._hint is not None:
            parsed = _read_objects(n, body, self._hint)
            if parsed is not None:
                return parsed
        parsed = _read_objects(n, body, None)
        if parsed is not None:
            self._hint = pa.schema([parsed.schema.field(k) for k in keys if k in parsed.column_names])
        return parsed

    _hint = None

    def apply(self, lines, body: bytes | None = None):
        """lines (pa.StringArray, and the same lines as one buffer) -> (columns, _Bad with reasons per row)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from schemahub.table import DECIMAL, TIMESTAMP

        n = len(lines)
        state = _Bad(n)
        out: dict = {}
        parsed = self._read(n, body) if body is not None else None
        for name, col in self.mapping.columns.items():
            if isinstance(col, ConstField):
                out[name] = pa.array([col.value] * n, pa.string()) if n else pa.array([], pa.string())
                continue
            text = _exact_text(parsed, col.path, n)
            if text is None:
                text = _extract(lines.array if hasattr(lines, "array") else lines, self.patterns[name])
            if not col.optional:
                state.mark(text.is_null(), name, "missing", text)
            if isinstance(col, StringField):
                out[name] = text
            elif isinstance(col, DecimalField):
                fine = pc.match_substring_regex(text, _DECIMAL)
                if not pc.all(pc.fill_null(fine, True)).as_py():
                    state.mark(pc.match_substring_regex(text, _TOO_PRECISE), name, "more than 12 decimals (never rounded)", text)
                    state.mark(pc.invert(fine), name, "not a plain decimal number", text)
                safe = pc.if_else(pc.fill_null(fine, False), text, "0")
                out[name] = pc.if_else(pc.fill_null(fine, False), pc.cast(safe, DECIMAL), pa.scalar(None, DECIMAL))
            elif isinstance(col, EnumField):
                keys = pa.array(list(col.map.keys()), pa.string())
                idx = pc.index_in(text, value_set=keys)
                state.mark(pc.and_(text.is_valid(), idx.is_null()), name, "unknown value", text)
                out[name] = pc.take(pa.array(list(col.map.values()), pa.string()), idx)
            elif isinstance(col, TimeField):
                micros, bad = _time_micros(text, col.format)
                state.mark(bad, name, f"not a {col.format} time", text)
                out[name] = pc.cast(micros, TIMESTAMP)
        return out, state


class _Bad:
    """First failure per row: reason, field and the offending text (null where the row is good)."""

    def __init__(self, n: int) -> None:
        import pyarrow as pa

        self.reason = pa.nulls(n, pa.string())
        self.field = pa.nulls(n, pa.string())
        self.value = pa.nulls(n, pa.string())

    def mark(self, cond, field: str, reason: str, text) -> None:
        import pyarrow.compute as pc

        new = pc.and_(pc.fill_null(cond, False), self.reason.is_null())
        if not pc.any(new).as_py():
            return
        self.reason = pc.if_else(new, reason, self.reason)
        self.field = pc.if_else(new, field, self.field)
        self.value = pc.if_else(new, text, self.value)


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
    """A field's exact text from the parsed rows, or None where only the regex path is exact (floats)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if parsed is None or isinstance(path, int):
        return None
    head, _, sub = path.partition(".")
    if head not in parsed.column_names:
        return pa.nulls(n, pa.string())
    col = parsed[head].combine_chunks()
    if sub:
        if not pa.types.is_struct(col.type):
            return None
        if col.type.get_field_index(sub) < 0:
            return pa.nulls(n, pa.string())
        col = pc.struct_field(col, sub)
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return col.cast(pa.string())
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return pc.cast(col, pa.string())  # integers and booleans print exactly
    if pa.types.is_null(t):
        return pa.nulls(n, pa.string())
    return None  # doubles (or nested values): take the source text instead


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
    """The value's text (quotes removed), or null if the key is absent or the value is JSON null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    m = pc.extract_regex(lines, pattern)
    v = pc.if_else(m.is_valid(), m.field("v"), pa.scalar(None, pa.string()))
    quoted = pc.starts_with(v, '"')
    v = pc.if_else(quoted, pc.utf8_slice_codeunits(v, 1, -1), v)
    return pc.if_else(pc.and_(pc.invert(quoted), pc.equal(v, "null")), pa.scalar(None, pa.string()), v)


def _time_micros(text, fmt: str):
    """Exact integer microseconds since the epoch from text; (int64 array, bad mask). Sub-µs digits are truncated."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from schemahub.table import TIMESTAMP

    if fmt == "rfc3339":
        # Common case: at most 6 fraction digits, which Arrow casts exactly.
        plain = pc.match_substring_regex(text, _RFC3339_US)
        if pc.all(pc.fill_null(plain, True)).as_py():
            ok = pc.fill_null(plain, False)
            ts = pc.cast(pc.if_else(ok, text, "1970-01-01T00:00:00Z"), TIMESTAMP)
            micros = pc.cast(ts, pa.int64())
            bad = pc.and_(text.is_valid(), pc.invert(ok))
            return pc.if_else(ok, micros, pa.scalar(None, pa.int64())), bad
        m = pc.extract_regex(text, _RFC3339)
        ok = m.is_valid()
        frac = pc.utf8_rpad(pc.utf8_slice_codeunits(pc.fill_null(m.field("frac"), ""), 0, 6), width=6, padding="0")
        norm = pc.binary_join_element_wise(m.field("base"), pc.binary_join_element_wise(frac, "Z", ""), ".")
        ts = pc.cast(pc.if_else(ok, norm, "1970-01-01T00:00:00.000000Z"), TIMESTAMP)
        micros = pc.cast(ts, pa.int64())
    elif fmt == "float_s":
        m = pc.extract_regex(text, _FLOAT_S)
        ok = m.is_valid()
        secs = pc.cast(pc.if_else(ok, m.field("secs"), "0"), pa.int64())
        frac = pc.utf8_rpad(pc.utf8_slice_codeunits(pc.fill_null(m.field("frac"), ""), 0, 6), width=6, padding="0")
        micros = pc.add(pc.multiply(secs, 1_000_000), pc.cast(pc.if_else(ok, frac, "0"), pa.int64()))
    elif fmt == "epoch_ms_or_us":
        # Unambiguous by length for 2001..2286: ms have 13 digits, µs 16; anything else is quarantined.
        ms = pc.match_substring_regex(text, r"^[0-9]{13}$")
        ok = pc.or_(ms, pc.match_substring_regex(text, r"^[0-9]{16}$"))
        raw = pc.cast(pc.if_else(pc.fill_null(ok, False), text, "0"), pa.int64())
        micros = pc.if_else(pc.fill_null(ms, False), pc.multiply(raw, 1000), raw)
    else:
        ok = pc.match_substring_regex(text, r"^[0-9]{1,19}$")
        raw = pc.cast(pc.if_else(pc.fill_null(ok, False), text, "0"), pa.int64())
        scale = _EPOCH_SCALE[fmt]
        micros = pc.multiply_checked(raw, scale) if scale > 0 else pc.divide(raw, -scale)
    ok = pc.fill_null(ok, False)
    bad = pc.and_(text.is_valid(), pc.invert(ok))
    return pc.if_else(ok, micros, pa.scalar(None, pa.int64())), bad


def compile_mapping(mapping: TableMapping) -> Compiled:
    return Compiled(mapping)
