"""Bans remembered in the store, so later runs (other processes, other Lambdas) send nothing until they end."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from schemahub.clock import SYSTEM_CLOCK, Clock
from schemahub.errors import ExchangeBanned, NotFound
from schemahub.landing.checkpoint import iso as _iso
from schemahub.layout import ban_key
from schemahub.store.base import ObjectStore

DEFAULT_BAN_S = 300.0  # when a ban comes without Retry-After (Binance bans last 2 minutes to 3 days)


def record_ban(store: ObjectStore, exchange: str, error: ExchangeBanned, clock: Clock = SYSTEM_CLOCK) -> None:
    """Remember a ban in the store, so later runs (other processes, other Lambdas) send nothing until it ends."""
    until = clock.time() + (error.retry_after_s if error.retry_after_s is not None else DEFAULT_BAN_S)
    doc = {"exchange": exchange, "until": until, "until_iso": _iso(datetime.fromtimestamp(until, timezone.utc)),
           "reason": str(error)[:500]}
    store.put(ban_key(exchange), json.dumps(doc, indent=1).encode())


def active_ban(store: ObjectStore, exchange: str, clock: Clock = SYSTEM_CLOCK) -> str | None:
    """A message if the exchange banned us and the ban has not ended yet."""
    try:
        doc = json.loads(store.get(ban_key(exchange)).data)
    except NotFound:
        return None
    if doc.get("until", 0) <= clock.time():
        return None
    return f"{exchange} banned this IP until {doc.get('until_iso')}; sending nothing until then ({doc.get('reason', '')[:200]})"


