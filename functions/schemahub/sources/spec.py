"""Typed exchange source specs, declared in mappings/exchanges/<exchange>.yaml."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from schemahub import settings
from schemahub.config import default_mappings_dir, load_model
from schemahub.errors import ConfigError
from schemahub.mapping import CsvTableMapping, TableMapping

_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_MAX_DURATION_S = 7305 * 86400


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimitSpec(_Strict):
    requests_per_second: float = Field(gt=0)
    burst: int = Field(ge=1)


class RetrySpec(_Strict):
    max_attempts: int = Field(default=8, ge=1, le=50)
    base_delay_s: float = Field(default=0.25, ge=0)
    max_delay_s: float = Field(default=30.0, ge=0)
    max_retry_after_s: float = Field(default=120.0, gt=0, le=86_400, description="longest Retry-After honoured; a longer one stops the product")


class PageChecks(_Strict):
    """What every page is checked against: what its request promised. Each paging kind has these options.

    - `contiguous_ids`: the exchange numbers each product's trades 1, 2, 3... without holes (Coinbase, Binance,
      Kraken, OKX as far as the recordings show). Every id the run walks over must then be accounted for: an id
      missing from a page is asked for again with a narrower request, and it is a gap only when that re-query
      still omits it and the exchange shows trades on both sides of it (a confirmed gap, counted in the result).
      Without it, only the part of a window below the lowest id received must be confirmed empty.
    - `empty_retries`: an empty answer where trades must exist is asked again this many times (with the
      retry backoff) before it is believed; a belief still needs the exchange to confirm it, else the product
      fails and the checkpoint stays where the last landed trade is.
    - `max_head_jump`: a head more than this many ids ahead of the cursor is asked for again before it is
      used, and the smaller answer wins (a misprinted head can only make a run stop early, never skip ids).
      None turns the check off; it does not apply to a time cursor.
    """

    contiguous_ids: bool = False
    empty_retries: int = Field(default=3, ge=0, le=20)
    max_head_jump: int | None = Field(default=1_000_000, ge=1)


class IdWindowPagination(PageChecks):
    """Newest-first pages by trade id; `older` alone pages back, `newer`+`older` bound a window (Coinbase, OKX)."""

    kind: Literal["id_window_desc"]
    older_param: str = "after"
    newer_param: str = "before"
    limit_param: str = "limit"


class Endpoint(_Strict):
    """A helper request: path plus query ({symbol} is replaced), and where its records are."""

    path: str
    query: dict[str, str] = {}
    records_path: list[str] = []
    limit_param: str = "limit"


class StartByTime(Endpoint):
    """Finds the first trade id at or after a time (Binance aggTrades: startTime -> first trade id `f`)."""

    time_param: str
    time_unit: Literal["s", "ms", "us"] = "ms"
    first_id_field: str


class IdForwardPagination(PageChecks):
    """Oldest-first pages from a trade id (Binance historicalTrades fromId); ids only grow."""

    kind: Literal["id_forward"]
    from_param: str = "fromId"
    limit_param: str = "limit"
    head: Endpoint = Field(description="newest trades (one is asked for): its largest id is the head")
    start: StartByTime


class CursorForwardPagination(PageChecks):
    """Oldest-first pages from an opaque integer cursor the response hands back (Kraken `since`/`last`).

    The cursor is a time in `cursor_unit` since the epoch, so a first run can
    start at a time, and the head of a run is the clock at its start.
    """

    kind: Literal["cursor_forward"]
    cursor_param: str = "since"
    cursor_path: list[str] = Field(min_length=1, description="where the next cursor is in the response")
    cursor_unit: Literal["s", "ms", "us", "ns"] = "ns"
    limit_param: str | None = None
    max_cursor_lead_s: float = Field(default=1.0, ge=0, description="how far the next cursor may lie past the "
                                     "newest trade of its page (seconds); a cursor further ahead is re-asked")


Pagination = Annotated[
    Union[IdWindowPagination, IdForwardPagination, CursorForwardPagination], Field(discriminator="kind")
]


class ErrorEnvelope(_Strict):
    """Errors an exchange reports inside HTTP 200 bodies.

    `path` points at the error field: an error is a non-empty list there
    (Kraken's `error`), or a value not in `ok_values` (OKX's `code`).
    Messages matching `retry_when` are transient and retried with backoff;
    any other error stops the product with the exchange's message.
    """

    path: list[str] = Field(min_length=1)
    ok_values: list[str] = []
    message_path: list[str] = []
    retry_when: list[str] = []

    @field_validator("retry_when")
    @classmethod
    def _regexes(cls, v: list[str]) -> list[str]:
        for pat in v:
            try:
                re.compile(pat)
            except re.error as e:
                raise ValueError(f"{pat!r} is not a valid regular expression: {e}") from None
        return v


class WeightSpec(_Strict):
    """A request-weight budget the exchange reports in a response header (Binance X-MBX-USED-WEIGHT-1M)."""

    header: str
    limit: int = Field(gt=0)
    window_s: float = Field(gt=0)
    pause_at: float = Field(default=0.8, gt=0, le=1, description="pause new requests until the window turns at this share")


class ProductsSpec(_Strict):
    path: str
    query: dict[str, str] = {}
    records_path: list[str] = Field(default=[], description='keys down to the list; "*" takes every value of an object')
    symbol_field: str
    base_field: str | None = None
    quote_field: str | None = None
    pair_field: str | None = Field(default=None, description="one field holding BASE<sep>QUOTE, e.g. Kraken wsname XBT/USD")
    pair_separator: str = "/"
    status_field: str | None = None
    online_values: list[str] = ["online"]
    disabled_flags: list[str] = []

    @model_validator(mode="after")
    def _assets(self):
        if self.pair_field is None and (self.base_field is None or self.quote_field is None):
            raise ValueError("set base_field and quote_field, or pair_field")
        return self


class TradesSpec(_Strict):
    query: dict[str, str] = Field(default={}, description="fixed query parameters; {symbol} is replaced")
    path: str = Field(description="URL path; {symbol} is replaced by the exchange's symbol")
    headers: dict[str, str] = {}
    records_path: list[str] = Field(default=[], description='keys down to the trades array; "*" is the first array-valued key')
    id_field: str | int = Field(description="key of the trade id, or its index in array rows")
    time_field: str | int
    time_format: Literal["rfc3339", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns", "epoch_ms_or_us", "float_s"]
    page_size: int = Field(ge=1, le=10000)
    pages_per_object: int = Field(default=10, ge=1, le=100, description="pages landed together in one raw object")
    pagination: Pagination

    @field_validator("path")
    @classmethod
    def _has_symbol(cls, v: str, info: ValidationInfo) -> str:
        if "{symbol}" not in v and not any("{symbol}" in q for q in (info.data.get("query") or {}).values()):
            raise ValueError("must contain '{symbol}' (or a value in query: must)")
        return v


class SourceSpec(_Strict):
    base_url: str
    timeout_s: float = Field(default=10.0, gt=0)
    first_run_lookback: str = "24h"
    rate_limit: RateLimitSpec
    weight: WeightSpec | None = None
    retry: RetrySpec = RetrySpec()
    ban_statuses: list[int] = [418]
    errors: ErrorEnvelope | None = None
    products: ProductsSpec
    trades: TradesSpec

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http(s) URL")
        return v.rstrip("/")

    @field_validator("first_run_lookback")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v

    @property
    def lookback(self) -> timedelta:
        return parse_duration(self.first_run_lookback)


class ArchiveSourceSpec(_Strict):
    """Where an exchange publishes its trade history as files (Binance's data.binance.vision): see sources/archive.

    Paths take `{symbol}`, `{date}` (YYYY-MM-DD, daily) and `{month}` (YYYY-MM, monthly). Each file has a
    checksum file beside it (path + `checksum_suffix`) holding `<sha256>  <file name>`. A daily file is looked
    for only once `publication_lag` has passed after its UTC day ends (earlier trades are paged over REST);
    a monthly file only `monthly_lag` after its month ends, and only when `monthly` is true.
    """

    base_url: str
    daily_path: str = "/data/spot/daily/trades/{symbol}/{symbol}-trades-{date}.zip"
    monthly_path: str = "/data/spot/monthly/trades/{symbol}/{symbol}-trades-{month}.zip"
    checksum_suffix: str = ".CHECKSUM"
    monthly: bool = Field(default=False, description="take a whole month from its monthly file when the backfill "
                          "covers the month (fewer requests); a missing monthly file falls back to the daily ones")
    publication_lag: str = Field(default="8h", description="how long after its day ends a daily file is looked for")
    monthly_lag: str = Field(default="8d", description="how long after its month ends a monthly file is looked for")
    rows_per_object: int = Field(default=200_000, ge=1, le=5_000_000, description="CSV rows per raw object (slice)")
    timeout_s: float = Field(default=30.0, gt=0)
    request_deadline_s: float = Field(default=600.0, gt=0, description="the longest one file download may take")
    max_file_bytes: int = Field(default=1 << 30, ge=1024, description="the largest zip accepted (the HTTP body cap)")
    max_csv_bytes: int = Field(default=4 << 30, ge=1024, description="the largest CSV a zip may unpack to")
    checksum_attempts: int = Field(default=3, ge=1, le=10, description="downloads of a file whose SHA-256 differs "
                                   "from its checksum file before the product fails")
    recheck_days: int = Field(default=7, ge=0, le=3660, description="files of this many recent days are checked "
                              "again on every run: a changed checksum is reported as a replaced file")
    rate_limit: RateLimitSpec = RateLimitSpec(requests_per_second=5, burst=5)
    retry: RetrySpec = RetrySpec(max_attempts=5, base_delay_s=1.0, max_delay_s=30.0)

    _url = field_validator("base_url")(SourceSpec._url.__func__)

    @field_validator("publication_lag", "monthly_lag")
    @classmethod
    def _lag(cls, v: str) -> str:
        parse_duration(v)
        return v

    @field_validator("daily_path", "monthly_path")
    @classmethod
    def _template(cls, v: str, info: ValidationInfo) -> str:
        need = "{date}" if info.field_name == "daily_path" else "{month}"
        if not v.startswith("/") or "{symbol}" not in v or need not in v:
            raise ValueError(f"must start with '/' and contain '{{symbol}}' and '{need}'")
        return v

    @property
    def lag(self) -> timedelta:
        return parse_duration(self.publication_lag)

    @property
    def month_lag(self) -> timedelta:
        return parse_duration(self.monthly_lag)


class ArchiveSpec(_Strict):
    """A bulk archive of the exchange's trades, landed into the same chain as its REST pages.

    `source` says where the files are and how to land them (sources/archive.py); `table` maps their CSV rows
    to the unified table (mapping.py), as `table:` above maps the REST records.
    """

    source: ArchiveSourceSpec
    table: CsvTableMapping


class ExchangeSpec(_Strict):
    exchange: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    source: SourceSpec
    table: TableMapping
    archive: ArchiveSpec | None = None


def parse_duration(text: str) -> timedelta:
    """'90s', '15m', '24h', '7d' -> timedelta."""
    m = _DURATION.match(str(text).strip())
    if not m:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 24h or 7d")
    n, unit = int(m.group(1)), m.group(2)
    if n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit] > _MAX_DURATION_S:
        raise ValueError(f"{text!r} is longer than 20 years (7305d)")
    return timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[unit]: n})


def load_exchange(name: str, mappings_dir: str | Path | None = None) -> ExchangeSpec:
    """Load and validate mappings/exchanges/<name>.yaml, applying SCHEMAHUB_<NAME>_BASE_URL."""
    directory = Path(mappings_dir) if mappings_dir else default_mappings_dir()
    path = directory / "exchanges" / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(available_exchanges(directory)) or "none"
        raise ConfigError(f"unknown exchange {name!r}: no {path} (known: {known})")
    spec = load_model(ExchangeSpec, path)
    if spec.exchange != name:
        raise ConfigError(f"{path}: exchange: is {spec.exchange!r} but the file is named {name!r}")
    override = settings.base_url(name)
    if override:
        spec = with_base_url(spec, override)
    archive = settings.archive_url(name)
    if archive:
        if spec.archive is None:
            raise ConfigError(f"{settings.archive_url_var(name)} is set, but {path} declares no archive: unset it")
        spec = with_archive_url(spec, archive)
    return spec


def with_archive_url(spec: ExchangeSpec, url: str) -> ExchangeSpec:
    """A copy of spec whose archive files come from url (a simulator, a mirror); unchanged without an archive."""
    if spec.archive is None:
        return spec
    src = spec.archive.source.model_copy(update={"base_url": SourceSpec._url(url)})
    return spec.model_copy(update={"archive": spec.archive.model_copy(update={"source": src})})


def with_base_url(spec: ExchangeSpec, url: str) -> ExchangeSpec:
    """A copy of spec whose source talks to url (a simulator, a proxy).

    Its archive (if any) moves there too, unless an archive URL is given after this: REST trades from one
    place and archive files from another would be joined into one chain (the simulator serves both).
    """
    source = spec.source.model_copy(update={"base_url": SourceSpec._url(url)})
    return with_archive_url(spec.model_copy(update={"source": source}), url)


def available_exchanges(mappings_dir: str | Path | None = None) -> list[str]:
    directory = Path(mappings_dir) if mappings_dir else default_mappings_dir()
    return sorted(p.stem for p in (directory / "exchanges").glob("*.yaml"))
