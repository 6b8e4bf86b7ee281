"""Typed exchange source specs, declared in mappings/exchanges/<exchange>.yaml."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemahub.config import default_mappings_dir, load_model
from schemahub.mapping import TableMapping
from schemahub.errors import ConfigError

_DURATION = re.compile(r"^(\d+)\s*([smhd])$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimitSpec(_Strict):
    requests_per_second: float = Field(gt=0)
    burst: int = Field(ge=1)


class RetrySpec(_Strict):
    max_attempts: int = Field(default=8, ge=1, le=50)
    base_delay_s: float = Field(default=0.25, ge=0)
    max_delay_s: float = Field(default=30.0, ge=0)


class IdWindowPagination(_Strict):
    """Newest-first pages by trade id; `older` alone pages back, `newer`+`older` bound a window."""

    kind: Literal["id_window_desc"]
    older_param: str = "after"
    newer_param: str = "before"
    limit_param: str = "limit"


class ProductsSpec(_Strict):
    path: str
    records_path: list[str] = []
    symbol_field: str
    base_field: str
    quote_field: str
    status_field: str | None = None
    online_values: list[str] = ["online"]
    disabled_flags: list[str] = []


class TradesSpec(_Strict):
    path: str = Field(description="URL path; {symbol} is replaced by the exchange's symbol")
    records_path: list[str] = []
    id_field: str
    time_field: str
    time_format: Literal["rfc3339", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns"]
    page_size: int = Field(ge=1, le=10000)
    pages_per_object: int = Field(default=10, ge=1, le=100, description="pages landed together in one raw object")
    pagination: IdWindowPagination

    @field_validator("path")
    @classmethod
    def _has_symbol(cls, v: str) -> str:
        if "{symbol}" not in v:
            raise ValueError("must contain '{symbol}'")
        return v


class SourceSpec(_Strict):
    base_url: str
    timeout_s: float = Field(default=10.0, gt=0)
    first_run_lookback: str = "24h"
    rate_limit: RateLimitSpec
    retry: RetrySpec = RetrySpec()
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


class ExchangeSpec(_Strict):
    exchange: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    source: SourceSpec
    table: TableMapping


def parse_duration(text: str) -> timedelta:
    """'90s', '15m', '24h', '7d' -> timedelta."""
    m = _DURATION.match(str(text).strip())
    if not m:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 24h or 7d")
    n, unit = int(m.group(1)), m.group(2)
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
    override = os.environ.get(f"SCHEMAHUB_{name.upper()}_BASE_URL")
    if override:
        spec = with_base_url(spec, override)
    return spec


def with_base_url(spec: ExchangeSpec, url: str) -> ExchangeSpec:
    """A copy of spec whose source talks to url (a simulator, a proxy)."""
    source = spec.source.model_copy(update={"base_url": SourceSpec._url(url)})
    return spec.model_copy(update={"source": source})


def available_exchanges(mappings_dir: str | Path | None = None) -> list[str]:
    directory = Path(mappings_dir) if mappings_dir else default_mappings_dir()
    return sorted(p.stem for p in (directory / "exchanges").glob("*.yaml"))
