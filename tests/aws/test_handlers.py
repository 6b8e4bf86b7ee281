"""The whole flow under AWS's rules: schedule -> Plan -> Map of Express children -> Ingest (loops, backlog over
several Lambda runs and cycles, one product that fails, one geo-blocked exchange) -> Summarize; S3 notifications
through SQS -> Transform. Every function runs from its synthesized asset and layers with the template's
environment under its own role (sandbox.py); the state machine runs with Step Functions' semantics (asl.py).
The table must equal the simulators' truth, and the failed products must page someone."""

from __future__ import annotations

import boto3
import pytest

from schemahub.query import connect
from tests.aws.asl import EXPRESS_LIMIT_S, Interpreter
from tests.aws.conftest import UNSERVED
from tests.aws.template import alarm_metrics, dashboard_metrics, resources
from tests.aws.test_rules import s3_notification, sqs_event

pytestmark = pytest.mark.xdist_group("aws")

SLOW = ("coinbase", "BTC-USD")  # its Lambda runs get half a second each: a backlog over several runs and cycles
GEO = "binance refuses requests from this IP's location (HTTP 451); deploy in a region it serves (see README)"


class Queue:
    """The RawObjects queue as the event source mapping drives it: batches, partial failures, redrive to the DLQ."""

    def __init__(self, template: dict) -> None:
        [esm] = resources(template, "AWS::Lambda::EventSourceMapping").values()
        self.batch = esm["Properties"]["BatchSize"]
        [q] = [v for k, v in resources(template, "AWS::SQS::Queue").items() if "RawObjects" in k]
        self.max_receives = q["Properties"]["RedrivePolicy"]["maxReceiveCount"]
        self.messages: list[list] = []  # [body, receives]
        self.dlq: list[str] = []

    def send(self, body: str) -> None:
        self.messages.append([body, 0])

    def drain(self, transform) -> list:
        invocations = []
        while self.messages:
            batch, self.messages = self.messages[:self.batch], self.messages[self.batch:]
            for m in batch:
                m[1] += 1
            inv = transform.invoke(sqs_event([b for b, _ in batch]))
            invocations.append(inv)
            assert inv.error is None, inv.error
            failed = {int(f["itemIdentifier"][1:]) for f in inv.result["batchItemFailures"]}
            for i, m in enumerate(batch):
                if i in failed:
                    (self.dlq.append(m[0]) if m[1] >= self.max_receives else self.messages.append(m))
        return invocations


def test_cycles_land_transform_and_page_under_aws_rules(world):
    dep = world.dep
    world.geo_blocked = True  # what api.binance.com answers from a US region
    fns = {h: dep.function_id(f"handlers.{h}.handler") for h in ("plan", "ingest", "summary", "transform")}
    arn_kind = {dep.function_arn(logical): h for h, logical in fns.items()}
    timeouts = {dep.function_arn(lg): int(dep.function(lg)["Timeout"]) for lg in fns.values()}
    runs = {}

    def invoke(arn, payload):
        kind = arn_kind[arn]
        remaining = None
        if kind == "ingest":
            key = (payload["exchange"], payload["product_id"])
            runs[key] = runs.get(key, 0) + 1
            if key == SLOW:
                remaining = 15_500  # the handler keeps 15 s for its last write: half a second of work
        inv = world.sandbox(f"handlers.{kind}.handler").invoke(payload, remaining_ms=remaining)
        return inv.result, (None if inv.error is None else {k: inv.error[k] for k in ("errorType", "errorMessage")})

    sm, definition = dep.state_machine()
    role = dep.role_statements(dep.template["Resources"][sm]["Properties"]["RoleArn"]["Fn::GetAtt"][0])
    cycle = Interpreter(definition, invoke=invoke, timeouts=timeouts, role_statements=role)
    [notif] = resources(dep.template, "Custom::S3BucketNotifications").values()
    [qc] = notif["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    raw_prefix = qc["Filter"]["Key"]["FilterRules"][0]["Value"]
    queue, seen = Queue(dep.template), set()
    admin = boto3.client("s3", endpoint_url=world.endpoint)
    transform = world.sandbox("handlers.transform.handler")
    outputs, binance_requests = [], []

    for n in range(8):
        binance_requests.append(len(world.sims["binance"].requests))
        ex = cycle.execute({})
        assert ex.status == "SUCCEEDED", ex.error
        for child in ex.children:  # every child ends inside the Express limit, by construction
            assert child.status == "SUCCEEDED" and child.duration_s <= EXPRESS_LIMIT_S, (child.item, child.duration_s)
        outputs.append(ex.output)
        # S3 -> SQS: one notification per new raw object (the bucket's filter), one duplicate delivery.
        keys = [o["Key"] for p in admin.get_paginator("list_objects_v2").paginate(Bucket=world.bucket, Prefix=raw_prefix)
                for o in p.get("Contents", [])]
        new = [k for k in keys if k not in seen]
        seen.update(new)
        for k in new:
            queue.send(s3_notification(world.bucket, k))
        if new:
            queue.send(s3_notification(world.bucket, new[0]))
        queue.drain(transform)
        if not ex.output["more_to_do"]:
            break
    assert not queue.dlq

    # The backlog took several Lambda runs over several cycles; the loop inside a child ran too.
    assert runs[SLOW] >= 4 and len(outputs) >= 2, (runs[SLOW], len(outputs))
    assert outputs[0]["more_to_do"] == [{"exchange": "coinbase", "product_id": "BTC-USD"}]

    # Failed products are listed in every cycle's output, with the retry input; the geo-block is recorded
    # like a ban, so after the first cycle binance gets no request at all.
    want = sorted([{"exchange": UNSERVED[0], "product_id": UNSERVED[1]},
                   *({"exchange": "binance", "product_id": p} for p in world.seed["binance"])],
                  key=lambda p: (p["exchange"], p["product_id"]))
    for out in outputs:
        assert [{k: f[k] for k in ("exchange", "product_id")} for f in out["failed"]] == want
        assert out["retry_input"] == {"only": want}
    assert all(GEO in f["error"] for f in outputs[-1]["failed"] if f["exchange"] == "binance"), outputs[-1]["failed"]
    assert binance_requests[1] == binance_requests[-1] > 0 and len(world.sims["binance"].requests) == binance_requests[1]

    # The daily audit (its EventBridge rule's event) finds every landed id in the table.
    audit = world.sandbox("handlers.audit.handler").invoke({"time": "2026-12-02T01:30:00Z"})
    assert audit.error is None and audit.result["missing_trades"] == 0, (audit.error, audit.result)

    # No call of any function was denied: each role grants what its function does, with S3's 403 rule applied.
    for sb in world.sandboxes.values():
        for inv in sb.invocations:
            assert not inv.denied(), (sb.logical, inv.denied())

    # The ProductsFailed alarm, evaluated on what the Summary function emitted, is in ALARM and pages the topic.
    emitted = [(m, v) for sb in world.sandboxes.values() for inv in sb.invocations for m, v in inv.metrics]
    [alarm] = [a for a in dep.alarms().values() if any(m.name == "ProductsFailed" for m in alarm_metrics(a))]
    [metric] = alarm_metrics(alarm)
    values = [v for m, v in emitted if m == metric]
    assert values and max(values) >= alarm["Threshold"] and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    [topic] = resources(dep.template, "AWS::SNS::Topic")
    assert alarm["AlarmActions"] == [dep.ref(topic)]

    # Every custom metric a dashboard graph or an alarm reads was emitted with exactly that dimension set.
    readers = [m for _, m in dashboard_metrics(dep.dashboard())] + [m for a in dep.alarms().values() for m in alarm_metrics(a)]
    emitted_refs = {m for m, _ in emitted}
    served = {ex for ex, books in world.books.items() if books and ex != "binance"}
    for m in readers:
        if m.namespace == "schemahub" and dict(m.dimensions).get("exchange") in (None, *served):
            assert m in emitted_refs, f"{m} is read but never emitted; emitted: {[str(e) for e in emitted_refs if e.name == m.name]}"

    # The table, read from S3, is exactly the simulators' truth for every served product.
    con = connect(world.store())
    for ex, books in world.books.items():
        if ex == "binance":
            continue
        sim = world.sims[ex]
        for b in books:
            rows = con.execute("SELECT trade_id, price, size, side FROM trades WHERE exchange = ? AND product_id = ? "
                               "ORDER BY trade_time, trade_id", [ex, b.product_id]).fetchall()
            assert sorted(int(r[0]) for r in rows) == list(range(b.first_id, b.head() + 1)), (ex, b.product_id)
            for tid, price, size, side in rows:
                w = sim.truth(b, int(tid))
                assert (price, size, side) == (w["price"], w["size"], w["side"]), (ex, b.product_id, tid)
