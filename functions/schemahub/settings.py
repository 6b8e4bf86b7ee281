"""Environment variables and option values: read and checked here only; every error names the variable or option.

Each reader returns None when its variable is unset, so callers fall back to
the mapping's value. A variable that is set but empty is an error, never a
silent default (`SCHEMAHUB_STORAGE=$UNSET_VAR` must not mean ./data).
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping

from schemahub.errors import UsageError

log = logging.getLogger("schemahub.settings")

STORAGE = "SCHEMAHUB_STORAGE"
MAPPINGS = "SCHEMAHUB_MAPPINGS"
HTTP_TIMEOUT = "SCHEMAHUB_HTTP_TIMEOUT"
LOG_FORMAT = "SCHEMAHUB_LOG_FORMAT"
LOG_FORMATS = ("text", "json")
GLUE_TABLE = "SCHEMAHUB_GLUE_TABLE"  # <database>.<table>: the Glue table whose partitions follow the store
_GLUE_NAME = re.compile(r"^[a-z0-9_]{1,255}$")
_PER_EXCHANGE = re.compile(r"^SCHEMAHUB_(?P<exchange>.+)_(?P<what>BASE_URL|RATE_LIMIT|ARCHIVE_URL)$")
# S3's rules for bucket names (https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html).
_BUCKET = re.compile(r"^(?!\d+\.\d+\.\d+\.\d+$)(?!xn--)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_URL = re.compile(r"^https?://[^/\s]+\S*$")


def base_url_var(exchange: str) -> str:
    return f"SCHEMAHUB_{exchange.upper()}_BASE_URL"


def archive_url_var(exchange: str) -> str:
    return f"SCHEMAHUB_{exchange.upper()}_ARCHIVE_URL"


def rate_limit_var(exchange: str) -> str:
    return f"SCHEMAHUB_{exchange.upper()}_RATE_LIMIT"


def _get(name: str, environ: Mapping[str, str] | None) -> str | None:
    value = (os.environ if environ is None else environ).get(name)
    if value is None:
        return None
    if not value.strip():
        raise UsageError(f"{name} is set but empty: unset it to use the default, or give it a value")
    return value.strip()


# ------------------------------------------------------------------ values, wherever they come from

def positive_number(text: str | float, name: str, *, zero_ok: bool = False, maximum: float | None = None) -> float:
    """A finite number > 0 (or >= 0 with zero_ok); UsageError naming `name` otherwise."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    least = "0 or more" if zero_ok else "more than 0"
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise UsageError(f"{name} {text!r} is not a number {least} (no nan or inf)")
    if maximum is not None and value > maximum:
        raise UsageError(f"{name} {text!r} is more than the maximum of {maximum:g}")
    return value


def positive_int(text: str | int, name: str, *, zero_ok: bool = False, maximum: int | None = None) -> int:
    """A whole number > 0 (or >= 0 with zero_ok); UsageError naming `name` otherwise."""
    try:
        value = int(str(text).strip(), 10)
    except ValueError:
        raise UsageError(f"{name} {text!r} is not a whole number") from None
    if value < 0 or (value == 0 and not zero_ok):
        raise UsageError(f"{name} {text!r} must be {'0 or more' if zero_ok else 'at least 1'}")
    if maximum is not None and value > maximum:
        raise UsageError(f"{name} {text!r} is more than the maximum of {maximum}")
    return value


def storage_location(text: str, name: str = "--storage") -> str:
    """PATH or s3://bucket[/prefix], checked before anything is opened."""
    if text is None or not str(text).strip():
        raise UsageError(f"{name} is empty: give a folder or s3://bucket/prefix (leave it out for ./data)")
    text = str(text).strip()
    if text.startswith("s3://"):
        bucket, _, _prefix = text[5:].partition("/")
        if not bucket:
            raise UsageError(f"{name} {text!r}: missing bucket name (expected s3://bucket/prefix)")
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise UsageError(f"{name} {text!r}: {bucket!r} is not an S3 bucket name (3-63 lower-case letters, "
                             "digits, '.' and '-')")
    elif "://" in text:
        raise UsageError(f"{name} {text!r}: only folders and s3://bucket/prefix are supported")
    return text


def http_url(text: str, name: str) -> str:
    if not _URL.match(text.strip()):
        raise UsageError(f"{name} {text!r} is not an http(s) URL (e.g. http://127.0.0.1:8765)")
    return text.strip().rstrip("/")


# ------------------------------------------------------------------ the variables

def storage(environ: Mapping[str, str] | None = None) -> str | None:
    value = _get(STORAGE, environ)
    return None if value is None else storage_location(value, STORAGE)


def mappings(environ: Mapping[str, str] | None = None) -> str | None:
    return _get(MAPPINGS, environ)


def base_url(exchange: str, environ: Mapping[str, str] | None = None) -> str | None:
    name = base_url_var(exchange)
    value = _get(name, environ)
    return None if value is None else http_url(value, name)


def archive_url(exchange: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Where the exchange's archive files are fetched from (overrides the mapping's archive.source.base_url)."""
    name = archive_url_var(exchange)
    value = _get(name, environ)
    return None if value is None else http_url(value, name)


def rate_limit(exchange: str, environ: Mapping[str, str] | None = None) -> float | None:
    """Requests per second for the exchange's client (overrides the mapping's rate_limit)."""
    name = rate_limit_var(exchange)
    value = _get(name, environ)
    return None if value is None else positive_number(value, name, maximum=100_000)


def http_timeout(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds (connect and read) for every exchange request (overrides the mapping's timeout_s)."""
    value = _get(HTTP_TIMEOUT, environ)
    return None if value is None else positive_number(value, HTTP_TIMEOUT, maximum=3600)


def log_format(environ: Mapping[str, str] | None = None) -> str:
    value = _get(LOG_FORMAT, environ)
    if value is None:
        return "text"
    if value.lower() not in LOG_FORMATS:
        raise UsageError(f"{LOG_FORMAT} {value!r} is not one of {', '.join(LOG_FORMATS)}")
    return value.lower()


def glue_table(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """(database, table) from SCHEMAHUB_GLUE_TABLE=<database>.<table>, or None when unset (no catalog)."""
    value = _get(GLUE_TABLE, environ)
    if value is None:
        return None
    database, dot, table = value.partition(".")
    if not dot or not _GLUE_NAME.match(database) or not _GLUE_NAME.match(table):
        raise UsageError(f"{GLUE_TABLE} {value!r} is not <database>.<table> in lower-case letters, digits and '_' "
                         "(e.g. schemahub.trades)")
    return database, table


def check_environment(exchanges: Iterable[str], environ: Mapping[str, str] | None = None) -> None:
    """Check every SCHEMAHUB_* variable at once, at the entry point, before any work.

    A per-exchange variable for an exchange that has no mapping is an error (a
    typo in SCHEMAHUB_COINBSAE_BASE_URL would otherwise send traffic to the
    real exchange); an unknown name close to a known one gets a warning.
    """
    environ = os.environ if environ is None else environ
    known = sorted(exchanges)
    storage(environ)
    mappings(environ)
    http_timeout(environ)
    log_format(environ)
    glue_table(environ)
    for ex in known:
        base_url(ex, environ)
        archive_url(ex, environ)
        rate_limit(ex, environ)
    expected = {STORAGE, MAPPINGS, HTTP_TIMEOUT, LOG_FORMAT, GLUE_TABLE}
    for name in sorted(environ):
        if not name.startswith("SCHEMAHUB_") or name in expected:
            continue
        m = _PER_EXCHANGE.match(name)
        if m:
            if m["exchange"].lower() not in known:
                raise UsageError(f"{name}: no exchange {m['exchange'].lower()!r} (known: {', '.join(known) or 'none'})"
                                 "; fix the name or unset it")
            continue
        close = difflib.get_close_matches(name, sorted(expected), n=1, cutoff=0.85)
        if close:  # a typo would otherwise be ignored without a word
            log.warning("ignoring unknown environment variable %s (did you mean %s?)", name, close[0])
