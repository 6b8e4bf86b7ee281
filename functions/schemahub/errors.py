"""Named domain errors. Messages say what is wrong and what to do."""

from __future__ import annotations


class SchemahubError(Exception):
    """Base for every error schemahub raises on purpose."""


class ConfigError(SchemahubError):
    """A mapping or setting is invalid; the message names file, line and key."""


class StoreError(SchemahubError):
    """The object store failed in a way callers cannot fix by retrying."""


class NotFound(StoreError):
    """The key does not exist."""


class PreconditionFailed(StoreError):
    """A conditional write lost: the key exists (create-only) or changed (compare-and-swap)."""


class SourceError(SchemahubError):
    """An exchange answered in a way we cannot use (after any retries)."""


class RetryBudgetExhausted(SourceError):
    """Retries ran out; the product's run stops and advances nothing further."""


class ExchangeBanned(SourceError):
    """The exchange banned this IP (for example Binance 418); stop that exchange's ingest."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class LeaseHeld(SchemahubError):
    """Another run holds the product's lease."""
