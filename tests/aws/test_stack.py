"""The synthesized template holds every piece of the AWS suite, least-privileged and lint-clean."""

from __future__ import annotations

import json
import subprocess

import pytest
from aws_cdk.assertions import Match, Template
from cdk_app.package import LAMBDA_LIMIT_BYTES, LAYERS, size
from cdk_app.stack import GLUE_COLUMNS, NAMED_QUERIES

from schemahub.table import FILE_SCHEMA
from tests.aws.conftest import resources, state_machine
from tests.conftest import ROOT

pytestmark = pytest.mark.xdist_group("aws")  # one synth, one build/ folder: keep AWS tests on one worker



def _fn(template, handler: str) -> tuple[str, dict]:
    [(k, v)] = [(k, v) for k, v in resources(template, "AWS::Lambda::Function").items()
                if v["Properties"].get("Handler") == handler]
    return k, v


def test_schedule_targets_the_state_machine(synth):
    template, stack, _ = synth
    t = Template.from_stack(stack)
    t.has_resource_properties("AWS::Events::Rule", {
        "ScheduleExpression": "rate(30 minutes)",
        "Targets": Match.array_with([Match.object_like({"Arn": {"Ref": Match.string_like_regexp("Cycle")}})]),
    })


def test_state_machine_fans_out_over_products_and_loops_while_more_to_do(synth):
    template, _, _ = synth
    d, arns = state_machine(template)
    ingest_id, _ = _fn(template, "handlers.ingest.handler")
    plan_id, _ = _fn(template, "handlers.plan.handler")
    assert d["StartAt"] == "Plan" and d["States"]["Plan"]["Resource"] == arns[plan_id]
    m = d["States"]["EachProduct"]
    assert m["Type"] == "Map" and m["ItemsPath"] == "$.items" and m["MaxConcurrency"] == 10
    # Children run as Express (cost), the parent as Standard (console reruns and redrive).
    assert m["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"}
    [sm] = resources(template, "AWS::StepFunctions::StateMachine").values()
    assert sm["Properties"].get("StateMachineType", "STANDARD") == "STANDARD"
    inner = m["ItemProcessor"]["States"]
    assert inner["Ingest"]["Resource"] == arns[ingest_id]
    retry = inner["Ingest"]["Retry"][0]
    assert "Lambda.TooManyRequestsException" in retry["ErrorEquals"] and retry["MaxAttempts"] >= 3
    assert inner["Ingest"]["Catch"][0]["ErrorEquals"] == ["States.ALL"]  # one product failing never fails the others
    choice = inner[inner["Ingest"]["Next"]]
    assert choice["Type"] == "Choice"
    # Loops while the function says another invocation fits the child (test_rules_stack checks the bound).
    assert choice["Choices"][0] == {"Variable": "$.again", "BooleanEquals": True, "Next": "Ingest"}


def test_state_machine_definition_is_valid_asl(synth, tmp_path):
    template, _, _ = synth
    d, _ = state_machine(template)
    f = tmp_path / "definition.json"
    f.write_text(json.dumps(d))
    r = subprocess.run([str(ROOT / "node_modules" / ".bin" / "asl-validator"), "--json-path", str(f)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_raw_objects_flow_s3_to_sqs_with_dlq_to_the_transform(synth):
    template, stack, _ = synth
    t = Template.from_stack(stack)
    t.has_resource_properties("Custom::S3BucketNotifications", {"NotificationConfiguration": {"QueueConfigurations": [
        Match.object_like({"Events": ["s3:ObjectCreated:*"], "Filter": {"Key": {"FilterRules": [
            {"Name": "prefix", "Value": "schemahub/raw/"}]}}})]}})
    t.has_resource_properties("AWS::SQS::Queue", {"RedrivePolicy": Match.object_like({"maxReceiveCount": 5})})
    transform_id, _ = _fn(template, "handlers.transform.handler")
    t.has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "FunctionName": {"Ref": transform_id}, "FunctionResponseTypes": ["ReportBatchItemFailures"]})


def test_glue_table_matches_the_unified_schema_with_registered_partitions(synth):
    template, _, _ = synth
    [table] = resources(template, "AWS::Glue::Table").values()
    ti = table["Properties"]["TableInput"]
    cols = [c["Name"] for c in ti["StorageDescriptor"]["Columns"]]
    assert cols == [f.name for f in FILE_SCHEMA]  # the same columns, in the same order as the files
    assert dict(GLUE_COLUMNS)["price"] == "decimal(38,12)" == dict(GLUE_COLUMNS)["size"]
    assert [p["Name"] for p in ti["PartitionKeys"]] == ["exchange", "product_id", "date"]
    params = ti["Parameters"]
    # No projection: Athena plans from the registered partitions, whose locations the transform and compaction
    # move (a projected location template could not point a day at its compacted copy).
    assert not [k for k in params if k.startswith(("projection.", "storage.location"))], params
    assert resources(template, "AWS::Glue::Database")


def test_athena_workgroup_and_named_queries(synth):
    template, _, _ = synth
    [wg] = resources(template, "AWS::Athena::WorkGroup").values()
    assert wg["Properties"]["WorkGroupConfiguration"]["EnforceWorkGroupConfiguration"] is True
    names = {q["Properties"]["Name"] for q in resources(template, "AWS::Athena::NamedQuery").values()}
    assert names == set(NAMED_QUERIES) == {"latest-trades", "ohlcv-1m", "daily-vwap", "duplicate-check", "gap-check",
                                           "btc-vwap-1m-across-exchanges"}
    assert "sum(price * size)" in NAMED_QUERIES["daily-vwap"]  # exact decimals, no casts


def test_dashboard_and_alarms(synth):
    template, _, _ = synth
    [dash] = resources(template, "AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dash["Properties"]["DashboardBody"])
    for metric in ("TradesIngested", "FreshnessSeconds", "RateLimited", "HttpRetries", "RowsTransformed",
                   "RowsQuarantined", "IngestErrors", "ApproximateNumberOfMessagesVisible", "ExecutionsFailed"):
        assert metric in body, metric
    alarms = [a["Properties"] for a in resources(template, "AWS::CloudWatch::Alarm").values()]
    # freshness, DLQ, failed executions, failed products, errors of each of 5 functions; the audit's two
    assert len(alarms) == 11
    assert any("Metrics" in a and "FreshnessSeconds" in json.dumps(a["Metrics"]) for a in alarms)
    assert any(a.get("MetricName") == "ApproximateNumberOfMessagesVisible" for a in alarms)
    assert any(a.get("MetricName") == "ExecutionsFailed" for a in alarms)


def test_bucket_is_encrypted_private_and_tls_only(synth):
    _, stack, _ = synth
    t = Template.from_stack(stack)
    t.has_resource_properties("AWS::S3::Bucket", {
        "BucketEncryption": Match.any_value(),
        "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                           "IgnorePublicAcls": True, "RestrictPublicBuckets": True}})
    t.has_resource_properties("AWS::S3::BucketPolicy", {"PolicyDocument": {"Statement": Match.array_with([
        Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})])}})


def test_ingest_has_no_pyarrow_and_least_privilege(synth):
    template, _, _ = synth
    _, ingest = _fn(template, "handlers.ingest.handler")
    _, transform = _fn(template, "handlers.transform.handler")
    assert len(ingest["Properties"]["Layers"]) == 1 and len(transform["Properties"]["Layers"]) == 2
    policies = {k: json.dumps(v["Properties"]["PolicyDocument"]) for k, v in resources(template, "AWS::IAM::Policy").items()}
    ingest_policy = next(p for k, p in policies.items() if k.startswith("IngestFunction"))
    assert "schemahub/raw/*" in ingest_policy and "curated" not in ingest_policy and "s3:DeleteObject" not in ingest_policy
    transform_policy = next(p for k, p in policies.items() if k.startswith("TransformFunction"))
    assert "checkpoints" not in transform_policy and "leases" not in transform_policy


def test_template_is_cfn_lint_clean(synth):
    _, _, out = synth
    # W3005: CDK adds DependsOn next to a GetAtt on the same role; redundant, not wrong.
    r = subprocess.run([str(ROOT / ".venv" / "bin" / "cfn-lint"), "--ignore-checks", "W3005", "--",
                        str(out / "Schemahub.template.json")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_packaged_function_stays_under_the_lambda_size_limit(synth):
    code_dir = synth[1].code_dir
    code, core, arrow = size(code_dir), size(LAYERS / "core"), size(LAYERS / "arrow")
    assert code + core + arrow < LAMBDA_LIMIT_BYTES, f"{(code + core + arrow) / 2**20:.0f} MiB"
    assert code + core < 40 * 2**20  # the ingest function stays small
    assert not (code_dir / "schemahub" / "sim.py").exists() and (code_dir / "mappings" / "exchanges").is_dir()
    assert (LAYERS / "arrow" / "python" / "pyarrow").is_dir() and not (LAYERS / "core" / "python" / "pyarrow").exists()


def test_metrics_have_no_per_product_dimension_so_cost_does_not_grow_with_products(synth):
    template, _, _ = synth
    body = json.dumps(template)
    assert '"product_id"' not in json.dumps([a["Properties"].get("Dimensions") for a in resources(template, "AWS::CloudWatch::Alarm").values()])
    handlers = (ROOT / "functions" / "handlers" / "common.py").read_text()
    assert "product_id" not in handlers.split("def exchange_metric", 1)[1]
    assert "stats sum(result.trades)" in body  # per-product views come from Logs Insights


def test_ingest_and_plan_handlers_never_import_pyarrow():
    # Their layer has no pyarrow: an import would only fail in production, so check it here.
    code = "import sys; import handlers.ingest, handlers.plan; assert 'pyarrow' not in sys.modules, 'pyarrow imported'"
    env = {"PYTHONPATH": str(ROOT / "functions"), "PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1"}
    r = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
