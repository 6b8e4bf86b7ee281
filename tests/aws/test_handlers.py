"""Handler contract tests: the exact payloads the synthesized state machine and the S3 -> SQS path deliver."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from datetime import datetime, timezone
from urllib.parse import quote_plus

import pytest
import yaml

from schemahub.landing import Checkpoints
from schemahub.query import connect
from schemahub.sim import SIMS, Book
from schemahub.store import open_store
from tests.aws.conftest import state_machine
from tests.conftest import ROOT

PRODUCTS = ["BTC-USD", "ETH-USD"]

pytestmark = pytest.mark.xdist_group("aws")  # one synth, one build/ folder: keep AWS tests on one worker



class Context:
    """The parts of a LambdaContext the handlers and Powertools use."""

    def __init__(self, name: str, remaining_ms: int) -> None:
        self.function_name = name
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        self.aws_request_id = str(uuid.uuid4())
        self._remaining = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self._remaining


def _path(doc, path: str):
    assert path.startswith("$"), path
    for part in [p for p in path[1:].split(".") if p]:
        doc = doc[part]
    return doc


def _params(template: dict, doc, item=None):
    out = {}
    for k, v in template.items():
        if k.endswith(".$"):
            out[k[:-2]] = _path(item if v.startswith("$$.Map.Item.Value") else doc, v.replace("$$.Map.Item.Value", "$"))
        else:
            out[k] = v
    return out


def run_definition(definition: dict, handlers: dict, event: dict, calls: list) -> dict:
    """Execute our state machine's states (Task/Map/Choice/Pass/Succeed, Catch) with local handlers."""

    def run(states: dict, start: str, doc):
        name = start
        for _ in range(200):  # a real execution would spin until its timeout; fail fast instead
            s = states[name]
            if s["Type"] == "Task":
                payload = _params(s["Parameters"]["Payload"], doc) if "Parameters" in s and "Payload" in s["Parameters"] \
                    else _params(s.get("Parameters", {}), doc) if "Parameters" in s else doc
                fn = handlers[s["Resource"] if s["Resource"] in handlers else s["Parameters"]["FunctionName"]]
                try:
                    calls.append((name, payload))
                    doc = fn(payload)
                except Exception as e:  # noqa: BLE001 - the state machine's Catch decides
                    catch = s["Catch"][0]
                    doc = dict(doc) if isinstance(doc, dict) else {}
                    doc[catch["ResultPath"][2:]] = {"Error": type(e).__name__, "Cause": str(e)}
                    name = catch["Next"]
                    continue
            elif s["Type"] == "Map":
                items = _path(doc, s["ItemsPath"])
                proc = s["ItemProcessor"]
                doc = [run(proc["States"], proc["StartAt"], _params(s["ItemSelector"], doc, item)) for item in items]
            elif s["Type"] == "Choice":
                nxt = s.get("Default")
                for c in s["Choices"]:
                    if _path(doc, c["Variable"]) == c["BooleanEquals"]:
                        nxt = c["Next"]
                        break
                name = nxt
                continue
            elif s["Type"] == "Pass":
                doc = _params(s.get("Parameters", {}), doc) if "Parameters" in s else doc
            if s["Type"] == "Succeed" or s.get("End"):
                return doc
            name = s["Next"]
        raise AssertionError(f"state machine did not finish in 200 steps (stuck near {name})")

    return run(definition["States"], definition["StartAt"], event)


def s3_notification(bucket: str, key: str) -> str:
    """The body S3 sends to SQS for one ObjectCreated event."""
    return json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-29T12:00:00.000Z", "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "raw", "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": quote_plus(key, safe="/"), "size": 1, "eTag": "x", "sequencer": "0"}}}]})


def sqs_event(bodies: list[str]) -> dict:
    return {"Records": [{"messageId": f"m{i}", "receiptHandle": f"r{i}", "body": b, "attributes": {
        "ApproximateReceiveCount": "1", "SentTimestamp": "0", "SenderId": "s3", "ApproximateFirstReceiveTimestamp": "0"},
        "messageAttributes": {}, "md5OfBody": "x", "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:RawObjects", "awsRegion": "us-east-1"}
        for i, b in enumerate(bodies)]}


@pytest.fixture
def deployed(synth, s3_bucket, tmp_path, monkeypatch):
    """Handlers wired as Lambda would run them: S3 (moto server), mappings from the code asset, a simulator."""
    template, _, _ = synth
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    seed = {"exchanges": {"coinbase": [{"product_id": p, "symbol": p, "base": p[:3], "quote": "USD"}
                                       for p in PRODUCTS + ["DOGE-USD"]],  # DOGE-USD: the exchange does not serve it
                          "binance": [{"product_id": "BTC-USDT", "symbol": "BTCUSDT", "base": "BTC", "quote": "USDT"}],
                          "kraken": [{"product_id": "BTC-EUR", "symbol": "XBTEUR", "base": "BTC", "quote": "EUR"}]}}
    (mappings / "product_ids_seed.yaml").write_text(yaml.safe_dump(seed))
    t0 = time.time() - 60
    books = {"coinbase": [Book(p, first_id=(k + 1) * 7_000_000, initial=3_000, interval_us=2_000_000, seed=k + 70, t0=t0)
                          for k, p in enumerate(PRODUCTS)],
             "binance": [Book("BTC-USDT", first_id=40_000_000, initial=3_000, interval_us=2_000_000, seed=80, t0=t0)],
             "kraken": [Book("BTC-EUR", first_id=50_000_000, initial=3_000, interval_us=2_000_000, seed=90, t0=t0)]}
    sims = {ex: SIMS[ex](bs) for ex, bs in books.items()}
    storage = f"s3://{s3_bucket}/schemahub"
    env = {"SCHEMAHUB_STORAGE": storage, "SCHEMAHUB_MAPPINGS": str(mappings), "POWERTOOLS_METRICS_NAMESPACE": "schemahub"}
    for ex, sim in sims.items():
        env[f"SCHEMAHUB_{ex.upper()}_BASE_URL"] = sim.start()
        env[f"SCHEMAHUB_{ex.upper()}_RATE_LIMIT"] = "500"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import handlers.transform as transform_mod

    transform_mod._state.clear()
    yield template, books, sims, storage, s3_bucket
    for sim in sims.values():
        sim.stop()


def test_plan_ingest_transform_end_to_end_through_the_real_payloads(deployed):
    template, books, sims, storage, bucket = deployed
    from handlers import ingest, plan, transform

    definition, arns = state_machine(template)
    by_handler = {}
    for logical, arn in arns.items():
        handler = template["Resources"][logical]["Properties"].get("Handler", "")
        by_handler[handler] = arn
    first = books["coinbase"][0]
    since = datetime.fromtimestamp(first.time_us(first.first_id) / 1e6, tz=timezone.utc)

    def ingest_call(payload):
        # A short remaining time makes each invocation stop early and report more to do.
        return ingest.handler({**payload, "since": since.isoformat()}, Context("ingest", remaining_ms=15_300))

    calls: list = []
    out = run_definition(definition, {
        by_handler["handlers.plan.handler"]: lambda p: plan.handler(p, Context("plan", 30_000)),
        by_handler["handlers.ingest.handler"]: ingest_call,
    }, {}, calls)

    # GIVEN/WHEN one cycle ran, THEN each seeded product got its own ingest; the bad one failed alone.
    results = {r.get("product_id") or r["error"]["Cause"].split(":")[0].split("/")[-1]: r for r in out}
    assert results["DOGE-USD"]["failed"] is True and "ProductIngestFailed" in json.dumps(results["DOGE-USD"])
    store = open_store(storage)
    everything = [(ex, b) for ex, bs in books.items() for b in bs]
    assert len(results) == len(everything) + 1  # the plan covered every seeded product of every exchange
    for ex, b in everything:
        assert results[b.product_id]["status"] == "ok" and results[b.product_id]["more_to_do"] is False
        assert results[b.product_id]["exchange"] == ex
        cp = Checkpoints(store).load(ex, b.product_id)
        assert cp.hi == sims[ex].cursor_of(b, b.head())
    loops = sum(1 for name, p in calls if name == "Ingest" and p["product_id"] == "BTC-USD")
    assert loops > 1, "the more-to-do loop never ran"
    assert all(set(p) == {"exchange", "product_id"} for name, p in calls if name == "Ingest")

    # S3 -> SQS -> transform, with one duplicate delivery and one message for a missing object.
    keys = [f"schemahub/{o.key}" for o in store.list("raw/")]
    bodies = [s3_notification(bucket, k) for k in keys]
    r = transform.handler(sqs_event(bodies), Context("transform", 300_000))
    assert r == {"batchItemFailures": []}
    files = {o.key: store.get(o.key).etag for o in store.list("curated/")}
    r = transform.handler(sqs_event(bodies[:2] + [s3_notification(bucket, "schemahub/raw/coinbase/BTC-USD/missing.jsonl.gz")]),
                          Context("transform", 300_000))
    assert r == {"batchItemFailures": [{"itemIdentifier": "m2"}]}  # only the bad message is retried
    assert {o.key: store.get(o.key).etag for o in store.list("curated/")} == files  # duplicates changed nothing
    assert transform.handler(sqs_event([json.dumps({"Event": "s3:TestEvent"})]), Context("transform", 1000)) == {
        "batchItemFailures": []}

    # THEN the table (read from S3 through pyarrow) is exactly the ground truth.
    con = connect(store)
    for ex, b in everything:
        rows = con.execute("SELECT trade_id, price, size, side FROM trades WHERE exchange = ? AND product_id = ? "
                           "ORDER BY trade_time", [ex, b.product_id]).fetchall()
        assert [int(r[0]) for r in rows] == list(range(b.first_id, b.head() + 1))
        for tid, price, size, side in rows:
            w = sims[ex].truth(b, int(tid))
            assert (price, size, side) == (w["price"], w["size"], w["side"])
