"""cdk-nag AwsSolutions checks (cdk-nag 3.x policy-validation plugin); every accepted finding says why, in code."""

from __future__ import annotations

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

_PREFIXES = {
    "raw": "ingest writes and transform reads raw objects, whose keys are not known in advance",
    "checkpoints": "ingest compares-and-swaps one checkpoint object per product",
    "leases": "ingest takes one lease object per product",
    "transformed": "transform writes and reads one marker per raw object",
    "curated": "transform writes Parquet files under Hive partitions",
    "quarantine": "transform writes rejected rows per raw object",
    "damaged": "transform records a damaged raw object (set aside, with its reason) per raw object",
    "bans": "ingest reads and records one ban object per exchange",
    "compacted": "compact writes and reads one copy and one manifest per closed product-day; the audit reads them",
    "audit": "the audit writes one report per product-day",
}

ACKNOWLEDGED = {
    "AwsSolutions-S1": "Server access logs would add a log bucket and its storage (S3 delivers them best-effort, "
                       "with no request charge) that nobody reads here; enable CloudTrail S3 data events, or access "
                       "logs, when an audit trail is needed.",
    "AwsSolutions-SNS2": "CloudWatch alarms cannot publish to a topic encrypted with the AWS-managed SNS key, and a "
                         "customer key costs $1/month plus a key policy; alarm notifications carry alarm names and "
                         "states, no data.",
    "AwsSolutions-L1": "Python 3.12 is pinned because the layers are built from cp312 manylinux wheels (pyarrow); "
                       "moving runtimes means rebuilding the layers (cdk_app/package.py).",
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]":
        "AWSLambdaBasicExecutionRole grants logs:CreateLogGroup, logs:CreateLogStream and logs:PutLogEvents on "
        "Resource *, that is every log group of the account; a scoped inline policy would be tighter. Accepted: "
        "the functions can write log lines, not read or delete them.",
    "AwsSolutions-IAM5[Resource::*]":
        "X-Ray (PutTraceSegments, PutTelemetryRecords) and CloudWatch Logs delivery for Step Functions have no "
        "resource-level permissions.",
    "AwsSolutions-IAM5[Resource::<PlanFunctionEA79BDD0.Arn>:*]":
        "Step Functions may invoke any version or alias of its own Plan function.",
    "AwsSolutions-IAM5[Resource::<IngestFunction4B2F2EB2.Arn>:*]":
        "Step Functions may invoke any version or alias of its own Ingest function.",
    "AwsSolutions-IAM5[Resource::<SummaryFunctionF741E427.Arn>:*]":
        "Step Functions may invoke any version or alias of its own Summary function.",
    **{f"AwsSolutions-IAM5[Resource::<Data666C94C7.Arn>/schemahub/{p}/*]": f"Scoped to one prefix: {why}."
       for p, why in _PREFIXES.items()},
    "AwsSolutions-IAM5[Resource::<Data666C94C7.Arn>/schemahub/compacted/*/manifest.json]":
        "compact deletes only manifests (one per product-day) that no longer name the day's parts, then writes "
        "the new one create-only.",
    **{"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:"
       '{"Fn::Select":[6,{"Fn::Split":[":",{"Ref":"Cycle2E77DA77"}]}]}' + suffix + "]":
       "The distributed map starts, describes and stops its own child executions, whose names are generated."
       for suffix in (":*", "/*:*")},
}


def add_nag(app: cdk.App, stack: cdk.Stack) -> None:
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    cdk.Validations.of(stack).acknowledge(
        *[cdk.Acknowledgment(id=f"AwsSolutions::{k}", reason=v) for k, v in ACKNOWLEDGED.items()])
