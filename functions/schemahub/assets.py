"""Asset code normalization (XBT -> BTC), declared in mappings/assets.yaml."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator

from schemahub.config import default_mappings_dir, load_model

_CODE = re.compile(r"^[A-Z0-9]{1,16}$")


class Aliases(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    common: dict[str, str] = {}
    exchanges: dict[str, dict[str, str]] = {}

    @field_validator("common")
    @classmethod
    def _codes(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            if not (_CODE.match(str(k)) and _CODE.match(str(val))):
                raise ValueError(f"{k!r}: {val!r}: asset codes are upper-case letters and digits")
        return v

    @field_validator("exchanges")
    @classmethod
    def _per_exchange(cls, v: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for table in v.values():
            cls._codes(table)
        return v

    def unify(self, exchange: str, code: str) -> str:
        code = code.upper()
        return self.exchanges.get(exchange, {}).get(code) or self.common.get(code) or code


@lru_cache(maxsize=8)
def load_aliases(mappings_dir: str | None = None) -> Aliases:
    path = Path(mappings_dir or default_mappings_dir()) / "assets.yaml"
    return load_model(Aliases, path) if path.exists() else Aliases()


def unify_asset(exchange: str, code: str, mappings_dir: str | None = None) -> str:
    """The unified code for an exchange's asset code."""
    return load_aliases(str(mappings_dir) if mappings_dir else None).unify(exchange, code)
