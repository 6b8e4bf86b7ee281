"""The daily audit on AWS: its Lambda under its own role (IAM enforced), its schedule, MissingTrades and its alarm."""

from __future__ import annotations

import json

import pytest

from tests.aws.conftest import resources
from tests.aws.test_rules import ingest_payload, s3_notification, sqs_event

pytestmark = pytest.mark.xdist_group("aws")


def test_the_daily_audit_runs_under_its_role_writes_reports_and_emits_missing_trades(world):
    pid = next(p for p in world.seed["coinbase"] if p != "BTC-USD")
    ingest = world.sandbox("handlers.ingest.handler").invoke(ingest_payload(world, "coinbase", pid))
    assert ingest.error is None and not ingest.denied(), (ingest.error, ingest.denied())
    store = world.store()
    for o in list(store.list(f"raw/coinbase/{pid}/")):
        t = world.sandbox("handlers.transform.handler").invoke(sqs_event([s3_notification(world.bucket, f"schemahub/{o.key}")]))
        assert t.error is None and not t.denied(), (t.error, t.denied())
    inv = world.sandbox("handlers.audit.handler").invoke({"time": "2026-12-02T01:30:00Z"})
    assert inv.error is None and not inv.denied(), (inv.error, inv.denied(), inv.stdout[-5:])
    assert inv.result["missing_trades"] == 0 and inv.result["exit_code"] == 0, inv.result
    reports = [o.key for o in store.list(f"audit/exchange=coinbase/product_id={pid}/")]
    assert reports and all(json.loads(store.get(k).data)["audited_at"] == "2026-12-02T01:30:00Z" for k in reports)
    emitted = {(ref.name, tuple(sorted(dict(ref.dimensions)))) for ref, _ in inv.metrics}
    assert ("MissingTrades", ("service",)) in emitted, emitted
    # As the schedule calls it: the event's time and the last N days.
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    nightly = world.sandbox("handlers.audit.handler").invoke({"time": now, "days": 1})
    assert nightly.error is None and not nightly.denied(), (nightly.error, nightly.denied())
    assert nightly.result["from_day"] == now[:10] and nightly.result["missing_trades"] == 0, nightly.result
    writes = {c["resource"] for c in inv.calls if c["action"] == "s3:PutObject"}
    assert writes and all("/schemahub/audit/" in r for r in writes), writes


def test_the_audit_is_scheduled_daily_alarms_to_the_topic_and_writes_only_audit(synth):
    template, _, _ = synth
    fns = {k: v for k, v in resources(template, "AWS::Lambda::Function").items()
           if v["Properties"].get("Handler") == "handlers.audit.handler"}
    [(fid, fn)] = fns.items()
    rules = [r["Properties"] for r in resources(template, "AWS::Events::Rule").values()
             if fid in json.dumps(r["Properties"].get("Targets"))]
    assert [r["ScheduleExpression"] for r in rules] == ["cron(30 1 * * ? *)"]
    [target] = rules[0]["Targets"]
    assert json.loads(target["InputTransformer"]["InputTemplate"].replace("<time>", '"t"')) == {"time": "t", "days": 3}
    [alarm] = [a["Properties"] for a in resources(template, "AWS::CloudWatch::Alarm").values()
               if a["Properties"].get("MetricName") == "MissingTrades"]
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "schemahub"}] and alarm["Threshold"] == 1
    assert "Alarms" in json.dumps(alarm["AlarmActions"])
    [policy] = [json.dumps(v["Properties"]["PolicyDocument"]) for k, v in resources(template, "AWS::IAM::Policy").items()
                if k.startswith("AuditFunction")]
    doc = json.loads(policy)
    puts = [s for s in doc["Statement"] if "s3:PutObject" in json.dumps(s["Action"])]
    assert len(puts) == 1 and "schemahub/audit/*" in json.dumps(puts[0]["Resource"]), puts
    assert "s3:DeleteObject" not in policy
