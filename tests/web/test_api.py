"""The status page's JSON (/api/stats, /api/coverage, /api/candles) against stores landed from the simulators.

Ground truth is the simulators' books and the hand-written ADA-USD trades (tests/web/stores.py), never the code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from schemahub.clock import Clock
from schemahub.sim import BinanceSim, Book, CoinbaseSim
from schemahub.store import open_store
from schemahub.web.server import StatusServer
from tests.conftest import ROOT
from tests.web import stores
from tests.web.stores import ada_book, iso_us, land, utc


class FixedClock(Clock):
    def __init__(self, now: datetime) -> None:
        self.at = now

    def now(self) -> datetime:
        return self.at


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def disk_bytes(root, sub: str) -> int:
    total = 0
    for d, _, files in os.walk(os.path.join(root, sub)):
        total += sum(os.path.getsize(os.path.join(d, f)) for f in files)
    return total


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """Coinbase BTC-USD (3,000 trades) and ADA-USD (hand-written, a hole, one bad row), Binance BTC-USDT (2,000)."""
    root = str(tmp_path_factory.mktemp("web") / "store")
    store = open_store(root)
    btc = Book("BTC-USD", initial=3000, interval_us=1_000_000)
    usdt = Book("BTC-USDT", initial=2000, interval_us=1_000_000)
    with CoinbaseSim([btc, ada_book()]) as sim:
        land(store, sim, ["ADA-USD"], since=stores.ADA_SINCE)
        land(store, sim, ["BTC-USD"])
    with BinanceSim([usdt]) as sim:
        land(store, sim, ["BTC-USDT"])
    return {"root": root, "store": store, "books": {("coinbase", "BTC-USD"): btc, ("binance", "BTC-USDT"): usdt}}


@pytest.fixture
def served(lake):
    clock = FixedClock(datetime.now(timezone.utc))
    with StatusServer(lake["store"], port=0, clock=clock, fresh_s=300, stale_s=3000) as server:
        yield server, clock


def by_product(doc: dict) -> dict:
    return {(p["exchange"], p["product_id"]): p for p in doc["products"]}


def test_stats_show_rows_first_last_trade_bytes_and_quarantined_rows_per_product(lake, served):
    server, _ = served
    code, doc = get(server.url + "api/stats")
    assert code == 200
    got = by_product(doc)
    assert sorted(got) == [("binance", "BTC-USDT"), ("coinbase", "ADA-USD"), ("coinbase", "BTC-USD")]
    for (ex, pid), book in lake["books"].items():
        p = got[(ex, pid)]
        assert p["rows"] == book.initial
        assert p["first_trade"] == iso_us(book.time_us(book.first_id))
        assert p["last_trade"] == iso_us(book.time_us(book.head()))
        assert p["quarantined"] == 0
    ada = got[("coinbase", "ADA-USD")]
    assert (ada["rows"], ada["first_trade"], ada["last_trade"], ada["quarantined"]) == (
        stores.ADA_ROWS, stores.ADA_FIRST, stores.ADA_LAST, stores.ADA_QUARANTINED)
    for (ex, pid), p in got.items():
        assert p["raw_bytes"] == disk_bytes(lake["root"], f"raw/{ex}/{pid}") > 0
        table = disk_bytes(lake["root"], f"curated/exchange={ex}/product_id={pid}")
        assert p["table_bytes"] == table > 0
        assert p["bytes_per_trade"] == round(table / p["rows"], 2)
    t = doc["totals"]
    assert t["rows"] == 3000 + 2000 + stores.ADA_ROWS
    assert t["quarantined"] == stores.ADA_QUARANTINED
    assert t["raw_bytes"] == disk_bytes(lake["root"], "raw")
    assert t["table_bytes"] == disk_bytes(lake["root"], "curated")
    assert (t["products"], t["exchanges"]) == (3, 2)


@pytest.mark.parametrize(("age_s", "state"), [(10, "fresh"), (300, "fresh"), (301, "lagging"), (3000, "lagging"),
                                              (3001, "stale")])
def test_freshness_is_coloured_by_the_age_of_the_last_trade(lake, served, age_s, state):
    server, clock = served
    btc = lake["books"][("coinbase", "BTC-USD")]
    last = utc(iso_us(btc.time_us(btc.head())))
    clock.at = last + timedelta(seconds=age_s)
    _, doc = get(server.url + "api/stats")
    got = by_product(doc)
    assert (got[("coinbase", "BTC-USD")]["freshness_s"], got[("coinbase", "BTC-USD")]["state"]) == (age_s, state)
    assert got[("coinbase", "ADA-USD")]["state"] == "stale"  # days old
    # An exchange is as fresh as its newest trade on any product: ADA-USD's age does not make coinbase stale.
    assert {e["exchange"]: e["state"] for e in doc["exchanges"]}["coinbase"] == state
    assert doc["thresholds"] == {"fresh_s": 300, "stale_s": 3000}
    by_state = doc["totals"]["products_by_state"]
    assert by_state["stale"] >= 1 and sum(by_state.values()) == 3


def test_coverage_counts_rows_per_product_day_and_shows_the_hole(lake, served):
    server, _ = served
    code, doc = get(server.url + "api/coverage")
    assert code == 200
    got = by_product(doc)
    ada = got[("coinbase", "ADA-USD")]
    assert (ada["days"], ada["holes"]) == (stores.ADA_DAYS, stores.ADA_HOLES)
    assert (ada["first_day"], ada["last_day"]) == ("2026-11-28", "2026-11-30")
    for key, book in lake["books"].items():
        days = Counter(iso_us(book.time_us(i))[:10] for i in range(book.first_id, book.head() + 1))
        assert got[key]["days"] == [[d, n] for d, n in sorted(days.items())]
        assert got[key]["holes"] == []
    assert doc["first_day"] == "2026-11-28"


def test_candles_match_bars_computed_by_hand_with_the_tie_rule(served):
    server, _ = served
    q = "api/candles?exchange=coinbase&product=ada-usd&start=2026-11-28&end=2026-12-01"
    code, doc = get(server.url + q + "&interval=1m")
    assert code == 200, doc
    assert doc["product_id"] == "ADA-USD" and doc["candles"] == stores.ADA_1M
    _, doc = get(server.url + q + "&interval=1h")
    assert doc["candles"] == stores.ADA_1H
    # start inclusive, end exclusive: the trade at exactly 08:00:00 falls outside.
    _, doc = get(server.url + "api/candles?exchange=coinbase&product=ADA-USD&interval=1m"
                 "&start=2026-11-28T12:01:00Z&end=2026-11-30T08:00:00Z")
    assert doc["candles"] == [stores.ADA_1M[1]]


def test_candles_without_a_range_end_at_the_last_trade(lake, served):
    server, _ = served
    btc = lake["books"][("coinbase", "BTC-USD")]
    code, doc = get(server.url + "api/candles?exchange=coinbase&product=BTC-USD&interval=1m")
    assert code == 200
    last = utc(iso_us(btc.time_us(btc.head())))
    first = utc(iso_us(btc.time_us(btc.first_id)))
    minute = lambda t: t.replace(second=0, microsecond=0).isoformat().replace("+00:00", "Z")  # noqa: E731
    assert (doc["candles"][0]["interval_start"], doc["candles"][-1]["interval_start"]) == (minute(first), minute(last))
    assert sum(c["trades"] for c in doc["candles"]) == btc.initial  # 50 minutes of trades: all inside 120 bars
    _, doc5 = get(server.url + "api/candles?exchange=coinbase&product=BTC-USD&interval=5m")
    assert sum(c["trades"] for c in doc5["candles"]) == btc.initial


@pytest.mark.parametrize(("query", "names"), [
    ("api/candles?product=BTC-USD", "exchange="),
    ("api/candles?exchange=coinbase&product=BTC-USD&interval=7m", "interval='7m'"),
    ("api/candles?exchange=coinbase&product=BTC-USD&start=yesterday", "start='yesterday'"),
    ("api/candles?exchange=coinbase&product=BTC-USD&start=2026-12-02&end=2026-12-01", "end='2026-12-01'"),
    ("api/candles?exchange=coinbase&product=BTC-USD&interval=1m&start=2026-01-01&end=2026-12-01", "narrow the range"),
])
def test_bad_candle_requests_get_400_and_one_line_naming_the_parameter(served, query, names):
    server, _ = served
    code, doc = get(server.url + query)
    assert code == 400 and names in doc["error"] and "\n" not in doc["error"], doc


def test_unknown_paths_get_404(served):
    server, _ = served
    assert get(server.url + "api/nothing")[0] == 404
    assert get(server.url + "etc/passwd")[0] == 404


def test_new_data_is_seen_by_the_next_request_and_concurrent_requests_agree(store_uri):
    """On a local folder and on S3 (moto's server): every request reads the store's files as they are now."""
    store = open_store(store_uri)
    book = Book("ETH-USD", initial=1200, interval_us=1_000_000)
    with CoinbaseSim([book]) as sim, StatusServer(store, port=0) as server:
        _, doc = get(server.url + "api/stats")
        assert doc["totals"]["rows"] == 0 and doc["products"] == []
        _, cov = get(server.url + "api/coverage")
        assert cov["products"] == [] and cov["first_day"] is None
        land(store, sim, ["ETH-USD"])
        assert get(server.url + "api/stats")[1]["totals"]["rows"] == 1200
        book.initial += 345
        land(store, sim, ["ETH-USD"])
        answers: list[tuple[str, int, dict]] = []
        lock = threading.Lock()

        def ask(path: str) -> None:
            for _ in range(4):
                code, doc = get(server.url + path)
                with lock:
                    answers.append((path, code, doc))

        paths = ["api/stats", "api/coverage", "api/candles?exchange=coinbase&product=ETH-USD&interval=5m"] * 4
        threads = [threading.Thread(target=ask, args=(p,)) for p in paths]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(answers) == 48 and all(code == 200 for _, code, _ in answers), [a for a in answers if a[1] != 200][:2]
    for path, _, doc in answers:
        if path == "api/stats":
            assert doc["totals"]["rows"] == 1545
        elif path == "api/coverage":
            assert sum(n for _, n in doc["products"][0]["days"]) == 1545
        else:
            assert sum(c["trades"] for c in doc["candles"]) == 1545


def test_quarantined_count_follows_the_files_under_quarantine(lake, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(lake["root"], root)
    store = open_store(str(root))
    [qkey] = [o.key for o in store.list("quarantine/")]
    with StatusServer(store, port=0) as server:
        assert get(server.url + "api/stats")[1]["totals"]["quarantined"] == stores.ADA_QUARANTINED
        store.put(qkey, store.get(qkey).data * 3)  # rewritten by a later transform with more refused rows
        assert get(server.url + "api/stats")[1]["totals"]["quarantined"] == 3 * stores.ADA_QUARANTINED
        store.put("quarantine/coinbase/ADA-USD/notes.txt", b"a stray file\n")  # not a quarantine key: ignored
        store.delete(qkey)
        assert get(server.url + "api/stats")[1]["totals"]["quarantined"] == 0


def test_page_and_its_files_load_nothing_from_elsewhere(served):
    server, _ = served
    for name in ("", "app.js", "style.css"):
        with urllib.request.urlopen(server.url + name, timeout=10) as r:
            body = r.read().decode()
            assert r.status == 200 and "default-src 'self'" in r.headers["Content-Security-Policy"]
        links = [w for w in body.replace('"', " ").split() if "://" in w]
        assert links in ([], ["http://www.w3.org/2000/svg"]), links  # the SVG namespace is a name, not a fetch


def _serve_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "functions"))
    return subprocess.Popen([sys.executable, "-m", "schemahub.cli", "serve", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_serve_command_prints_its_address_serves_json_and_stops_quietly_on_ctrl_c(lake):
    proc = _serve_cli("--storage", lake["root"], "--port", "0")
    try:
        line = proc.stdout.readline()
        url = line.split(" on ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:"), line
        code, doc = get(url + "api/stats")
        assert code == 200 and doc["totals"]["rows"] == 3000 + 2000 + stores.ADA_ROWS and doc["storage"] == lake["root"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert proc.returncode == 0 and proc.stderr.read() == ""  # Ctrl-C is how it stops: quietly, exit 0


def test_serve_on_a_taken_port_says_so_in_one_line(lake, served):
    server, _ = served
    port = server.httpd.server_address[1]
    proc = _serve_cli("--storage", lake["root"], "--port", str(port))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert err.strip() == (f"schemahub: error: port {port} on 127.0.0.1 is already in use: "
                           "pass --port N (0 picks a free one)")


def test_serve_on_a_folder_that_does_not_exist_says_so_instead_of_showing_an_empty_lake(tmp_path):
    proc = _serve_cli("--storage", str(tmp_path / "typo"), "--port", "0")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and out == ""
    assert err.startswith(f"schemahub: error: storage '{tmp_path / 'typo'}': no such folder") and err.count("\n") == 1


def _ask(server, host: str | None, path: str = "/api/stats") -> tuple[int, str]:
    import http.client

    port = server.httpd.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def test_the_server_answers_only_requests_addressed_to_it_on_the_loopback(served):
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 sends `Host: evil.example:PORT`.
    Only 127.0.0.1, localhost and [::1] at the server's own port are answered; others get 421 and one line."""
    server, _ = served
    port = server.httpd.server_address[1]
    assert server.httpd.server_address[0] == "127.0.0.1"
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        code, body = _ask(server, host)
        assert code == 200 and json.loads(body)["totals"]["rows"] > 0, (host, code, body)
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", f"127.0.0.1.evil.example:{port}",
                 f"localhost:{port}@evil.example", "127.0.0.1", ""):
        for path in ("/api/stats", "/", "/app.js"):
            code, body = _ask(server, host, path)
            assert code == 421, (host, path, code)
            assert json.loads(body) == {"error": f"this server answers requests for 127.0.0.1:{port}, "
                                                 f"localhost:{port} or [::1]:{port}, not {host!r}"}
    code, body = _ask(server, None)
    assert code == 400 and "Host" in json.loads(body)["error"]


@pytest.mark.parametrize(("port", "says"), [("99999", "--port '99999' is more than the maximum of 65535"),
                                            ("65536", "--port '65536' is more than the maximum of 65535"),
                                            ("-1", "--port '-1' must be 0 or more"),
                                            ("http", "--port 'http' is not a whole number")])
def test_serve_with_a_port_out_of_range_is_one_usage_line(tmp_path, port, says):
    (tmp_path / "lake").mkdir()
    proc = _serve_cli("--storage", str(tmp_path / "lake"), "--port", port)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (2, "")
    assert err == f"schemahub: error: {says} (see `schemahub serve --help`)\n"


@pytest.mark.parametrize(("query", "names"), [
    ("api/candles?exchange=krakken&product=BTC-USD&interval=1h", "krakken"),
    ("api/candles?exchange=coinbase&product=BTCUSD&interval=1h", "BTCUSD"),  # Binance's spelling, not Coinbase's
    ("api/candles?exchange=binance&product=ADA-USD&interval=1h", "ADA-USD"),
])
def test_candles_of_a_market_the_store_does_not_hold_are_refused_not_an_empty_chart(served, query, names):
    """A typo in exchange= or product= must not read as "no trades yet" (200 and no bars), as the CLI refuses it."""
    server, _ = served
    code, doc = get(server.url + query)
    assert code == 400 and names in doc["error"] and "\n" not in doc["error"], (code, doc)
    assert "coinbase BTC-USD" in doc["error"]  # and it names what the store does hold
