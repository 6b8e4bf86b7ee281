"""What people read: stats with quarantined rows, a totals row and readable sizes; decimals without padding zeros,
right-aligned; and silence when the reader of a pipe goes away (`| head`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

import schemahub
from schemahub.layout import raw_key
from schemahub.rawobject import encode, make_header
from schemahub.store.local import LocalStore
from schemahub.transform import Transformer

ROOT = Path(__file__).resolve().parents[2]


def _trade(tid: int, price: str, size: str = "0.50000000") -> bytes:
    return json.dumps({"time": f"2026-11-30T12:{tid % 60:02d}:00.5Z", "trade_id": tid, "price": price, "size": size,
                       "side": "buy"}, separators=(",", ":")).encode()


def _put(store, product: str, lines: list[bytes], first: int) -> None:
    header = make_header(exchange="coinbase", product_id=product, symbol=product, start=first - 1,
                         end=first + len(lines) - 1, count=len(lines), min_id=first, max_id=first + len(lines) - 1,
                         fetched_at="2026-11-30T13:00:00.000000Z", requests=[])
    store.put(raw_key("coinbase", product, first - 1), encode(header, lines))


@pytest.fixture
def lake(tmp_path):
    store = LocalStore(str(tmp_path / "lake"))
    _put(store, "BTC-USD", [_trade(1, "64000.10"), _trade(2, "not-a-price"), _trade(3, "64000.30")], 1)
    _put(store, "ETH-USD", [_trade(10, "3000.00"), _trade(11, "3001.50")], 10)
    res = Transformer(store).run()
    assert (res.rows, res.quarantined) == (4, 1)
    return str(tmp_path / "lake")


def _cli(*args, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "functions"))
    return subprocess.run([sys.executable, "-m", "schemahub.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False, **kw)


def test_stats_count_quarantined_rows_per_product(lake):
    stats = {r["product_id"]: r for r in schemahub.open(lake).stats().to_pylist()}
    assert (stats["BTC-USD"]["rows"], stats["BTC-USD"]["quarantined_rows"]) == (2, 1)
    assert (stats["ETH-USD"]["rows"], stats["ETH-USD"]["quarantined_rows"]) == (2, 0)
    [row] = [r for r in json.loads(_cli("stats", "--storage", lake, "--format", "json").stdout)
             if r["product_id"] == "BTC-USD"]
    assert row["quarantined_rows"] == 1 and isinstance(row["raw_bytes"], int)  # JSON stays exact


def test_stats_table_has_a_totals_row_and_readable_sizes(lake):
    stats = schemahub.open(lake).stats().to_pylist()
    out = _cli("stats", "--storage", lake).stdout.splitlines()
    header, total = out[0].split(), out[-2].split()
    assert header[:3] == ["exchange", "product_id", "rows"] and "quarantined_rows" in header
    assert total[:5] == ["total", "2", "products", "4", "2026-11-30"]
    raw = sum(r["raw_bytes"] for r in stats)
    assert 100 < raw < 1024 and f"{raw} B" in out[-2]  # small objects: bytes, said so
    assert total[-1] == "1"  # quarantined rows, summed


def test_table_decimals_lose_padding_zeros_and_align_right(lake):
    out = _cli("query", "--storage", lake,
               "SELECT product_id, price, size, price * size AS notional FROM trades ORDER BY price").stdout
    lines = out.splitlines()
    assert lines[0].split() == ["product_id", "price", "size", "notional"]
    assert lines[2].split() == ["ETH-USD", "3000", "0.5", "1500"]
    assert lines[-2].split() == ["BTC-USD", "64000.3", "0.5", "32000.15"]
    # Right-aligned: every number ends in the column of its header's last letter.
    for name in ("price", "notional"):
        end = lines[0].index(name) + len(name)
        assert all(line[:end].endswith(tuple("0123456789")) and (len(line) == end or line[end] == " ")
                   for line in lines[2:-1])
    # CSV and JSON keep every digit the table holds.
    csv_out = _cli("query", "--storage", lake, "--format", "csv", "SELECT price FROM trades ORDER BY price").stdout
    assert csv_out.splitlines()[1] == "3000.000000000000"
    got = _cli("query", "--storage", lake, "--format", "json", "SELECT price FROM trades ORDER BY 1").stdout
    [first, *_] = json.loads(got)
    assert first == {"price": "3000.000000000000"} and Decimal(first["price"]) == 3000


@pytest.mark.parametrize("args", [["query", "SELECT * FROM range(200000)"],
                                  ["query", "--format", "csv", "SELECT * FROM range(200000)"],
                                  ["query", "--format", "json", "SELECT * FROM range(200000)"]])
def test_a_closed_pipe_ends_the_output_silently(lake, args):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "functions"))
    cmd = [sys.executable, "-m", "schemahub.cli", args[0], "--storage", lake, *args[1:]]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as p:
        p.stdout.readline()  # like `| head -1`: read one line, then go away (200,000 rows overflow the pipe)
        p.stdout.close()
        err = p.stderr.read().decode()
        code = p.wait(timeout=120)
    assert (code, err) == (0, "")


def test_a_missing_storage_folder_is_an_error_with_a_hint(tmp_path):
    """The default is ./data and the demo writes ./demo-data: a query there must not read as an empty table."""
    (tmp_path / "demo-data").mkdir()
    r = _cli("query", "SELECT count(*) FROM trades", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert "storage './data': no such folder; did you mean demo-data (--storage demo-data)?" in r.stderr
    with pytest.raises(schemahub.errors.UsageError, match="no such folder"):
        schemahub.open(str(tmp_path / "nope"))


def test_stats_table_speaks_times_ages_and_products(lake):
    """Times to the second in UTC, freshness as an age, counts with separators, and a footer counting products
    (the totals row is not one); JSON keeps freshness_s in seconds."""
    from schemahub.api import human_age

    assert [human_age(s) for s in (0, 42.5, 61, 3725, 129958.6, 90061)] == ["0s", "42s", "1m 1s", "1h 2m", "1d 12h",
                                                                          "1d 1h"]
    out = _cli("stats", "--storage", lake).stdout.splitlines()
    header = out[0].split()
    assert header[5] == "freshness" and out[-1] == "(2 products)"
    btc = out[2].split()
    assert btc[:4] == ["coinbase", "BTC-USD", "2", "2026-11-30"] and btc[4] == "12:01:00Z"  # first trade 12:01:00.5
    assert btc[7].endswith("d") or btc[8].endswith("h")  # an age, e.g. "3d 4h", not seconds
    [row] = [r for r in json.loads(_cli("stats", "--storage", lake, "--format", "json").stdout)
             if r["product_id"] == "BTC-USD"]
    assert isinstance(row["freshness_s"], float) and row["freshness_s"] > 0
