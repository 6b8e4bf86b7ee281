"""The product seed (mappings/product_ids_seed.yaml): typed, checked at load, naming file, line and key.

Every product id matches layout.PRODUCT_ID (BASE-QUOTE, upper-case letters
and digits), so no id from the seed can break a storage key or a Hive
partition, and two different ids (`BTC`, `BTC/USD`) can never land in one
place.
"""

from __future__ import annotations

import logging
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, field_validator

from schemahub.config import line_for, load_model_with_lines
from schemahub.errors import ConfigError, SchemahubError
from schemahub.layout import EXCHANGE, PRODUCT_ID
from schemahub.sources.base import Product

log = logging.getLogger("schemahub.seed")

_CODE_HELP = "upper-case letters and digits"


class SeedEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    product_id: str
    symbol: str
    base: str
    quote: str

    @field_validator("symbol", mode="before")
    @classmethod
    def _symbol(cls, v):
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)  # a numeric symbol written without quotes
        if isinstance(v, str) and not v.strip():
            raise ValueError("must not be empty")
        return v

    @field_validator("product_id")
    @classmethod
    def _product_id(cls, v: str) -> str:
        if not PRODUCT_ID.match(v):
            raise ValueError(f"{v!r} is not BASE-QUOTE in {_CODE_HELP} (e.g. BTC-USD)")
        return v

    @field_validator("base", "quote")
    @classmethod
    def _code(cls, v: str) -> str:
        if not PRODUCT_ID.match(f"{v}-X"):
            raise ValueError(f"{v!r} is not an asset code in {_CODE_HELP}")
        return v


class SeedFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    exchanges: dict[str, list[SeedEntry] | None] = {}

    @field_validator("exchanges")
    @classmethod
    def _names(cls, v: dict) -> dict:
        for name in v:
            if not EXCHANGE.match(str(name)):
                raise ValueError(f"{name!r} is not an exchange name (lower-case letters, digits and '_')")
        return v


def load(path: Path, known_exchanges: list[str] | None = None) -> dict[str, list[Product]]:
    """The seeded products per exchange; ConfigError naming file, line and key for any bad entry."""
    seed, lines = load_model_with_lines(SeedFile, path)
    out: dict[str, list[Product]] = {}
    for exchange, entries in seed.exchanges.items():
        if known_exchanges is not None and exchange not in known_exchanges:
            raise ConfigError(f"{path}:{line_for(('exchanges', exchange), lines) or '?'}: exchanges.{exchange}: "
                              f"no mapping for exchange {exchange!r} (known: {', '.join(known_exchanges) or 'none'})")
        seen: dict[str, int] = {}
        products = []
        for n, e in enumerate(entries or []):
            line = line_for(("exchanges", exchange, n), lines) or "?"
            for field, value in (("product_id", e.product_id), ("symbol", e.symbol.upper())):
                first = seen.get(f"{field}:{value}")
                if first is not None:
                    raise ConfigError(f"{path}:{line}: exchanges.{exchange}.{n}.{field}: {value!r} is listed twice "
                                      f"(first at line {first}); keep one entry")
                seen[f"{field}:{value}"] = line
            if e.product_id != f"{e.base}-{e.quote}":
                log.warning("%s:%s: exchanges.%s.%d: product_id %s does not match base %s and quote %s",
                            path, line, exchange, n, e.product_id, e.base, e.quote)
            products.append(Product(e.product_id, e.symbol, e.base, e.quote))
        out[exchange] = products
    return out


def write(path: Path, products: dict[str, list[Product]]) -> Path:
    """Write the seed atomically (a crash never leaves half a file); refuse any product id that breaks the pattern."""
    for ex, prods in products.items():
        for p in prods:
            if not PRODUCT_ID.match(p.product_id):
                raise ConfigError(f"{path}: exchanges.{ex}: refusing to write product id {p.product_id!r}: "
                                  f"not BASE-QUOTE in {_CODE_HELP}")
    doc = {
        "exchanges": {
            ex: [{"product_id": p.product_id, "symbol": p.symbol, "base": p.base, "quote": p.quote} for p in prods]
            for ex, prods in sorted(products.items())
        }
    }
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    header = f"# Products to ingest, per exchange. Written by `schemahub update-seed --fetch --write` on {stamp}; edit freely.\n"
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        tmp.write_text(header + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise SchemahubError(f"{path}: cannot write the seed: {e.strerror or e}: check the folder's permissions "
                             "and free space") from None
    return path
