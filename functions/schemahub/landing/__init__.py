"""Exactly-once landing of raw trades: checkpoint, lease, bans and the lander that walks the chain."""

from schemahub.landing.bans import DEFAULT_BAN_S, active_ban, record_ban
from schemahub.landing.checkpoint import Checkpoint, Checkpoints
from schemahub.landing.lander import IngestOptions, Lander, ProductResult, iter_raw
from schemahub.landing.lease import Lease

__all__ = ["DEFAULT_BAN_S", "Checkpoint", "Checkpoints", "IngestOptions", "Lander", "Lease", "ProductResult",
           "active_ban", "iter_raw", "record_ban"]
