"""What a user sees at a terminal: binary output refused on a TTY, `stats --watch` (redrawn in place on a TTY, plain
repeated blocks in a pipe, Ctrl-C ends it quietly with exit 0), `stats | head` silent, the hint when the storage
folder has no data but a neighbour has, and `sim` export lines as one block.

Each command runs as a subprocess, with a real pseudo-terminal (os.openpty) where it must believe it is on one.
Reads wait for output, never for a time; the deadlines below only stop a hung test.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schemahub.layout import raw_key
from schemahub.rawobject import encode, make_header
from schemahub.store.local import LocalStore
from schemahub.transform import Transformer
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT / "functions"))
CLI = [sys.executable, "-m", "schemahub.cli"]
HUNG = 60  # seconds: only a hung command reaches it


def _land(root: Path, product: str, first: int, n: int = 3) -> None:
    store = LocalStore(str(root))
    lines = [json.dumps({"time": f"2026-11-30T12:00:{i % 60:02d}.5Z", "trade_id": i, "price": "100.50",
                         "size": "0.25", "side": "buy"}, separators=(",", ":")).encode()
             for i in range(first, first + n)]
    header = make_header(exchange="coinbase", product_id=product, symbol=product, start=first - 1,
                         end=first + n - 1, count=n, min_id=first, max_id=first + n - 1,
                         fetched_at="2026-11-30T13:00:00.000000Z", requests=[])
    store.put(raw_key("coinbase", product, first - 1), encode(header, lines))
    Transformer(store).run()


@pytest.fixture
def lake(tmp_path) -> Path:
    _land(tmp_path / "lake", "BTC-USD", 1)
    return tmp_path / "lake"


class Pty:
    """A subprocess whose stdout is a terminal; stderr is a pipe, read at the end."""

    def __init__(self, args: list[str], cwd=None) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(CLI + args, stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     env=ENV, cwd=cwd)
        os.close(slave)
        self.out = b""

    def read_until(self, pattern: bytes, count: int = 1) -> bytes:
        deadline = time.monotonic() + HUNG
        while self.out.count(pattern) < count:
            if time.monotonic() > deadline or self.proc.poll() is not None and not select.select(
                    [self.master], [], [], 0)[0]:
                raise AssertionError(f"no {count} x {pattern!r} in {self.out[-2000:]!r}")
            if select.select([self.master], [], [], 0.5)[0]:
                try:
                    self.out += os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    continue
        return self.out

    def finish(self) -> tuple[int, str]:
        code = self.proc.wait(timeout=HUNG)
        err = self.proc.stderr.read().decode()
        os.close(self.master)
        return code, err


@pytest.mark.parametrize("args", [["candles", "--format", "parquet"], ["query", "--format", "parquet", "SELECT 1"]])
def test_parquet_is_not_written_to_a_terminal(lake, args):
    t = Pty([args[0], "--storage", str(lake), *args[1:]])
    code, err = t.finish()
    assert (code, t.out) == (2, b"")
    assert err == ("schemahub: error: --format parquet writes binary: pass --output FILE.parquet (or pipe it)\n")


def test_export_always_needs_an_output_file(lake):
    r = subprocess.run(CLI + ["export", "--storage", str(lake), "SELECT 1"], capture_output=True, text=True, env=ENV,
                       timeout=HUNG, check=False)
    assert (r.returncode, r.stdout) == (2, "") and "--output" in r.stderr and r.stderr.count("\n") == 1


def test_stats_into_a_closed_pipe_is_silent(lake):
    with subprocess.Popen(CLI + ["stats", "--storage", str(lake)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=ENV) as p:
        p.stdout.close()  # `| head -0`: the reader is gone before the first line
        err = p.stderr.read().decode()
        code = p.wait(timeout=HUNG)
    assert (code, err) == (0, "")


def test_stats_watch_redraws_in_place_on_a_terminal_until_ctrl_c(lake):
    t = Pty(["stats", "--storage", str(lake), "--watch", "0.2"])
    out = t.read_until(b"\x1b[H\x1b[2J", 3)  # home + clear: each frame replaces the last
    t.proc.send_signal(signal.SIGINT)
    code, err = t.finish()
    assert (code, err) == (0, "")  # Ctrl-C is how --watch ends: no error, no "interrupted" line
    frame = out.split(b"\x1b[H\x1b[2J")[2].decode().replace("\r\n", "\n")
    lines = frame.splitlines()
    assert re.fullmatch(rf"schemahub stats: {re.escape(str(lake))}, every 0\.2 s, "
                        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(Ctrl-C stops\)", lines[0]), lines[0]
    assert lines[2].split()[:3] == ["exchange", "product_id", "rows"]
    assert lines[4].split()[:3] == ["coinbase", "BTC-USD", "3"] and lines[5].split()[:4] == ["total", "1", "product",
                                                                                             "3"]


def test_stats_watch_in_a_pipe_prints_plain_blocks_and_shows_new_data(lake):
    p = subprocess.Popen(CLI + ["stats", "--storage", str(lake), "--watch", "0.2"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=ENV, text=True)
    try:
        blocks, block = [], []
        landed = False
        deadline = time.monotonic() + HUNG
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            assert line, p.stderr.read()
            if line.startswith("schemahub stats: ") and block:
                blocks.append(block)
                block = []
                if not landed:  # new data lands while it watches
                    _land(lake, "ETH-USD", 10, n=5)
                    landed = True
            block.append(line)
            # ETH-USD shows as soon as its raw object is there (0 rows until the transform): wait for its rows.
            if block[-1].split()[:4] == ["total", "2", "products", "8"]:
                assert any(x.split()[:3] == ["coinbase", "ETH-USD", "5"] for x in block), block
                break
        else:
            raise AssertionError(blocks)
    finally:
        p.send_signal(signal.SIGINT)
        code = p.wait(timeout=HUNG)
        err = p.stderr.read()
    assert (code, err) == (0, "")
    text = "".join(line for b in blocks for line in b)
    assert "\x1b" not in text
    assert blocks[0][1] == "\n" and blocks[0][-1] == "\n"  # blank lines set the blocks apart
    assert [x.split()[:4] for x in block if x.startswith("total")] == [["total", "2", "products", "8"]]


def test_stats_watch_needs_a_positive_number_of_seconds(lake):
    r = subprocess.run(CLI + ["stats", "--storage", str(lake), "--watch", "0"], capture_output=True, text=True,
                       env=ENV, timeout=HUNG, check=False)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == ("schemahub: error: --watch '0' is not a number more than 0 (no nan or inf) "
                        "(see `schemahub stats --help`)\n")


@pytest.mark.parametrize("args", [["query", "SELECT count(*) AS n FROM trades"], ["stats"],
                                  ["candles", "--format", "csv"]])
def test_an_empty_storage_folder_points_at_the_one_with_data(tmp_path, args):
    """The default is ./data and the demo writes ./demo-data: a query in ./data (created, but empty) says so."""
    (tmp_path / "data").mkdir()
    _land(tmp_path / "demo-data", "BTC-USD", 1)
    r = subprocess.run(CLI + args, capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=HUNG, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "schemahub: 0 rows: no data under ./data — did you mean --storage demo-data?\n"
    # With the data, no hint.
    r = subprocess.run(CLI + args + ["--storage", "demo-data"], capture_output=True, text=True, env=ENV, cwd=tmp_path,
                       timeout=HUNG, check=False)
    assert (r.returncode, r.stderr) == (0, "")


def test_an_empty_storage_folder_with_no_neighbour_says_how_to_fill_it(tmp_path):
    (tmp_path / "mine").mkdir()
    r = subprocess.run(CLI + ["query", "--storage", "mine", "SELECT count(*) FROM trades"], capture_output=True,
                       text=True, env=ENV, cwd=tmp_path, timeout=HUNG, check=False)
    assert r.returncode == 0 and r.stdout.splitlines()[2].strip() == "0"
    assert r.stderr == ("schemahub: 0 rows: no data under mine yet: `schemahub run --storage mine` lands some "
                        "(or `schemahub demo` for offline data in ./demo-data)\n")


def _free_ports(n: int) -> int:
    """A first port whose next n - 1 are free as well (sim takes consecutive ports)."""
    import socket

    for _ in range(50):
        port = free_port()
        try:
            held = []
            for p in range(port, port + n):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise AssertionError("no 4 consecutive free ports")


def test_sim_on_a_taken_port_is_one_usage_line():
    port = _free_ports(4)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", port + 2))
        s.listen()
        r = subprocess.run(CLI + ["sim", "--port", str(port)], capture_output=True, text=True, env=ENV,
                           timeout=HUNG, check=False)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == (f"schemahub: error: sim: cannot listen on 127.0.0.1 ports {port}-{port + 3} (Address already "
                        "in use): pass another --port (0 picks free ones)\n")


def test_sim_prints_its_export_lines_as_one_block_and_logs_to_stderr():
    port = _free_ports(4)
    p = subprocess.Popen(CLI + ["sim", "--port", str(port), "--products", "BTC-USD"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=ENV, text=True)
    try:
        lines = [p.stdout.readline() for _ in range(4)]
    finally:
        p.send_signal(signal.SIGINT)
        code = p.wait(timeout=HUNG)
    out, err = p.stdout.read(), p.stderr.read()
    names = ["BINANCE", "COINBASE", "KRAKEN", "OKX"]
    assert lines == [f"export SCHEMAHUB_{n}_BASE_URL=http://127.0.0.1:{port + i}\n" for i, n in enumerate(names)]
    assert out == ""  # nothing else on stdout: the block pastes as it is
    assert f"coinbase simulator listening on http://127.0.0.1:{port + 1}" in err
    assert code == 0 and "interrupted" not in err and "Traceback" not in err


def test_sql_that_reads_no_table_gets_no_hint(tmp_path):
    (tmp_path / "data").mkdir()
    _land(tmp_path / "demo-data", "BTC-USD", 1)
    r = subprocess.run(CLI + ["query", "SELECT 42 AS answer"], capture_output=True, text=True, env=ENV, cwd=tmp_path,
                       timeout=HUNG, check=False)
    assert (r.returncode, r.stderr) == (0, "") and "42" in r.stdout


def test_ctrl_c_while_duckdb_runs_ends_watch_quietly_and_other_commands_with_130(lake, monkeypatch, capsys):
    """Ctrl-C that lands inside a DuckDB call reaches Python as duckdb's own error, not KeyboardInterrupt: seen on
    `stats --watch` (duckdb 2.0: `RuntimeError: Query interrupted` from `SET TimeZone`), which printed "internal
    error" and exited 1. --watch must still end quietly (0), and any other command as interrupted (130)."""
    import duckdb

    from schemahub import api, cli

    calls = {"n": 0}
    real = api.Lake.stats

    def stats_then_ctrl_c(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("Query interrupted")  # what duckdb raised when SIGINT came during con.execute
        return real(self)

    monkeypatch.setattr(api.Lake, "stats", stats_then_ctrl_c)
    monkeypatch.setattr(cli.time, "sleep", lambda s: None)
    assert cli.main(["stats", "--storage", str(lake), "--watch", "1"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.count("schemahub stats: ") == 2, (out, err)

    for raised in (RuntimeError("Query interrupted"), duckdb.InterruptException("INTERRUPT Error: Interrupted!")):
        def query_then_ctrl_c(self, *a, raised=raised, **k):
            raise raised

        monkeypatch.setattr(api.Lake, "stats", query_then_ctrl_c)
        assert cli.main(["stats", "--storage", str(lake)]) == 130
        err = capsys.readouterr().err
        assert "internal error" not in err and "interrupted" in err, err
