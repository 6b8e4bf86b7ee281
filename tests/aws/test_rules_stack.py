"""The AWS rules layer, on the synthesized template: resource policies, Step Functions semantics under a
virtual clock (asl.py), alarms and their actions, Athena, packaging. No handler runs here (fast)."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.aws.asl import EXPRESS_LIMIT_S, Interpreter
from tests.aws.iam import allowed
from tests.aws.template import Deployment, alarm_metrics, resources
from tests.conftest import ROOT

pytestmark = pytest.mark.xdist_group("aws")


@pytest.fixture(scope="module")
def dep(synth):
    template, _, out = synth
    return Deployment(template, out)


# ------------------------------------------------------------------ finding 1: resource policies and grants

def test_queue_takes_s3_events_only_from_this_accounts_bucket(dep):
    [queue] = [k for k, v in resources(dep.template, "AWS::SQS::Queue").items() if "RawObjects" in k]
    stmts = dep.resource_policy("AWS::SQS::QueuePolicy", "Queues", queue)
    s3 = {"Service": "s3.amazonaws.com"}
    arn = dep.att(queue, "Arn")
    ours = {"aws:SourceArn": f"arn:aws:s3:::{dep.bucket}", "aws:SourceAccount": dep.account, "aws:SecureTransport": "true"}
    assert allowed(stmts, "sqs:SendMessage", arn, ours, s3)
    # A bucket of the same name in another account (after ours is deleted) must not feed our queue.
    assert not allowed(stmts, "sqs:SendMessage", arn, {**ours, "aws:SourceAccount": "999999999999"}, s3)


def test_functions_hold_no_grant_they_never_use(dep):
    for handler in ("handlers.ingest.handler", "handlers.transform.handler", "handlers.plan.handler"):
        stmts = dep.role_statements(dep.role_of(dep.function_id(handler)))
        for prefix in ("raw/", "curated/", "transformed/", "quarantine/", "checkpoints/", "leases/", "bans/"):
            assert not allowed(stmts, "s3:DeleteObject", f"arn:aws:s3:::{dep.bucket}/schemahub/{prefix}x"), (handler, prefix)


def test_lifecycle_rules_fit_an_unversioned_bucket(dep):
    b = dep.template["Resources"][dep.bucket_id()]["Properties"]
    versioned = b.get("VersioningConfiguration", {}).get("Status") == "Enabled"
    for rule in b["LifecycleConfiguration"]["Rules"]:
        if not versioned:
            assert "NoncurrentVersionExpiration" not in rule and "NoncurrentVersionExpirationInDays" not in rule, rule


def test_workgroup_can_be_deleted_with_its_history(dep):
    [wg] = resources(dep.template, "AWS::Athena::WorkGroup").values()
    assert wg["Properties"].get("RecursiveDeleteOption") is True


def test_make_deploy_never_waits_for_a_prompt():
    mk = (ROOT / "Makefile").read_text()
    deploy = mk.split("\ndeploy:", 1)[1].split("\n\n", 1)[0]
    assert "--require-approval never" in deploy, deploy


def test_nag_reasons_say_what_the_grant_really_is():
    from cdk_app.nag import ACKNOWLEDGED

    basic = next(v for k, v in ACKNOWLEDGED.items() if "AWSLambdaBasicExecutionRole" in k)
    # The managed policy allows logs:CreateLogGroup/CreateLogStream/PutLogEvents on Resource "*".
    assert "only" not in basic and "every log group" in basic, basic
    assert "double" not in ACKNOWLEDGED["AwsSolutions-S1"], ACKNOWLEDGED["AwsSolutions-S1"]


def test_names_are_unique_per_stage(synth, tmp_path_factory):
    """A second stage (another stack name) in the same account and region must not collide."""
    from cdk_app.app import build_app

    out = tmp_path_factory.mktemp("cdk.stage")
    app, stack = build_app(str(out), code_dir=tmp_path_factory.mktemp("code2") / "c", stack_name="SchemahubStaging",
                           nag=False)
    import json

    app.synth()
    other = json.loads((out / "SchemahubStaging.template.json").read_text())
    first = synth[0]

    def names(t):
        out = set()
        for r in t["Resources"].values():
            p = r["Properties"]
            for key in ("Name", "DashboardName", "StateMachineName", "TopicName"):
                if isinstance(p.get(key), str):
                    out.add((r["Type"], p[key]))
            if r["Type"] == "AWS::Glue::Database":
                out.add((r["Type"], p["DatabaseInput"]["Name"]))
            if r["Type"] == "AWS::Glue::Table":
                out.add(("db-of-table", p["DatabaseName"] if isinstance(p["DatabaseName"], str) else ""))
        return out

    clash = {n for n in names(first) & names(other) if n[0] != "AWS::Athena::NamedQuery"}
    assert not clash, clash


# ------------------------------------------------------------------ finding 3: Express limits, tolerated failures, Catch

def _interp(dep, behaviour):
    """The cycle with fake functions: behaviour(fn_kind, payload, attempt) -> (result, error)."""
    sm, d = dep.state_machine()
    kinds = {dep.function_arn(dep.function_id(h)): h.split(".")[1]
             for h in ("handlers.plan.handler", "handlers.ingest.handler", "handlers.transform.handler",
                       "handlers.summary.handler") if _has_fn(dep, h)}
    timeouts = {arn: int(dep.function(dep.function_id(f"handlers.{k}.handler")).get("Timeout", 3)) for arn, k in kinds.items()}
    attempts: dict = {}

    def invoke(arn, payload):
        key = (arn, str(sorted((k, str(v)) for k, v in (payload or {}).items() if k in ("exchange", "product_id"))))
        attempts[key] = attempts.get(key, 0) + 1
        return behaviour(kinds[arn], payload, attempts[key])

    role = d and dep.role_statements(dep.template["Resources"][sm]["Properties"]["RoleArn"]["Fn::GetAtt"][0])
    return Interpreter(d, invoke=invoke, timeouts=timeouts, role_statements=role)


def _has_fn(dep, handler):
    return any(v["Properties"].get("Handler") == handler for v in resources(dep.template, "AWS::Lambda::Function").values())


PRODUCTS = [{"exchange": "coinbase", "product_id": "BTC-USD"}, {"exchange": "coinbase", "product_id": "ETH-USD"},
            {"exchange": "kraken", "product_id": "BTC-USD"}]


def _summary(payload):
    from schemahub.pipeline import summarize_cycle

    return summarize_cycle(payload["items"], payload["results"])


def test_a_backlog_that_never_ends_fits_every_child_inside_five_minutes(dep):
    def behaviour(kind, payload, n):
        if kind == "plan":
            return {"items": PRODUCTS, "count": len(PRODUCTS)}, None
        if kind == "summary":
            return _summary(payload), None
        return {**{k: payload[k] for k in ("exchange", "product_id")}, "status": "ok", "more_to_do": True,
                "again": _again(payload, dep), "trades": 10}, None

    ex = _interp(dep, behaviour).execute({})
    assert ex.status == "SUCCEEDED", ex.error
    assert ex.children and all(c.status == "SUCCEEDED" for c in ex.children), [(c.status, c.duration_s) for c in ex.children]
    assert max(c.duration_s for c in ex.children) <= EXPRESS_LIMIT_S
    assert sum(1 for name, _ in ex.children[0].tasks if name == "Ingest") >= 2, "the in-cycle loop never ran"
    assert {(p["exchange"], p["product_id"]) for p in ex.output["more_to_do"]} == {(p["exchange"], p["product_id"]) for p in PRODUCTS}


def _again(payload, dep):
    """What handlers/ingest.py decides, from the payload's child start and budget (the handler's own rule)."""
    from datetime import datetime, timezone

    from schemahub.pipeline import may_continue

    started = payload.get("started")
    if started is None:
        return True
    return may_continue(datetime.fromisoformat(started.replace("Z", "+00:00")), payload["again_until_s"],
                        now=datetime.now(timezone.utc))


def test_throttled_invocations_retry_within_the_limit(dep):
    def behaviour(kind, payload, n):
        if kind == "plan":
            return {"items": PRODUCTS[:1], "count": 1}, None
        if kind == "summary":
            return _summary(payload), None
        if n <= 2:
            return None, {"errorType": "Lambda.TooManyRequestsException", "errorMessage": "Rate exceeded"}
        return {**{k: payload[k] for k in ("exchange", "product_id")}, "status": "ok", "more_to_do": False,
                "again": False, "trades": 1}, None

    ex = _interp(dep, behaviour).execute({})
    assert ex.status == "SUCCEEDED" and ex.children[0].status == "SUCCEEDED", (ex.error, ex.children[0].duration_s)
    assert ex.children[0].duration_s <= EXPRESS_LIMIT_S


def test_one_broken_child_never_aborts_the_map_run_and_is_listed_as_failed(dep):
    def behaviour(kind, payload, n):
        if kind == "plan":
            return {"items": PRODUCTS, "count": len(PRODUCTS)}, None
        if kind == "summary":
            return _summary(payload), None
        if payload["product_id"] == "ETH-USD":
            return {"oops": True}, None  # a result the Choice cannot read: States.Runtime, which no Catch catches
        if payload["exchange"] == "kraken":
            return None, {"errorType": "ProductIngestFailed", "errorMessage": "kraken/BTC-USD: HTTP 500"}
        return {**{k: payload[k] for k in ("exchange", "product_id")}, "status": "ok", "more_to_do": False,
                "again": False, "trades": 1}, None

    ex = _interp(dep, behaviour).execute({})
    assert ex.status == "SUCCEEDED", ex.error  # the cycle itself ran; failures are in its output and alarm
    assert [c.status for c in ex.children] == ["SUCCEEDED", "FAILED", "SUCCEEDED"]
    failed = {(f["exchange"], f["product_id"]) for f in ex.output["failed"]}
    assert failed == {("coinbase", "ETH-USD"), ("kraken", "BTC-USD")}
    assert ex.output["retry_input"] == {"only": sorted([{"exchange": "coinbase", "product_id": "ETH-USD"},
                                                        {"exchange": "kraken", "product_id": "BTC-USD"}],
                                                       key=lambda p: (p["exchange"], p["product_id"]))}


def test_ingest_payload_bounds_the_child_by_its_start(dep):
    _, d = dep.state_machine()
    inner = d["States"]["EachProduct"]["ItemProcessor"]["States"]["Ingest"]
    params = inner["Parameters"]
    assert params.get("started.$") == "$$.Execution.StartTime"
    lam = dep.function(dep.function_id("handlers.ingest.handler"))
    retry_wait = 0.0
    for r in inner.get("Retry", []):
        waits = [min(r["IntervalSeconds"] * r.get("BackoffRate", 2) ** i, r.get("MaxDelaySeconds", 1e9))
                 for i in range(r["MaxAttempts"])]
        retry_wait += sum(waits)
    # By construction: an invocation may start only while `again_until_s` has not passed, and then ends within
    # its timeout plus every retry wait, inside the Express limit (with room for INIT and transitions).
    assert params["again_until_s"] + lam["Timeout"] + retry_wait + 10 <= EXPRESS_LIMIT_S
    assert lam["Timeout"] + retry_wait + 10 <= params["again_until_s"]  # the first invocation fits too, and one more


# ------------------------------------------------------------------ finding 5: alarms page someone

def test_every_alarm_pages_the_sns_topic_with_the_context_email(dep):
    topics = resources(dep.template, "AWS::SNS::Topic")
    assert len(topics) == 1
    [topic] = topics
    subs = [s["Properties"] for s in resources(dep.template, "AWS::SNS::Subscription").values()]
    assert {"Protocol": "email", "Endpoint": "ops@example.com", "TopicArn": {"Ref": topic}}.items() <= {
        k: v for s in subs for k, v in s.items()}.items()
    alarms = dep.alarms()
    for name, a in alarms.items():
        assert dep.ref(topic) in a.get("AlarmActions", []), name
    reads = {m.name for a in alarms.values() for m in alarm_metrics(a)}
    assert {"ProductsFailed", "Errors", "ApproximateNumberOfMessagesVisible", "ExecutionsFailed"} <= reads
    errors = {dict(m.dimensions).get("FunctionName") for a in alarms.values()
              for m in alarm_metrics(a) if m.name == "Errors"}
    for h in ("handlers.plan.handler", "handlers.ingest.handler", "handlers.transform.handler",
              "handlers.compact.handler"):
        assert dep.names[dep.function_id(h)] in errors, h


# ------------------------------------------------------------------ finding 6: geo-blocking

class _Fixed(BaseHTTPRequestHandler):
    status, body, hits = 451, b"", 0

    def do_GET(self):
        type(self).hits += 1
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *a):
        pass


@pytest.mark.parametrize("status, body", [
    (451, b'{"code":0,"msg":"Service unavailable from a restricted location according to \'b. Eligibility\'"}'),
    (403, b"<html>The request could not be satisfied. This distribution is not available in your restricted location"),
])
def test_geo_blocking_is_its_own_error_not_retried_not_a_rate_limit(status, body):
    from schemahub.errors import ExchangeBanned, GeoBlocked
    from schemahub.sources.http import HttpClient, RateLimiter

    handler = type("H", (_Fixed,), {"status": status, "body": body, "hits": 0})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        http = HttpClient(name="binance", rate=RateLimiter(100, 10), max_attempts=5, base_delay_s=0.01)
        with pytest.raises(GeoBlocked) as e:
            http.get(f"http://127.0.0.1:{srv.server_port}/api/v3/trades")
        assert str(e.value) == (f"binance refuses requests from this IP's location (HTTP {status}); deploy in a region "
                                "it serves (see README)")
        assert isinstance(e.value, ExchangeBanned)  # recorded like a ban: no later run keeps knocking
        assert handler.hits == 1 and http.stats.retries == 0 and http.stats.rate_limited == 0
    finally:
        srv.shutdown()


def test_synth_warns_for_a_us_region_with_a_geo_blocking_exchange_seeded():
    from cdk_app.app import geo_warnings

    seed = {"binance": ["BTC-USDT"], "coinbase": ["BTC-USD"]}
    [w] = geo_warnings("us-east-1", seed)
    assert "binance" in w and "us-east-1" in w and "README" in w
    assert geo_warnings("eu-west-1", seed) == [] and geo_warnings("us-west-2", {"coinbase": ["BTC-USD"]}) == []


# ------------------------------------------------------------------ finding 7: Athena

def test_no_date_projection_days_are_registered_partitions_from_the_first_landed_day(dep):
    """Projection would list every projected day from first_date (one S3 LIST per exchange x product x day);
    registered partitions start at the first landed day by construction: the transform registers each one."""
    [table] = resources(dep.template, "AWS::Glue::Table").values()
    params = table["Properties"]["TableInput"]["Parameters"]
    assert "projection.enabled" not in params and "projection.date.range" not in params
    for handler, action in (("handlers.transform.handler", "glue:CreatePartition"),
                            ("handlers.compact.handler", "glue:BatchUpdatePartition")):
        fn = dep.function_id(handler)
        assert dep.environment(fn)["SCHEMAHUB_GLUE_TABLE"] == "schemahub.trades"
        assert any(action in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
                   for s in dep.role_statements(dep.role_of(fn)))


def test_every_named_query_has_a_date_predicate_and_ohlcv_breaks_ties(dep):
    for q in resources(dep.template, "AWS::Athena::NamedQuery").values():
        sql = q["Properties"]["QueryString"]
        assert re.search(r"\bdate\s*(=|>=|>|<=|<|BETWEEN)", sql), q["Properties"]["Name"]
    [ohlcv] = [q["Properties"]["QueryString"] for q in resources(dep.template, "AWS::Athena::NamedQuery").values()
               if q["Properties"]["Name"] == "ohlcv-1m"]
    assert re.search(r"min_by\(price, ROW\(trade_time, [^)]*trade_id", ohlcv), ohlcv
    assert re.search(r"max_by\(price, ROW\(trade_time, [^)]*trade_id", ohlcv), ohlcv


# ------------------------------------------------------------------ finding 8: smaller things

def test_sqs_trigger_has_a_maximum_concurrency(dep):
    [esm] = resources(dep.template, "AWS::Lambda::EventSourceMapping").values()
    mc = esm["Properties"].get("ScalingConfig", {}).get("MaximumConcurrency")
    assert mc is not None and 2 <= mc <= 10


def test_compaction_runs_daily_after_midnight_within_the_lambda_limit(dep):
    fn = dep.function_id("handlers.compact.handler")
    rules = [r["Properties"] for r in resources(dep.template, "AWS::Events::Rule").values()
             if any(t.get("Arn") == {"Fn::GetAtt": [fn, "Arn"]} for t in r["Properties"].get("Targets", []))]
    assert [r["ScheduleExpression"] for r in rules] == ["cron(40 0 * * ? *)"]
    assert dep.function(fn)["Timeout"] == 900  # the Lambda maximum; the handler stops starting days before it
    from handlers.compact import SAFETY_S

    assert 0 < SAFETY_S < dep.function(fn)["Timeout"]
