"""The source port: what landing needs from an exchange, whatever its paging style."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime, timezone

from schemahub.sources.http import HttpClient, Response, Retryable
from schemahub.sources.jsonsplit import JSONShapeError, split_compact_array, split_records
from schemahub.sources.spec import ExchangeSpec


@dataclass(frozen=True)
class Product:
    """One tradable product: unified id and the exchange's own symbol."""

    product_id: str
    symbol: str
    base: str
    quote: str


@dataclass
class Chunk:
    """One fetched page, ready to land: trades in the cursor range (start, end]."""

    start: int
    end: int
    lines: list[bytes]
    request: str
    caught_up: bool
    min_id: int | None = None
    max_id: int | None = None


@dataclass
class ParsedPage:
    doc: object
    records: list
    lines: list[bytes]


class Source(abc.ABC):
    """An exchange's trade feed, addressed by integer cursors that only grow."""

    def __init__(self, spec: ExchangeSpec, http: HttpClient) -> None:
        self.spec = spec
        self.http = http
        self.base_url = spec.source.base_url

    @property
    def exchange(self) -> str:
        return self.spec.exchange

    @abc.abstractmethod
    def list_products(self) -> list[Product]:
        """Products the exchange lists as online."""

    @abc.abstractmethod
    def head(self, symbol: str, deadline: float | None = None) -> int:
        """The newest cursor now (for progress and for telling gaps from the live edge)."""

    @abc.abstractmethod
    def start_cursor(self, symbol: str, since: datetime, head: int, deadline: float | None = None) -> int:
        """The cursor just before the first trade at or after `since`."""

    @abc.abstractmethod
    def fetch(self, symbol: str, cursor: int, *, head: int, upper: int | None = None, deadline: float | None = None) -> Chunk:
        """Fetch the trades after cursor (and at most up to upper)."""

    def parse_page(self, resp: Response, records_path: tuple) -> ParsedPage:
        """Decode a page and keep each record's exact bytes; bad bodies are retryable."""
        body = resp.body
        if body[:1] == b"<" or "html" in (resp.headers.get("Content-Type") or "").lower():
            raise Retryable(f"HTML instead of JSON ({len(body)} bytes)")
        if not records_path:
            fast = split_compact_array(body)
            if fast is not None:
                return ParsedPage(fast[0], fast[0], fast[1])
        try:
            text = body.decode("utf-8")
            doc, records, spans = split_records(text, records_path)
        except (UnicodeDecodeError, JSONShapeError) as e:
            raise Retryable(f"unusable JSON ({len(body)} bytes): {e}") from None
        if len(text) == len(body):  # ASCII: character offsets are byte offsets
            lines = [body[a:b] for a, b in spans]
        else:
            lines = [text[a:b].encode("utf-8") for a, b in spans]
        if "\n" in text or "\r" in text:
            # One trade per line: JSON forbids raw line breaks inside strings, so
            # any line break in an element is whitespace between tokens. Dropping
            # it leaves every value byte-identical.
            lines = [ln.replace(b"\r", b"").replace(b"\n", b"") for ln in lines]
        return ParsedPage(doc, records, lines)


def parse_time(value, fmt: str) -> datetime:
    """Parse one trade time (used for probing only; the transform is vectorized)."""
    if fmt == "rfc3339":
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    divisor = {"epoch_s": 1, "epoch_ms": 10**3, "epoch_us": 10**6, "epoch_ns": 10**9}[fmt]
    return datetime.fromtimestamp(float(value) / divisor, tz=timezone.utc)
