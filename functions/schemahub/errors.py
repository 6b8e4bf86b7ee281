"""Named domain errors: one tree, rooted at SchemahubError. Messages say what is wrong, where, and what to do.

Entry points map the tree to exit codes (the CLI) or results (the Lambdas):
UsageError and ConfigError are the caller's to fix (exit 2); everything else is
an operational failure (exit 1).
"""

from __future__ import annotations


class SchemahubError(Exception):
    """Base for every error schemahub raises on purpose."""


class UsageError(SchemahubError):
    """A command-line value or environment variable is invalid; the message names it."""


class ConfigError(SchemahubError):
    """A mapping or setting is invalid; the message names file, line and key."""


class QueryError(UsageError):
    """SQL the engine rejected (syntax, unknown column, bad cast); the message is the engine's first line."""


# ------------------------------------------------------------------ storage

class StoreError(SchemahubError):
    """The object store failed in a way callers cannot fix by retrying."""


class NotFound(StoreError):
    """The key does not exist."""


class PreconditionFailed(StoreError):
    """A conditional write lost: the key exists (create-only) or changed (compare-and-swap)."""


class StoreAccessDenied(StoreError):
    """The store refused the request (S3 AccessDenied, a read-only folder): fix the permissions."""


class StoreUnavailable(StoreError):
    """The store could not be reached or is out of space (endpoint down, no credentials, disk full)."""


class StoreMissing(StoreUnavailable):
    """The store itself does not exist (an S3 bucket that was never created or was deleted)."""


class InvalidKey(StoreError, ValueError):
    """A key no store may hold (escapes the root, an empty or hidden segment); a bug or a bad name upstream."""


class InvalidName(SchemahubError, ValueError):
    """An exchange name or product id breaks its pattern (schemahub.layout), so it must never reach a key."""


class DamagedObject(SchemahubError):
    """An object read back from the store is not what its format promises (truncated, garbage, inconsistent)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class InvalidCheckpoint(DamagedObject):
    """A checkpoint is unreadable or inconsistent with the raw chain; `schemahub repair-checkpoint` rebuilds it."""


# ------------------------------------------------------------------ catalog (Glue)

class CatalogError(SchemahubError):
    """The table catalog (Glue) failed in a way callers cannot fix by retrying."""


class CatalogMissing(CatalogError):
    """The catalog's database or table does not exist (not deployed, or SCHEMAHUB_GLUE_TABLE names another)."""


class CatalogAccessDenied(CatalogError):
    """The catalog refused the request: grant the identity the glue action on the catalog, database and table."""


class CatalogUnavailable(CatalogError):
    """The catalog could not be reached or kept throttling after retries: run again later."""


# ------------------------------------------------------------------ sources

class SourceError(SchemahubError):
    """An exchange answered in a way we cannot use (after any retries)."""


class Retryable(SourceError):
    """Raised by a response parser for a body that deserves another try (truncated, HTML, rate-limit text)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class RetryBudgetExhausted(SourceError):
    """Retries ran out; the product's run stops and advances nothing further."""


class Unreachable(RetryBudgetExhausted):
    """The exchange's host cannot be reached at all (DNS lookup failed, connection refused): retried at most once."""


class BodyTooLarge(SourceError):
    """A response body is larger than the client's cap (refused, never buffered beyond it)."""


class ExchangeBanned(SourceError):
    """The exchange banned this IP (for example Binance 418); stop that exchange's ingest."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class GeoBlocked(ExchangeBanned):
    """The exchange refuses this IP's country (Binance: HTTP 451 to US addresses, AWS regions included).

    Not a rate limit and not worth a retry: recorded like a ban, for a day, so no run keeps knocking.
    """

    PHRASE = "refuses requests from this IP's location"
    BLOCK_S = 24 * 3600.0

    def __init__(self, exchange: str, status: int) -> None:
        super().__init__(f"{exchange} {self.PHRASE} (HTTP {status}); deploy in a region it serves (see README)",
                         retry_after_s=self.BLOCK_S)


class ArchiveError(SourceError):
    """An exchange's archive file cannot be landed as it is (sources/archive.py); nothing of it lands."""


class ArchiveChecksumMismatch(ArchiveError):
    """A downloaded archive file's SHA-256 differs from its checksum file, after every retry."""


class ArchiveTooLarge(ArchiveError):
    """An archive file unpacks to more than archive.source.max_csv_bytes."""


class ArchiveUnreadable(ArchiveError):
    """An archive file matches its checksum but is not one readable CSV of trades (damaged at the exchange)."""


class ArchiveReplaced(ArchiveError):
    """An archive file already (partly) landed has been replaced by the exchange: its checksum changed.

    `entry` is {"file", "landed_sha256", "now_sha256"} (a ProductResult's `replaced`)."""

    def __init__(self, message: str, entry: dict | None = None) -> None:
        super().__init__(message)
        self.entry = entry or {}


class DeadlineReached(SchemahubError):
    """The run's time budget does not allow another attempt; stop cleanly (a later run continues)."""


class Interrupted(DeadlineReached):
    """The user asked the run to stop (Ctrl-C): it stops like at a deadline, landing or dropping whole objects."""


class LeaseHeld(SchemahubError):
    """Another run holds the product's lease."""


class ChainBroken(SchemahubError):
    """The raw objects of a product do not form one chain (a gap or an overlap): no checkpoint can describe them."""
