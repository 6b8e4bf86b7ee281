"""The source port: what landing needs from an exchange, whatever its paging style."""

from __future__ import annotations

import abc
import json
import re
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from operator import itemgetter

from schemahub.assets import unify_asset
from schemahub.errors import DeadlineReached, Retryable, SourceError
from schemahub.sources.http import HttpClient, Response
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
    # The page checks' findings (see PageChecks in spec.py); the lander adds them to the product's result.
    more_requests: list[str] = field(default_factory=list)  # further requests this chunk took (re-asks, probes)
    gaps: list[tuple[int, int]] = field(default_factory=list)  # confirmed missing ids, inclusive ranges
    backwards: int = 0  # ids below the cursor, outside the request or out of order (reported, never landed twice)
    duplicates: int = 0  # rows printed twice within the range: kept verbatim (raw is the tape)
    warnings: list[str] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return sum(b - a + 1 for a, b in self.gaps)


log = logging.getLogger("schemahub.sources")


@dataclass
class ParsedPage:
    doc: object
    records: list
    lines: list[bytes]


class Source(abc.ABC):
    """An exchange's trade feed, addressed by integer cursors that only grow."""

    supports_backfill = True  # can walk a bounded range below the landed one (--since earlier than before)
    counts_trades = True  # head - cursor is a number of trade ids (not so when the cursor is a time)
    mappings_dir = None  # the folder whose assets.yaml unifies listed asset codes (None: the default folder)
    archive = None  # an ArchiveSource (sources/archive.py) when the exchange publishes its trades as files

    def __init__(self, spec: ExchangeSpec, http: HttpClient) -> None:
        self.spec = spec
        self.http = http
        self.base_url = spec.source.base_url
        self.t = spec.source.trades
        self.p = self.t.pagination
        self.records_path = tuple(self.t.records_path)
        self.errors = spec.source.errors
        self._retry_when = [re.compile(p) for p in self.errors.retry_when] if self.errors else []
        self._heads: dict[tuple[str, int], int] = {}  # (symbol, head as first seen) -> head confirmed

    # ------------------------------------------------------------ page checks
    def confirmed_head(self, symbol: str, cursor: int, head: int, chunk_warnings: list, deadline=None) -> int:
        """The run's head, asked for again when it lies implausibly far ahead of the cursor (max_head_jump).

        The smaller of the two answers wins: a head too low makes a run stop early (the next run goes on), a
        head too high would walk windows of ids that do not exist and move the checkpoint past trades to come.
        """
        jump = self.p.max_head_jump
        if jump is None or head - cursor <= jump:
            return head
        key = (symbol, head)
        if key not in self._heads:
            again = self.head(symbol, deadline)
            if len(self._heads) > 10_000:
                self._heads.clear()
            self._heads[key] = min(head, again)
            if again < head:
                chunk_warnings.append(f"{self.exchange}: {symbol} head {head} is {head - cursor} ids past the cursor "
                                      f"{cursor}; asked again it is {again}: using {again}")
        return self._heads[key]

    def empty_pause(self, attempt: int, deadline) -> None:
        """Wait before asking again after an empty answer (the retry backoff; never past the deadline)."""
        r = self.spec.source.retry
        delay = min(r.max_delay_s, r.base_delay_s * (2 ** attempt))
        clock = self.http.clock
        if deadline is not None and clock.monotonic() + delay > deadline:
            raise DeadlineReached(f"{self.exchange}: no time left to ask again after an empty answer")
        clock.sleep(delay)

    def request_of(self, resp: Response) -> str:
        return resp.url[len(self.base_url):]

    # ------------------------------------------------------------ requests
    def trades_url(self, symbol: str) -> str:
        return self.base_url + self.t.path.replace("{symbol}", symbol)

    def trades_query(self, symbol: str, params: dict) -> dict:
        """The spec's fixed query (with the symbol) followed by the paging parameters."""
        return {**{k: v.replace("{symbol}", symbol) for k, v in self.t.query.items()}, **params}

    def record_ids(self, records) -> list[int]:
        """Each record's integer trade id, for the page checks; a record without one makes the page retryable.

        An id printed as another exact spelling of an integer ('099', '+99', ' 99', '99.0', 99.0) is read as
        that integer: the exchange prints it so on every request, so refusing it would stop the product there
        for good. Raw keeps the line as served and the transform quarantines it (field, value, reason), so it
        never reaches the table. A value that is no exact integer (99.5, true, '9.9e1', '٩٩') makes the page
        retryable: read as a number it could be another trade's id."""
        try:
            raw = list(map(itemgetter(self.t.id_field), records))
        except (KeyError, IndexError, TypeError) as e:
            raise Retryable(f"a record lacks an integer trade id at {self.t.id_field!r}: {e}") from None
        try:
            ids = list(map(int, raw))
        except (TypeError, ValueError):
            ids = None
        if ids is not None:
            for v, i in zip(raw, ids):
                if type(v) is not int and (type(v) is not str or v != str(i)):
                    break
            else:
                return ids
        return [_integer_of(v, self.t.id_field) for v in raw]

    def trades_page(self, symbol: str, params: dict, deadline=None) -> tuple[ParsedPage, list[int], Response]:
        """GET one page of trades with the spec's query and headers: (page, trade ids, response)."""
        def parse(resp):
            page = self.parse_page(resp, self.records_path)
            return page, self.record_ids(page.records)

        resp = self.http.get(self.trades_url(symbol), self.trades_query(symbol, params), parse=parse,
                             headers=self.t.headers or None, deadline=deadline)
        page, ids = resp.parsed
        return page, ids, resp

    def get_records(self, path: str, query: dict, records_path: tuple, symbol: str = "", deadline=None, headers=None):
        """GET a helper endpoint; return (parsed page, response)."""
        url = self.base_url + path.replace("{symbol}", symbol)
        q = {k: v.replace("{symbol}", symbol) for k, v in query.items()}
        resp = self.http.get(url, q, parse=lambda r: self.parse_page(r, records_path), headers=headers, deadline=deadline)
        return resp.parsed, resp

    def list_products(self) -> list[Product]:
        """Products the exchange lists as online, with unified ids."""
        ps = self.spec.source.products
        resp = self.http.get(self.base_url + ps.path, dict(ps.query), parse=self._json)
        records = records_at(resp.parsed, ps.records_path)
        out = []
        for rec in records:
            if not isinstance(rec, dict):
                continue
            if ps.status_field and str(rec.get(ps.status_field, "")).lower() not in ps.online_values:
                continue
            if any(rec.get(flag) for flag in ps.disabled_flags):
                continue
            pair = str(rec.get(ps.pair_field) or "") if ps.pair_field else ""
            if ps.pair_separator in pair:
                base_raw, _, quote_raw = pair.partition(ps.pair_separator)
            elif ps.base_field and rec.get(ps.base_field) and rec.get(ps.quote_field):
                base_raw, quote_raw = str(rec[ps.base_field]), str(rec[ps.quote_field])  # aliases undo X/Z prefixes
            else:
                continue  # e.g. an index listing without a plain pair name
            base, quote = (unify_asset(self.exchange, c, self.mappings_dir) for c in (base_raw, quote_raw))
            out.append(Product(f"{base}-{quote}", str(rec[ps.symbol_field]), base, quote))
        return sorted(out, key=lambda p: p.product_id)

    def _json(self, resp: Response):
        if resp.body[:1] == b"<":
            raise Retryable(f"HTML instead of JSON ({len(resp.body)} bytes)")
        try:
            doc = json.loads(resp.body)
        except ValueError as e:
            raise Retryable(f"unusable JSON ({len(resp.body)} bytes): {e}") from None
        self.check_envelope(doc)
        return doc

    def check_envelope(self, doc) -> None:
        """Raise for an error reported inside an HTTP 200 body (Kraken `error`, OKX `code`)."""
        e = self.errors
        if e is None or not isinstance(doc, dict):
            return
        value = _get(doc, e.path)
        if e.ok_values:
            failed = value is not None and str(value) not in e.ok_values
        else:
            failed = bool(value)
        if not failed:
            return
        text = value if isinstance(value, str) else json.dumps(value)
        if e.message_path:  # e.g. OKX: "50011: Too Many Requests"
            text = f"{text}: {_get(doc, e.message_path)}"
        if any(p.search(text) for p in self._retry_when):
            raise Retryable(f"{self.exchange} says: {text}")
        raise SourceError(f"{self.exchange} answered with an error: {text}")

    @property
    def exchange(self) -> str:
        return self.spec.exchange

    def landed_before(self, symbol: str, cursor: int, max_id: int) -> None:
        """Told before a run: the largest trade id already landed below cursor (id-keyed sources need nothing)."""

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
            if self.errors is not None:  # an error envelope has no records: say what the exchange said
                try:
                    self.check_envelope(json.loads(body))
                except ValueError:
                    pass
            raise Retryable(f"unusable JSON ({len(body)} bytes): {e}") from None
        self.check_envelope(doc)
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


def _get(doc, path):
    for k in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(k)
    return doc


def records_at(doc, path) -> list:
    """The list at path (listings only; trade pages go through split_records). "*" takes every value of an
    object, as Kraken's AssetPairs keys each pair by name."""
    cur = [doc]
    for k in path:
        nxt = []
        for d in cur:
            if not isinstance(d, dict):
                continue
            if k == "*":
                nxt.extend(d.values())
            elif k in d:
                nxt.append(d[k])
        cur = nxt
    if len(cur) == 1 and isinstance(cur[0], list):
        return cur[0]
    return [x for x in cur if isinstance(x, dict)] if path and path[-1] == "*" else []


def parse_time(value, fmt: str) -> datetime:
    """Parse one trade time (used for probing only; the transform is vectorized)."""
    if fmt == "rfc3339":
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if fmt == "float_s":
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    if fmt == "epoch_ms_or_us":
        fmt = "epoch_us" if len(str(value)) >= 16 else "epoch_ms"
    divisor = {"epoch_s": 1, "epoch_ms": 10**3, "epoch_us": 10**6, "epoch_ns": 10**9}[fmt]
    return datetime.fromtimestamp(float(value) / divisor, tz=timezone.utc)


# ------------------------------------------------------------------ trade-id spellings (record_ids)

_INTEGER_SPELLING = re.compile(r"\s*\+?([0-9]+)(?:\.0*)?\s*", re.ASCII)


def _integer_of(value, field) -> int:
    """The integer an id value spells exactly (see Source.record_ids), else Retryable naming it."""
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if type(value) is str:
        m = _INTEGER_SPELLING.fullmatch(value)
        if m:
            return int(m.group(1))
    raise Retryable(_spelling(value, field))


def _spelling(value, field) -> str:
    return (f"trade id {value!r} at {field!r} is not an integer (neither canonical decimal nor another exact "
            "spelling of one: read as a number it could be another trade's id); the page is asked again, and if "
            "the exchange keeps printing it the product stops before that page (nothing of it lands)")
