"""Every storage key, built and parsed here only.

The store root holds:

    raw/<exchange>/<product>/<start cursor, 20 digits>.jsonl.gz   create-only raw objects (the tape)
    checkpoints/<exchange>/<product>.json                        landed cursor range, compare-and-swap
    leases/<exchange>/<product>.json                             who ingests a product, until when
    bans/<exchange>.json                                         an exchange's ban, until it ends
    transformed/<exchange>/<product>/<start>.jsonl.gz.json       marker: a raw object is in the table
    quarantine/<exchange>/<product>/<start>.jsonl                rows the mapping refused, with reasons
    damaged/<exchange>/<product>/<start>.jsonl.gz.json           a raw object set aside as damaged, with its reason
    curated/exchange=<e>/product_id=<p>/date=<d>/<start>.parquet one file per raw object per UTC day
    compacted/exchange=<e>/product_id=<p>/date=<d>/manifest.json which copy holds the day, and of which parts
    compacted/exchange=<e>/product_id=<p>/date=<d>/v-<digest>/compact-<digest>.parquet
                                                                 one copy per version of a closed product-day, alone
                                                                 in its folder (a Glue partition location)
    archive/<exchange>/<product>/<archive file name>.json        an exchange archive file landed, with its sha256
    raw/<exchange>/<product>/<start>-<end>.amend.jsonl.gz         an audit repair: the ids (start, end] of a hole,
                                                                 create-only; outside the chain, transformed like raw
    audit/exchange=<e>/product_id=<p>/date=<d>.json              the audit's report of one product-day
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from schemahub.errors import InvalidName

RAW = "raw/"
CHECKPOINTS = "checkpoints/"
LEASES = "leases/"
BANS = "bans/"
MARKERS = "transformed/"
QUARANTINE = "quarantine/"
DAMAGED = "damaged/"
CURATED = "curated/"
COMPACTED = "compacted/"
ARCHIVE_FILES = "archive/"
MANIFEST = "manifest.json"
AUDIT = "audit/"
AMEND_SUFFIX = ".amend.jsonl.gz"

RAW_SUFFIX = ".jsonl.gz"
CURSOR_DIGITS = 20

#: Unified product ids: BASE-QUOTE, upper-case letters and digits. Safe in paths and Hive partitions.
PRODUCT_ID = re.compile(r"^[A-Z0-9]{1,20}-[A-Z0-9]{1,20}$")
#: Exchange names, as in mappings/exchanges/<exchange>.yaml.
EXCHANGE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

_RAW_KEY = re.compile(r"^raw/(?P<exchange>[^/]+)/(?P<product>[^/]+)/(?P<start>[0-9]{20})\.jsonl\.gz$")


def check_product_id(product_id: str) -> str:
    """Return product_id, or raise InvalidName (a ValueError) naming the pattern."""
    if not isinstance(product_id, str) or not PRODUCT_ID.match(product_id):
        raise InvalidName(f"product id {product_id!r} is not BASE-QUOTE in upper-case letters and digits (e.g. BTC-USD)")
    return product_id


def _ids(exchange: str, product_id: str) -> tuple[str, str]:
    if not EXCHANGE.match(exchange):
        raise InvalidName(f"exchange {exchange!r} is not lower-case letters, digits and '_'")
    return exchange, check_product_id(product_id)


# ------------------------------------------------------------------ raw

def raw_prefix(exchange: str | None = None, product_id: str | None = None) -> str:
    if exchange is None:
        return RAW
    if product_id is None:
        return f"{RAW}{exchange}/"
    exchange, product_id = _ids(exchange, product_id)
    return f"{RAW}{exchange}/{product_id}/"


def raw_key(exchange: str, product_id: str, cursor: int) -> str:
    if cursor < 0 or cursor >= 10**CURSOR_DIGITS:
        raise ValueError(f"cursor {cursor} does not fit a raw key")
    return f"{raw_prefix(exchange, product_id)}{cursor:0{CURSOR_DIGITS}d}{RAW_SUFFIX}"


@dataclass(frozen=True)
class RawKey:
    key: str
    exchange: str
    product_id: str
    start: int


def parse_raw_key(key: str) -> RawKey | None:
    """The parts of a raw key, or None for a key that is not one (a stray file under raw/)."""
    m = _RAW_KEY.match(key)
    if not m or not EXCHANGE.match(m["exchange"]) or not PRODUCT_ID.match(m["product"]):
        return None
    return RawKey(key, m["exchange"], m["product"], int(m["start"]))


_AMEND_KEY = re.compile(r"^raw/(?P<exchange>[^/]+)/(?P<product>[^/]+)/(?P<start>[0-9]{20})-(?P<end>[0-9]{20})"
                        r"\.amend\.jsonl\.gz$")


def amendment_key(exchange: str, product_id: str, start: int, end: int) -> str:
    """An audit repair's object: the ids (start, end] of one hole. Not a step of the chain (the lander, whose
    keys are 20 digits alone, never reads it); the transform reads it like any raw object."""
    if not 0 <= start < end < 10**CURSOR_DIGITS:
        raise ValueError(f"amendment range ({start}, {end}] does not fit a key")
    return f"{raw_prefix(exchange, product_id)}{start:0{CURSOR_DIGITS}d}-{end:0{CURSOR_DIGITS}d}{AMEND_SUFFIX}"


def parse_amendment_key(key: str) -> RawKey | None:
    m = _AMEND_KEY.match(key)
    if not m or not EXCHANGE.match(m["exchange"]) or not PRODUCT_ID.match(m["product"]):
        return None
    return RawKey(key, m["exchange"], m["product"], int(m["start"]))


def parse_source_key(key: str) -> RawKey | None:
    """A raw object's key or an amendment's: what the transform reads (None for anything else)."""
    return parse_raw_key(key) or parse_amendment_key(key)


def raw_name(key: str) -> str:
    """The start-cursor stem of a raw key ('00000000000000000042'), used to name derived files."""
    return key.rsplit("/", 1)[-1].split(".", 1)[0]


# ------------------------------------------------------------------ landing state

def checkpoint_key(exchange: str, product_id: str) -> str:
    exchange, product_id = _ids(exchange, product_id)
    return f"{CHECKPOINTS}{exchange}/{product_id}.json"


def parse_checkpoint_key(key: str) -> tuple[str, str] | None:
    """(exchange, product_id) of a checkpoint key, or None."""
    if not key.startswith(CHECKPOINTS) or not key.endswith(".json"):
        return None
    parts = key[len(CHECKPOINTS):-len(".json")].split("/")
    if len(parts) != 2 or not all(parts):
        return None
    try:
        return _ids(parts[0], parts[1])
    except ValueError:
        return None


def lease_key(exchange: str, product_id: str) -> str:
    exchange, product_id = _ids(exchange, product_id)
    return f"{LEASES}{exchange}/{product_id}.json"


def ban_key(exchange: str) -> str:
    return f"{BANS}{exchange}.json"


_ARCHIVE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def archive_record_prefix(exchange: str, product_id: str) -> str:
    exchange, product_id = _ids(exchange, product_id)
    return f"{ARCHIVE_FILES}{exchange}/{product_id}/"


def archive_record_key(exchange: str, product_id: str, file_name: str) -> str:
    """Where landing records an exchange archive file it took rows from (its name and SHA-256)."""
    if not _ARCHIVE_FILE.match(file_name):
        raise InvalidName(f"archive file name {file_name!r} is not letters, digits, '.', '_' and '-'")
    return f"{archive_record_prefix(exchange, product_id)}{file_name}.json"


# ------------------------------------------------------------------ transform

def marker_key(raw_key: str) -> str:
    return MARKERS + raw_key.removeprefix(RAW) + ".json"


def marker_prefix(raw_prefix_: str = RAW) -> str:
    return MARKERS + raw_prefix_.removeprefix(RAW)


def raw_key_of_marker(marker: str) -> str:
    return RAW + marker.removeprefix(MARKERS).removesuffix(".json")


def quarantine_key(raw_key: str) -> str:
    return QUARANTINE + raw_key.removeprefix(RAW).removesuffix(".gz")


def raw_key_of_quarantine(key: str) -> RawKey | None:
    """The raw object a quarantine object was set aside from (None for a stray key under quarantine/)."""
    if not key.startswith(QUARANTINE):
        return None
    return parse_raw_key(RAW + key.removeprefix(QUARANTINE) + ".gz")


def damaged_key(raw_key: str) -> str:
    """Where the transform records that a raw object is damaged (set aside, with its reason)."""
    return DAMAGED + raw_key.removeprefix(RAW) + ".json"


def damaged_prefix(raw_prefix_: str = RAW) -> str:
    return DAMAGED + raw_prefix_.removeprefix(RAW)


def raw_key_of_damaged(key: str) -> str:
    return RAW + key.removeprefix(DAMAGED).removesuffix(".json")


# ------------------------------------------------------------------ table files

def partition(exchange: str, product_id: str, date: str) -> str:
    """'exchange=<e>/product_id=<p>/date=<d>': one product-day, as Hive partitions."""
    return f"exchange={exchange}/product_id={product_id}/date={date}"


def parse_partition(path: str) -> tuple[str, str, str] | None:
    """(exchange, product_id, date) from 'exchange=../product_id=../date=..', or None."""
    parts = path.strip("/").split("/")
    if len(parts) != 3:
        return None
    out = []
    for want, part in zip(("exchange", "product_id", "date"), parts):
        name, sep, value = part.partition("=")
        if name != want or not sep or not value:
            return None
        out.append(value)
    return out[0], out[1], out[2]


def curated_prefix(exchange: str | None = None, product_id: str | None = None) -> str:
    key = CURATED
    if exchange:
        key += f"exchange={exchange}/"
        if product_id:
            key += f"product_id={product_id}/"
    return key


def curated_key(exchange: str, product_id: str, date: str, raw_key: str) -> str:
    """File name derived from the raw key: re-transforming an object rewrites the same files."""
    return f"{CURATED}{partition(exchange, product_id, date)}/{raw_name(raw_key)}.parquet"


#: The folder of one compacted copy: 'v-' and the 16 hex digits of the digest of the parts it holds.
VERSION = re.compile(r"^v-[0-9a-f]{16}$")


def parse_table_file(key: str) -> tuple[str, str, tuple[str, str, str]] | None:
    """(base, partition path, (exchange, product_id, date)) for a key under curated/ or compacted/
    (a compacted copy may sit one version folder deeper: compacted/<partition>/v-<digest>/<name>)."""
    for base in (CURATED, COMPACTED):
        if key.startswith(base):
            rest = key[len(base):]
            path, _, _name = rest.rpartition("/")
            if base == COMPACTED:
                head, _, last = path.rpartition("/")
                if VERSION.match(last):
                    path = head
            parsed = parse_partition(path)
            return (base, path, parsed) if parsed else None
    return None


def parts_prefix(partition_path: str) -> str:
    """The folder of a day's parts: what a catalog partition points at while the day is read as parts."""
    return f"{CURATED}{partition_path}/"


def compacted_version(digest: str) -> str:
    """'v-<digest>': the folder of one compacted copy, inside its partition under compacted/."""
    name = f"v-{digest}"
    if not VERSION.match(name):
        raise ValueError(f"{digest!r} is not 16 hex digits")
    return name


def compacted_file(digest: str) -> str:
    """A copy's path relative to its partition under compacted/ (what a manifest's `file` names)."""
    return f"{compacted_version(digest)}/compact-{digest}.parquet"


def compacted_key(partition_path: str, name: str) -> str:
    return f"{COMPACTED}{partition_path}/{name}"


def location_of(key: str) -> str:
    """The folder holding a table file: a compacted copy's version folder, or a day's parts folder."""
    return key.rsplit("/", 1)[0] + "/"


def manifest_key(partition_path: str) -> str:
    return f"{COMPACTED}{partition_path}/{MANIFEST}"


# ------------------------------------------------------------------ audit

def audit_prefix(exchange: str | None = None, product_id: str | None = None) -> str:
    key = AUDIT
    if exchange:
        key += f"exchange={exchange}/"
        if product_id:
            key += f"product_id={product_id}/"
    return key


def audit_key(exchange: str, product_id: str, date: str) -> str:
    """The audit's report of one product-day (rewritten by each audit: the latest one)."""
    exchange, product_id = _ids(exchange, product_id)
    return f"{AUDIT}{partition(exchange, product_id, date)}.json"


def parse_audit_key(key: str) -> tuple[str, str, str] | None:
    """(exchange, product_id, date) of a report key, or None."""
    if not key.startswith(AUDIT) or not key.endswith(".json"):
        return None
    return parse_partition(key[len(AUDIT):-len(".json")])
