"""The Python API: open a lake (a folder or s3://bucket/prefix) and read trades, candles and stats as Arrow.

    import schemahub
    lake = schemahub.open("demo-data")
    lake.sql("SELECT exchange, count(*) FROM trades GROUP BY ALL")          # a DuckDB relation
    lake.trades(exchange="coinbase", product="BTC-USD", start="2026-11-30", end="2026-12-01")   # pyarrow.Table
    lake.candles("1m", exchange="coinbase", product="BTC-USD")            # pyarrow.Table (schemahub.candles)
    lake.stats()                                                          # pyarrow.Table

Prices and sizes are exact Arrow decimal128(38, 12) and times timestamp[us, UTC]. `product` is the unified id
(BTC-USD) or the exchange's own symbol (BTCUSDT, XBTUSD), as in the CLI. `start` is inclusive and `end`
exclusive; both take ISO-8601 dates or times (UTC unless they say otherwise), `datetime` or `date`. Tables convert
with `.to_pandas()` or `polars.from_arrow(...)` when those are installed (they are not dependencies).

A Lake reads the table as it was when first queried; `refresh()` picks up data landed since.
"""

from __future__ import annotations

import os
from datetime import date, datetime, time, timezone
from typing import Any

import pyarrow as pa

from schemahub.candles import CANDLES, candles_sql, interval_us, overflow_message, register
from schemahub.errors import QueryError, UsageError
from schemahub.table import TIMESTAMP, TRADES

_TRADE_ORDER = "exchange, product_id, trade_time, TRY_CAST(trade_id AS HUGEINT) NULLS LAST, trade_id"

#: Column types of Lake.stats() (columns schemahub.query.stats adds later are appended with inferred types).
STATS = pa.schema([
    ("exchange", pa.string()), ("product_id", pa.string()), ("rows", pa.int64()),
    ("first_trade", TIMESTAMP), ("last_trade", TIMESTAMP), ("freshness_s", pa.float64()),
    ("raw_bytes", pa.int64()), ("curated_bytes", pa.int64()), ("compacted_bytes", pa.int64()),
    ("curated_to_raw", pa.float64()), ("bytes_per_trade", pa.float64()), ("quarantined_rows", pa.int64()),
    # From the latest `schemahub audit` reports (audit/): distinct ids / ids served in the audited days, and the
    # ids missing for no known reason (lost or unexplained); null where the product was never audited.
    ("audited_coverage", pa.float64()), ("audited_missing", pa.int64()),
])


def open(location: str | os.PathLike | None = None, *, mappings: str | os.PathLike | None = None) -> Lake:  # noqa: A001
    """Open the lake at a folder or `s3://bucket/prefix` (default $SCHEMAHUB_STORAGE, else ./data).

    `mappings` is the mappings folder whose seed maps exchange symbols to unified ids (default as in the CLI).
    A folder that does not exist is an error (a typo would otherwise read as an empty lake).
    """
    return Lake(location, mappings=mappings)


class Lake:
    """A read-only view of one schemahub storage location."""

    def __init__(self, location: str | os.PathLike | None = None, *, mappings: str | os.PathLike | None = None) -> None:
        from schemahub.store import DEFAULT_STORAGE, open_store

        where = os.fspath(location) if location is not None else None
        where = where or os.environ.get("SCHEMAHUB_STORAGE") or DEFAULT_STORAGE
        if not where.startswith("s3://") and not os.path.isdir(where):
            hint = ("did you mean demo-data (--storage demo-data)? " if os.path.isdir("demo-data")
                    and os.path.abspath(where) != os.path.abspath("demo-data") else "")
            raise UsageError(f"storage {where!r}: no such folder; {hint}`schemahub demo` writes ./demo-data, "
                             "`schemahub ingest --storage PATH` writes PATH")
        self.store = open_store(where)
        self.location = where
        self.mappings = mappings
        self._con = None

    def __repr__(self) -> str:
        return f"schemahub.Lake({self.store.uri!r})"

    # ------------------------------------------------------------------ connection

    @property
    def connection(self):
        """The DuckDB connection: a `trades` view and the `candles(...)` table macro (UTC session)."""
        if self._con is None:
            from schemahub.query import connect

            con = connect(self.store)
            con.execute("SET enable_progress_bar = false")  # DuckDB would draw it on stdout, inside the results
            register(con, self.mappings)
            self._con = con
        return self._con

    def refresh(self) -> Lake:
        """Read the table again (files landed or compacted since the first query); returns the lake."""
        self._con = None
        return self

    def sql(self, query: str, params: Any = None):
        """A DuckDB relation for SQL over `trades` and `candles('1m', ex := .., product := .., start := ..,
        stop := ..)`; `.arrow()`, `.fetchall()`, `.df()` and `.pl()` read it."""
        import duckdb

        try:
            return self.connection.sql(query, params=params)
        except duckdb.Error as e:
            raise QueryError(f"query failed: {str(e).splitlines()[0]}") from None

    def _table(self, query: str, schema: pa.Schema) -> pa.Table:
        import duckdb

        try:
            table = self.connection.sql(query).to_arrow_table()
        except duckdb.Error as e:
            raise QueryError(f"query failed: {str(e).splitlines()[0]}") from None
        return table.cast(schema)

    # ------------------------------------------------------------------ reads

    def trades(self, exchange: str | None = None, product: str | None = None, start=None, end=None) -> pa.Table:
        """Trades in [start, end), ordered by exchange, product, trade time and the exchange's trade order."""
        ex, pid = self._market(exchange, product)
        lo, hi = _window(start, end)
        where = _where(ex, pid, lo, hi)
        return self._table(f"SELECT {', '.join(TRADES.names)} FROM trades{where} ORDER BY {_TRADE_ORDER}", TRADES)

    def candles(self, interval: str = "1m", exchange: str | None = None, product: str | None = None,
                start=None, end=None) -> pa.Table:
        """OHLCV bars of trades in [start, end); columns and rules in schemahub.candles."""
        interval_us(interval)
        ex, pid = self._market(exchange, product)
        lo, hi = _window(start, end)
        try:
            return self._table(candles_sql(interval, exchange=ex, product_id=pid, start=lo, stop=hi), CANDLES)
        except QueryError as e:
            said = "Overflow" in str(e) and overflow_message(self.connection, interval, exchange=ex, product_id=pid,
                                                             start=lo, stop=hi)
            if said:
                raise QueryError(said) from None
            raise

    def stats(self) -> pa.Table:
        """One row per exchange and product: rows, first/last trade, freshness, bytes (schemahub.query.stats) and
        the rows set aside in quarantine/."""
        from schemahub.query import stats

        rows = stats(self.store)
        bad = quarantined_rows(self.store)
        seen = {(r["exchange"], r["product_id"]) for r in rows}
        rows += [{"exchange": ex, "product_id": pid, "rows": 0} for ex, pid in sorted(set(bad) - seen)]
        from schemahub.audit import coverage

        audited = coverage(self.store)
        for r in rows:
            r["quarantined_rows"] = bad.get((r["exchange"], r["product_id"]), 0)
            a = audited.get((r["exchange"], r["product_id"])) or {}
            r["audited_coverage"], r["audited_missing"] = a.get("coverage"), a.get("missing")
        extra = [k for r in rows for k in r if k not in STATS.names]
        schema = STATS
        for name in dict.fromkeys(extra):
            schema = schema.append(pa.field(name, pa.array([r.get(name) for r in rows]).type))
        return pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)

    def empty_hint(self) -> str | None:
        """For a local folder without a table yet: '0 rows: no data under ./data — did you mean --storage
        demo-data?' when a folder beside it (or ./demo-data, ./data) has one, else how to land some; None when
        the table has files (or for S3)."""
        from schemahub.compact import read_layout

        if self.location.startswith("s3://") or read_layout(self.store).keys():
            return None
        here = os.path.abspath(self.location)
        near = [os.path.join(os.path.dirname(here), e.name) for e in _scan(os.path.dirname(here)) if e.is_dir()]
        near += [os.path.abspath(name) for name in ("demo-data", "data")]
        found = sorted({d for d in near if d != here and _has_table(d)},
                       key=lambda d: (os.path.basename(d) != "demo-data", d))
        if found:
            rel = os.path.relpath(found[0])
            return f"0 rows: no data under {self.location} — did you mean --storage {rel if '..' not in rel else found[0]}?"
        return (f"0 rows: no data under {self.location} yet: `schemahub run --storage {self.location}` lands some "
                "(or `schemahub demo` for offline data in ./demo-data)")

    # ------------------------------------------------------------------ names

    def _market(self, exchange: str | None, product: str | None) -> tuple[str | None, str | None]:
        """(exchange, unified product id) from what the caller typed: the id or the exchange's symbol."""
        from schemahub.ingest import load_seed

        seed = load_seed(self.mappings)
        ex = exchange.strip().lower() if exchange else None
        if ex is not None and ex not in seed and ex not in self._distinct("exchange"):
            known = sorted(set(seed) | set(self._distinct("exchange")))
            raise UsageError(f"unknown exchange {exchange!r} (known: {', '.join(known) or 'none'})")
        if not product:
            return ex, None
        want = product.strip().upper()
        found = {p.product_id for e, ps in seed.items() if ex in (None, e) for p in ps
                 if want in (p.product_id.upper(), p.symbol.upper())}
        if not found:
            q = ("SELECT DISTINCT product_id FROM trades WHERE (upper(product_id) = $want OR upper(symbol) = $want)"
                 + (" AND exchange = $ex" if ex else ""))
            found = {r[0] for r in self.connection.execute(q, {"want": want} | ({"ex": ex} if ex else {})).fetchall()}
        if len(found) > 1:
            raise UsageError(f"product {product!r} names {', '.join(sorted(found))}: pass exchange= as well")
        if not found:
            where = f"on {ex}" if ex else "on any exchange"
            raise UsageError(f"no product {product!r} {where} in the seed or under {self.store.uri} "
                             "(pass the unified id, e.g. BTC-USD, or the exchange's symbol)")
        return ex, found.pop()

    def _distinct(self, column: str) -> set[str]:
        return {r[0] for r in self.connection.execute(f"SELECT DISTINCT {column} FROM trades").fetchall()}


def _scan(folder: str, limit: int = 500) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return [e for _, e in zip(range(limit), it, strict=False)]
    except OSError:
        return []


def _has_table(folder: str) -> bool:
    """A schemahub folder with table files: curated/ or compacted/ holding something."""
    return any(_scan(os.path.join(folder, sub), 1) for sub in ("curated", "compacted"))


def quarantined_rows(store) -> dict[tuple[str, str], int]:
    """Rows set aside in quarantine/, per exchange and product (one JSON line per row; such objects are rare)."""
    from schemahub.layout import QUARANTINE, raw_key_of_quarantine

    out: dict[tuple[str, str], int] = {}
    for info in store.list(QUARANTINE):
        raw = raw_key_of_quarantine(info.key)
        if raw is None:
            continue
        data = store.get(info.key).data
        n = data.count(b"\n") + (0 if not data or data.endswith(b"\n") else 1)
        out[(raw.exchange, raw.product_id)] = out.get((raw.exchange, raw.product_id), 0) + n
    return out


def human_bytes(n: int | None) -> str:
    """1536 -> '1.5 KiB' (binary units, 3 significant digits)."""
    if n is None:
        return ""
    size, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(size) < 1024 or unit == "PiB":
            break
        size /= 1024
    return f"{n} B" if unit == "B" else f"{size:.3g} {unit}" if size < 100 else f"{size:.0f} {unit}"


def human_age(seconds: float | None) -> str:
    """129958.6 -> '1d 12h', 3725 -> '1h 2m', 42.5 -> '42s' (the two largest units)."""
    if seconds is None:
        return ""
    left, parts = int(max(seconds, 0)), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


def _utc_text(ts) -> str:
    return "" if ts is None else ts.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def stats_for_people(table: pa.Table) -> pa.Table:
    """Lake.stats() as the `stats` table prints it: a totals row, sizes human-readable (KiB, MiB), times to the
    second, freshness as an age ('1d 12h'), row counts with thousands separators (CSV and JSON stay exact)."""
    from schemahub.output import FOOTER, RIGHT

    rows = table.to_pylist()
    total: dict = {"exchange": "total", "product_id": f"{len(rows)} product{'s' if len(rows) != 1 else ''}"}
    for col in ("rows", "raw_bytes", "curated_bytes", "compacted_bytes", "quarantined_rows"):
        total[col] = sum(r.get(col) or 0 for r in rows)
    firsts = [r["first_trade"] for r in rows if r.get("first_trade")]
    lasts = [r["last_trade"] for r in rows if r.get("last_trade")]
    total["first_trade"], total["last_trade"] = (min(firsts) if firsts else None), (max(lasts) if lasts else None)
    total["curated_to_raw"] = round(total["curated_bytes"] / total["raw_bytes"], 3) if total["raw_bytes"] else None
    total["bytes_per_trade"] = round(total["curated_bytes"] / total["rows"], 2) if total["rows"] else None
    ages = [r["freshness_s"] for r in rows if r.get("freshness_s") is not None]
    total["freshness_s"] = min(ages) if ages else None  # as fresh as the freshest product
    text = {"rows": lambda v: f"{v or 0:,}", "quarantined_rows": lambda v: f"{v or 0:,}", "freshness_s": human_age,
            "first_trade": _utc_text, "last_trade": _utc_text,
            **{c: human_bytes for c in ("raw_bytes", "curated_bytes", "compacted_bytes")}}
    names = {"freshness_s": "freshness"}
    out = [{names.get(k, k): (text[k](v) if k in text else v) for k, v in row.items()} for row in [*rows, total]]
    fields = []
    for f in table.schema:
        if f.name in text:
            right = f.name not in ("first_trade", "last_trade")
            fields.append(pa.field(names.get(f.name, f.name), pa.string(), metadata=RIGHT if right else None))
        else:
            fields.append(f)
    footer = f"({len(rows)} product{'s' if len(rows) != 1 else ''})".encode()
    schema = pa.schema(fields, metadata={FOOTER: footer})
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in fields} for r in out], schema=schema)


def _when(value, name: str) -> datetime | None:
    """An aware UTC datetime from an ISO-8601 date/time string, a date or a datetime (naive means UTC)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        ts = value
    elif isinstance(value, date):
        ts = datetime.combine(value, time())
    elif isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise UsageError(f"{name}={value!r} is not an ISO-8601 date or time (e.g. 2026-11-30 or "
                             "2026-11-30T12:00:00Z)") from None
    else:
        raise UsageError(f"{name}={value!r}: expected an ISO-8601 string, a date or a datetime")
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def _window(start, end) -> tuple[str | None, str | None]:
    lo, hi = _when(start, "start"), _when(end, "end")
    if lo is not None and hi is not None and lo >= hi:
        raise UsageError(f"start {lo.isoformat()} is not before end {hi.isoformat()} (end is exclusive)")
    return tuple(t.isoformat(timespec="microseconds") if t else None for t in (lo, hi))


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _where(exchange: str | None, product_id: str | None, lo: str | None, hi: str | None) -> str:
    terms = []
    if exchange is not None:
        terms.append(f"exchange = {_lit(exchange)}")
    if product_id is not None:
        terms.append(f"product_id = {_lit(product_id)}")
    if lo is not None:
        terms.append(f"trade_time >= TIMESTAMPTZ {_lit(lo)}")
    if hi is not None:
        terms.append(f"trade_time < TIMESTAMPTZ {_lit(hi)}")
    return (" WHERE " + " AND ".join(terms)) if terms else ""
