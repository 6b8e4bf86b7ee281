"""Bans remembered in the store, so later runs (other processes, other Lambdas) send nothing until they end."""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timezone

from schemahub.clock import SYSTEM_CLOCK, Clock
from schemahub.errors import ExchangeBanned, NotFound
from schemahub.landing.checkpoint import iso as _iso
from schemahub.layout import ban_key
from schemahub.store.base import ObjectStore

log = logging.getLogger("schemahub.landing")

DEFAULT_BAN_S = 300.0  # when a ban comes without Retry-After (Binance bans last 2 minutes to 3 days)
MAX_BAN_S = 3 * 86400.0  # Binance's documented maximum; a longer or non-finite Retry-After is not believed


def record_ban(store: ObjectStore, exchange: str, error: ExchangeBanned, clock: Clock = SYSTEM_CLOCK) -> None:
    """Remember a ban in the store, so later runs (other processes, other Lambdas) send nothing until it ends."""
    after = error.retry_after_s
    if after is None or not math.isfinite(after) or after <= 0:
        after = DEFAULT_BAN_S
    until = clock.time() + min(after, MAX_BAN_S)
    doc = {"exchange": exchange, "until": until, "until_iso": _iso(datetime.fromtimestamp(until, timezone.utc)),
           "reason": str(error)[:500]}
    store.put(ban_key(exchange), json.dumps(doc, indent=1).encode())


def active_ban(store: ObjectStore, exchange: str, clock: Clock = SYSTEM_CLOCK) -> str | None:
    """A message if the exchange banned us and the ban has not ended yet."""
    key = ban_key(exchange)
    try:
        data = store.get(key).data
    except NotFound:
        return None
    try:
        doc = json.loads(data)
        until = doc["until"]
        if isinstance(until, bool) or not isinstance(until, (int, float)) or until != until:
            raise TypeError(f"until is {until!r}")
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as e:
        # The exchange bans again (and we record it) if it still means it; an unreadable note must not block forever.
        log.warning("%s is unreadable (%s); ignoring it", key, e)
        return None
    if until <= clock.time():
        return None
    if until > clock.time() + MAX_BAN_S:
        log.warning("%s says banned until %s, beyond the longest ban (3 days); ignoring it", key, doc.get("until_iso"))
        return None
    return f"{exchange} banned this IP until {doc.get('until_iso')}; sending nothing until then ({str(doc.get('reason', ''))[:200]})"


