"""`query` and `export` stream: memory stays flat however many rows the result has.

Each run is a subprocess reporting its own peak RSS (ru_maxrss). The same query with ~50x more rows must not
raise the peak by more than a few batches' worth; holding the result (fetchall: ~250 bytes per row here) would
add hundreds of MB. No timing is asserted.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
SMALL, BIG = 20_000, 1_000_000
BOUND_MB = 60  # a result held in memory would cost ~250 MB at BIG rows

_PROBE = ("import resource, sys; from schemahub.cli import main; rc = main(sys.argv[1:]); "
          "sys.stderr.write('MAXRSS %d\\n' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")


def _sql(n: int) -> str:
    return (f"SELECT i, CAST(i AS DECIMAL(38, 12)) + 0.123456789012 AS price, "
            f"TIMESTAMPTZ '2026-01-01' + to_microseconds(i) AS t, 'trade-' || i AS id FROM range({n}) r(i)")


def _run(tmp_path: Path, args: list[str], out: Path) -> int:
    """Run the CLI with stdout to `out`; return its peak RSS in MB."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "functions"))
    with open(out, "wb") as f:
        r = subprocess.run([sys.executable, "-c", _PROBE, *args], stdout=f, stderr=subprocess.PIPE, text=True,
                           env=env, cwd=tmp_path, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    [line] = [x for x in r.stderr.splitlines() if x.startswith("MAXRSS ")]
    return int(line.split()[1]) // 1024  # Linux: kilobytes


@pytest.fixture
def lake(tmp_path):
    (tmp_path / "lake").mkdir()
    return str(tmp_path / "lake")


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_query_streams_in_constant_memory(tmp_path, lake, fmt):
    peaks = {}
    big = BIG if fmt == "csv" else BIG // 3  # JSON is written row by row in Python: fewer rows, same proof
    for n in (SMALL, big):
        out = tmp_path / f"{n}.{fmt}"
        peaks[n] = _run(tmp_path, ["query", "--storage", lake, "--format", fmt, _sql(n)], out)
        # Every row arrives, exact to the last digit.
        if fmt == "csv":
            with open(out) as f:
                first = f.readline().strip()
                count, last = 0, ""
                for line in f:
                    count, last = count + 1, line
            assert first == "i,price,t,id" and count == n
            [(i, price, _t, tid)] = csv.reader([last])
            want = (n - 1, Decimal(n - 1) + Decimal("0.123456789012"), f"trade-{n - 1}")
            assert (int(i), Decimal(price), tid) == want
        else:
            rows = json.loads(out.read_text())
            assert len(rows) == n and rows[-1]["i"] == n - 1
            assert Decimal(rows[-1]["price"]) == Decimal(n - 1) + Decimal("0.123456789012")
            del rows
    assert peaks[big] - peaks[SMALL] < BOUND_MB, peaks


def test_export_parquet_and_csv_stream_in_constant_memory(tmp_path, lake):
    peaks = {}
    for n in (SMALL, BIG):
        dest = tmp_path / f"{n}.parquet"
        peaks[n] = _run(tmp_path, ["export", "--storage", lake, _sql(n), "--output", str(dest)], tmp_path / "log")
        assert (tmp_path / "log").read_text().strip() == f"wrote {n:,} rows to {dest} (parquet)"
        meta = pq.ParquetFile(dest)
        assert meta.metadata.num_rows == n and meta.metadata.num_row_groups > 1  # written batch by batch
        schema = meta.schema_arrow
        assert str(schema.field("price").type) == "decimal128(38, 12)"
        assert str(schema.field("t").type) == "timestamp[us, tz=UTC]"
        group = meta.read_row_group(meta.metadata.num_row_groups - 1)
        last = group.slice(group.num_rows - 1).to_pylist()[0]
        assert last["price"] == Decimal(n - 1) + Decimal("0.123456789012")
    assert peaks[BIG] - peaks[SMALL] < BOUND_MB, peaks
    dest = tmp_path / "x.csv"
    _run(tmp_path, ["export", "--storage", lake, _sql(SMALL), "-o", str(dest)], tmp_path / "log")
    assert dest.read_text().count("\n") == SMALL + 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind


def test_export_failure_leaves_no_file_under_the_name(tmp_path, lake):
    dest = tmp_path / "bad.parquet"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "functions"))
    # The error surfaces mid-stream (row 50,000 fails its cast), after earlier batches were written.
    sql = "SELECT CAST(CASE WHEN i < 50000 THEN '1' ELSE 'x' END AS INTEGER) AS v FROM range(100000) r(i)"
    r = subprocess.run([sys.executable, "-m", "schemahub.cli", "export", "--storage", lake, sql, "-o", str(dest)],
                       capture_output=True, text=True, env=env, timeout=120, check=False)
    assert r.returncode != 0 and "query failed" in r.stderr and "Traceback" not in r.stderr
    assert list(tmp_path.glob("*bad.parquet*")) == []
