"""Ctrl-C as a person presses it: `schemahub ingest` in a subprocess against loopback simulators (two exchanges,
two products each), SIGINT once the first objects landed. The issue: one Ctrl-C was ignored for 30 s, a second
exited 130 silently and threw away what had been fetched.

Ground truth is the simulators' books: after the interrupted run and a rerun, each product's raw chain holds
every trade id of its book exactly once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

from schemahub import rawobject
from schemahub.landing.checkpoint import Checkpoints
from schemahub.layout import parse_raw_key
from schemahub.sim import BinanceSim, Book, CoinbaseSim
from schemahub.store.local import LocalStore
from tests.conftest import ROOT
from tests.terminal.test_offline import _mappings

PRODUCTS = {"coinbase": ["BTC-USD", "ETH-USD"], "binance": ["BTC-USDT", "ETH-USDT"]}
TRADES = 30_000


def _sims(faults=None):
    sims = {}
    for k, (ex, cls) in enumerate((("coinbase", CoinbaseSim), ("binance", BinanceSim))):
        books = [Book(p, first_id=1_000_000 * (n + 1) + 10_000_000 * k, initial=TRADES, interval_us=1_000_000,
                      seed=n + 10 * k) for n, p in enumerate(PRODUCTS[ex])]
        sims[ex] = cls(books, faults=faults() if faults else None)
        sims[ex].start()
    return sims


def _env(sims) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "functions"))
    for ex, sim in sims.items():
        env[f"SCHEMAHUB_{ex.upper()}_BASE_URL"] = sim.url
        env[f"SCHEMAHUB_{ex.upper()}_RATE_LIMIT"] = "12"
    return env


def _cmd(mappings, store) -> list[str]:
    since = (datetime.now(timezone.utc) - timedelta(seconds=TRADES + 3600)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [sys.executable, "-m", "schemahub.cli", "ingest", "--mappings", mappings, "--storage", store,
            "--since", since]


def _landed_objects(store_dir) -> int:
    root = os.path.join(store_dir, "raw")
    return sum(len([f for f in files if f.endswith(".jsonl.gz") or ".json" in f]) for _, _, files in os.walk(root))


def _interrupt(cmd, env, store_dir, presses: int, before=None) -> tuple[subprocess.CompletedProcess, float]:
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    give_up = time.monotonic() + 60
    while _landed_objects(store_dir) < 2 and time.monotonic() < give_up and p.poll() is None:
        time.sleep(0.05)
    assert p.poll() is None, "the ingest ended before it could be interrupted: make the books bigger"
    if before:
        before()
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    lines = []
    if presses == 2:  # the second press once the first is acknowledged, while the run still lands
        lines.append(p.stderr.readline())
        while "stopping:" not in lines[-1]:
            lines.append(p.stderr.readline())
        p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    return subprocess.CompletedProcess(cmd, p.returncode, out, "".join(lines) + err), time.monotonic() - t0


def _chain(store: LocalStore, sim, ex: str, pid: str) -> list[int]:
    """The trade ids of the product's raw objects, after checking they form one chain ending at the checkpoint."""
    cp = Checkpoints(store).load(ex, pid)
    keys = sorted(i.key for i in store.list(f"raw/{ex}/{pid}/"))
    if cp is None:  # stopped before its first run chose a start: nothing may have landed
        assert not keys, keys
        return []
    ids, at = [], cp.lo
    for key in keys:
        assert parse_raw_key(key) is not None, f"a stray (partial or temporary) object: {key}"
        header, lines = rawobject.decode(store.get(key).data, key)
        assert header.start == at, f"{key} starts at {header.start}, the chain is at {at}"
        at = header.end
        ids += [sim.id_of(line) for line in lines]
    assert at == cp.hi, f"the checkpoint's hi {cp.hi} is not the chain's end {at}"
    return ids


def _check_dir_clean(store_dir) -> None:
    for dirpath, _, files in os.walk(os.path.join(store_dir, "raw")):
        for f in files:
            assert not f.startswith("."), f"a temporary file was left: {os.path.join(dirpath, f)}"


def _printed_trades(out: str) -> dict[tuple[str, str], int]:
    return {(m[1], m[2]): int(m[3].replace(",", "")) for m in re.finditer(r"^(\w+) (\S+): .*?([\d,]+) trades landed", out, re.M)}


def test_one_ctrl_c_stops_lands_whole_objects_says_what_landed_and_a_rerun_lands_the_rest(tmp_path):
    sims = _sims()
    try:
        env, mappings, store_dir = _env(sims), _mappings(tmp_path, PRODUCTS), str(tmp_path / "d")
        r, took = _interrupt(_cmd(mappings, store_dir), env, store_dir, presses=1)
        print(f"SIGINT to exit: {took:.2f} s")
        assert r.returncode == 130, (r.stdout, r.stderr)
        assert "stopping: landing the objects in flight" in r.stderr
        assert "interrupted:" in r.stderr and "a rerun continues" in r.stderr
        first = _printed_trades(r.stdout)
        assert set(first) == {(ex, p) for ex, ps in PRODUCTS.items() for p in ps}, r.stdout
        assert 0 < sum(first.values()) < 4 * TRADES, r.stdout
        _check_dir_clean(store_dir)
        store = LocalStore(store_dir)
        for (ex, pid), n in first.items():
            assert len(_chain(store, sims[ex], ex, pid)) == n  # what it says landed is what the chain holds

        again = subprocess.run(_cmd(mappings, store_dir), env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        rest = _printed_trades(again.stdout)
        for ex, ps in PRODUCTS.items():
            for pid in ps:
                book = sims[ex].books[pid]
                ids = _chain(store, sims[ex], ex, pid)
                assert sorted(ids) == list(range(book.first_id, book.head() + 1)), f"{ex} {pid}: not every trade once"
                assert rest[(ex, pid)] == TRADES - first[(ex, pid)]  # exactly the remaining trades
    finally:
        for s in sims.values():
            s.stop()


def test_a_second_ctrl_c_exits_at_once_and_the_chain_still_holds(tmp_path):
    from schemahub.sim import FaultPlan

    sims = _sims()

    def slow_answers():  # the requests in flight at the first press take 10 s: the first stop waits for them
        for sim in sims.values():
            sim.faults = FaultPlan(rates={"slow": 1.0}, slow_s=10.0)
        time.sleep(0.5)

    try:
        env, mappings, store_dir = _env(sims), _mappings(tmp_path, PRODUCTS), str(tmp_path / "d")
        r, took = _interrupt(_cmd(mappings, store_dir), env, store_dir, presses=2, before=slow_answers)
        print(f"two SIGINTs to exit: {took:.2f} s")  # well under the 10 s the answers in flight take
        assert r.returncode == 130, (r.stdout, r.stderr)
        assert "interrupted again: exiting now" in r.stderr
        for sim in sims.values():
            sim.faults = FaultPlan()
        again = subprocess.run(_cmd(mappings, store_dir), env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        store = LocalStore(store_dir)
        for ex, ps in PRODUCTS.items():
            for pid in ps:
                book = sims[ex].books[pid]
                assert sorted(_chain(store, sims[ex], ex, pid)) == list(range(book.first_id, book.head() + 1))
    finally:
        for s in sims.values():
            s.stop()
