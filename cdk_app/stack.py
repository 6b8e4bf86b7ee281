"""The schemahub stack: schedule -> Step Functions fan-out -> ingest Lambdas; S3 -> SQS -> transform; Glue/Athena."""

from __future__ import annotations

from pathlib import Path

import re

import aws_cdk as cdk
import yaml
from aws_cdk import aws_athena as athena
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "schemahub"
PREFIX = "schemahub/"  # storage root inside the bucket
SERVICE = "schemahub"  # POWERTOOLS_SERVICE_NAME: Powertools adds it as the `service` dimension of every metric

# Step Functions Express children end after 5 minutes, and that timeout cannot be caught.
EXPRESS_LIMIT_S = 300
INGEST_TIMEOUT_S = 120  # one Ingest invocation; a longer backlog goes on in further invocations
INIT_AND_TRANSITIONS_S = 10  # a cold start's INIT (at most 10 s) and the Map/Choice transitions
INGEST_RETRY = {"interval_s": 1, "max_attempts": 3, "backoff": 2.0, "max_delay_s": 4}  # throttles: waits 1 + 2 + 4 s
_RETRY_WAIT_S = sum(min(INGEST_RETRY["interval_s"] * INGEST_RETRY["backoff"] ** i, INGEST_RETRY["max_delay_s"])
                    for i in range(INGEST_RETRY["max_attempts"]))
# Another Ingest may start until this many seconds into the child: then it, its retry waits included, still
# ends inside the Express limit. The first one always fits (INGEST_TIMEOUT_S + waits + INIT < this).
AGAIN_UNTIL_S = EXPRESS_LIMIT_S - INIT_AND_TRANSITIONS_S - INGEST_TIMEOUT_S - int(_RETRY_WAIT_S + 0.999)
COMPACT_TIMEOUT_S = 900  # the Lambda maximum; the handler starts no new day in its last 2 minutes
COMPACT_AT = (0, 40)  # UTC hour, minute: daily, after the midnight cycles have landed and transformed the day

# The unified table (functions/schemahub/table.py) as Glue columns; partition keys live in the path.
GLUE_COLUMNS = [
    ("symbol", "string"), ("base_asset", "string"), ("quote_asset", "string"), ("trade_id", "string"),
    ("price", "decimal(38,12)"), ("size", "decimal(38,12)"), ("side", "string"),
    ("trade_time", "timestamp"), ("ingested_at", "timestamp"), ("raw_key", "string"),
]
GLUE_PARTITIONS = [("exchange", "string"), ("product_id", "string"), ("date", "string")]

NAMED_QUERIES = {
    "latest-trades": "SELECT * FROM trades WHERE date >= date_format(current_date - interval '1' day, '%Y-%m-%d') "
                     "ORDER BY trade_time DESC LIMIT 100",
    "ohlcv-1m": "SELECT exchange, product_id, date_trunc('minute', trade_time) AS minute, "
                # Athena reads timestamps in milliseconds: trades in one ms tie, so trade_id breaks the tie.
                "min_by(price, ROW(trade_time, lpad(trade_id, 24, '0'))) AS open, max(price) AS high, min(price) AS low, "
                "max_by(price, ROW(trade_time, lpad(trade_id, 24, '0'))) AS close, "
                "sum(size) AS volume, count(*) AS trades FROM trades "
                "WHERE product_id = 'BTC-USD' AND date = date_format(current_date, '%Y-%m-%d') GROUP BY 1, 2, 3 ORDER BY 3",
    "daily-vwap": "SELECT exchange, product_id, date, sum(price * size) / sum(size) AS vwap, sum(size) AS volume "
                  "FROM trades WHERE date >= date_format(current_date - interval '30' day, '%Y-%m-%d') "
                  "GROUP BY 1, 2, 3 ORDER BY 3 DESC, 1, 2",
    "duplicate-check": "SELECT exchange, product_id, trade_id, count(*) AS copies FROM trades "
                       "WHERE date >= date_format(current_date - interval '7' day, '%Y-%m-%d') "
                       "GROUP BY 1, 2, 3 HAVING count(*) > 1",
    "gap-check": "SELECT exchange, product_id, prev_id, id AS next_id, id - prev_id - 1 AS missing FROM ("
                 "SELECT exchange, product_id, CAST(trade_id AS bigint) AS id, "
                 "lag(CAST(trade_id AS bigint)) OVER (PARTITION BY exchange, product_id ORDER BY CAST(trade_id AS bigint)) AS prev_id "
                 "FROM trades WHERE exchange IN ('coinbase', 'binance', 'kraken') "
                 "AND date >= date_format(current_date - interval '7' day, '%Y-%m-%d')) WHERE id - prev_id > 1",  # ids without gaps
    "btc-vwap-1m-across-exchanges": "SELECT date_trunc('minute', trade_time) AS minute, exchange, product_id, "
                                    "sum(price * size) / sum(size) AS vwap, sum(size) AS volume, count(*) AS trades "
                                    "FROM trades WHERE base_asset = 'BTC' AND date = date_format(current_date, '%Y-%m-%d') "
                                    "GROUP BY 1, 2, 3 ORDER BY 1 DESC, 2, 3",
}


def seeded_products() -> dict[str, list[str]]:
    doc = yaml.safe_load((ROOT / "mappings" / "product_ids_seed.yaml").read_text()) or {}
    return {ex: [p["product_id"] for p in items] for ex, items in (doc.get("exchanges") or {}).items()}


class SchemahubStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, *, code_dir: Path, layers_dir: Path,
                 schedule_minutes: int = 30, max_concurrency: int = 10, freshness_alarm_s: int = 3 * 3600,
                 first_date: str = "2026-01-01", alarm_email: str | None = None, transform_concurrency: int = 5,
                 **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        products = seeded_products()
        # Names of account-wide resources come from the stack name, so a second stage never collides
        # ("Schemahub" keeps the names `schemahub`; "SchemahubStaging" gets `schemahubstaging`).
        name = re.sub(r"[^a-z0-9_]", "_", construct_id.lower())

        # ------------------------------------------------------------------ storage
        bucket = s3.Bucket(
            self, "Data",
            encryption=s3.BucketEncryption.S3_MANAGED, block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True, versioned=False, removal_policy=cdk.RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(id="athena-results", prefix="athena-results/", expiration=cdk.Duration.days(30)),
                s3.LifecycleRule(id="abort-multipart", abort_incomplete_multipart_upload_after=cdk.Duration.days(1)),
            ],
        )
        storage = f"s3://{bucket.bucket_name}/{PREFIX.rstrip('/')}"

        # ------------------------------------------------------------------ lambdas
        code = lambda_.Code.from_asset(str(code_dir))
        core = lambda_.LayerVersion(self, "CoreLayer", code=lambda_.Code.from_asset(str(layers_dir / "core")),
                                    compatible_runtimes=[lambda_.Runtime.PYTHON_3_12],
                                    description="pydantic, pyyaml, aws-lambda-powertools")
        arrow = lambda_.LayerVersion(self, "ArrowLayer", code=lambda_.Code.from_asset(str(layers_dir / "arrow")),
                                     compatible_runtimes=[lambda_.Runtime.PYTHON_3_12], description="pyarrow")
        env = {"SCHEMAHUB_STORAGE": storage, "SCHEMAHUB_MAPPINGS": "/var/task/mappings",
               "POWERTOOLS_METRICS_NAMESPACE": NAMESPACE, "POWERTOOLS_SERVICE_NAME": SERVICE}

        def fn(name: str, handler: str, layers, timeout_s: int, memory: int) -> lambda_.Function:
            log_group = logs.LogGroup(self, f"{name}Logs", retention=logs.RetentionDays.ONE_MONTH,
                                      removal_policy=cdk.RemovalPolicy.DESTROY)
            return lambda_.Function(
                self, name, runtime=lambda_.Runtime.PYTHON_3_12, architecture=lambda_.Architecture.X86_64,
                handler=handler, code=code, layers=layers, timeout=cdk.Duration.seconds(timeout_s),
                memory_size=memory, environment=env, log_group=log_group, tracing=lambda_.Tracing.ACTIVE,
            )

        plan_fn = fn("PlanFunction", "handlers.plan.handler", [core], 30, 256)
        ingest_fn = fn("IngestFunction", "handlers.ingest.handler", [core], INGEST_TIMEOUT_S, 512)  # no pyarrow
        summary_fn = fn("SummaryFunction", "handlers.summary.handler", [core], 30, 256)
        transform_fn = fn("TransformFunction", "handlers.transform.handler", [core, arrow], 300, 1536)

        # Least privilege, by prefix: what each function reads and writes, nothing it never calls (no deletes but
        # the transform's of a damaged/ record: `schemahub transform --all` deletes table files, from the CLI).
        obj = lambda *ps: [bucket.arn_for_objects(f"{PREFIX}{p}*") for p in ps]
        ingest_fn.add_to_role_policy(iam.PolicyStatement(
            actions=["s3:GetObject", "s3:PutObject"], resources=obj("raw/", "checkpoints/", "leases/", "bans/")))
        transform_fn.add_to_role_policy(iam.PolicyStatement(actions=["s3:GetObject"],
                                                            resources=obj("raw/", "transformed/", "damaged/")))
        # A restored raw object, once transformed, is no longer set aside: its damaged/ record goes.
        transform_fn.add_to_role_policy(iam.PolicyStatement(actions=["s3:DeleteObject"], resources=obj("damaged/")))
        transform_fn.add_to_role_policy(iam.PolicyStatement(
            actions=["s3:PutObject"], resources=obj("curated/", "quarantine/", "transformed/", "damaged/")))
        # S3 answers a GetObject of a missing key with 403 unless the caller may list the bucket: a first run's
        # checkpoint, a ban that was never recorded, a raw key not landed yet and a marker not written yet must
        # read as missing (404). The check is made without an s3:prefix, so the grant has no prefix condition.
        for f in (ingest_fn, transform_fn):
            f.add_to_role_policy(iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn]))

        # ------------------------------------------------------------------ S3 -> SQS -> transform
        dlq = sqs.Queue(self, "TransformDLQ", retention_period=cdk.Duration.days(14), enforce_ssl=True,
                        encryption=sqs.QueueEncryption.SQS_MANAGED)
        queue = sqs.Queue(self, "RawObjects", visibility_timeout=cdk.Duration.seconds(6 * 300), enforce_ssl=True,
                          encryption=sqs.QueueEncryption.SQS_MANAGED,
                          dead_letter_queue=sqs.DeadLetterQueue(queue=dlq, max_receive_count=5))
        bucket.add_event_notification(s3.EventType.OBJECT_CREATED, s3n.SqsDestination(queue),
                                      s3.NotificationKeyFilter(prefix=f"{PREFIX}raw/"))
        # Only this account's bucket: a bucket of the same name re-created in another account must not feed us.
        queue.add_to_resource_policy(iam.PolicyStatement(
            effect=iam.Effect.DENY, principals=[iam.ServicePrincipal("s3.amazonaws.com")], actions=["sqs:SendMessage"],
            resources=[queue.queue_arn], conditions={"StringNotEquals": {"aws:SourceAccount": self.account}}))
        # max_concurrency: a new account's low Lambda concurrency quota would otherwise throttle the trigger,
        # and throttled batches count receives toward the DLQ.
        transform_fn.add_event_source(sources.SqsEventSource(queue, batch_size=10, max_batching_window=cdk.Duration.seconds(30),
                                                             report_batch_item_failures=True,
                                                             max_concurrency=transform_concurrency))

        # ------------------------------------------------------------------ Step Functions fan-out
        lambda_errors = ["Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
                         "Lambda.TooManyRequestsException"]
        plan = tasks.LambdaInvoke(self, "Plan", lambda_function=plan_fn, payload_response_only=True,
                                  retry_on_service_exceptions=True)
        # Each child ends inside the Express limit by construction: the payload carries the child's start and
        # AGAIN_UNTIL_S, and the function answers `again` only while one more invocation (timeout and retry
        # waits included) still fits. A longer backlog goes on in the next cycle.
        ingest = tasks.LambdaInvoke(
            self, "Ingest", lambda_function=ingest_fn, payload_response_only=True, retry_on_service_exceptions=False,
            task_timeout=sfn.Timeout.duration(cdk.Duration.seconds(INGEST_TIMEOUT_S + INIT_AND_TRANSITIONS_S)),
            payload=sfn.TaskInput.from_object({"exchange.$": "$.exchange", "product_id.$": "$.product_id",
                                               "started.$": "$$.Execution.StartTime", "again_until_s": AGAIN_UNTIL_S}))
        ingest.add_retry(errors=lambda_errors, interval=cdk.Duration.seconds(INGEST_RETRY["interval_s"]),
                         max_attempts=INGEST_RETRY["max_attempts"], backoff_rate=INGEST_RETRY["backoff"],
                         max_delay=cdk.Duration.seconds(INGEST_RETRY["max_delay_s"]), jitter_strategy=sfn.JitterType.FULL)
        failed = sfn.Pass(self, "RecordFailure", parameters={
            "failed": True, "exchange.$": "$.exchange", "product_id.$": "$.product_id", "error.$": "$.error"})
        ingest.add_catch(failed, errors=["States.ALL"], result_path="$.error")
        done = sfn.Succeed(self, "ProductDone")
        more = sfn.Choice(self, "Again?").when(sfn.Condition.boolean_equals("$.again", True), ingest).otherwise(done)
        # Distributed map with Express children: the parent stays Standard (console reruns, redrive),
        # while the per-product loop is billed as Express (cents per month instead of ~$5 in transitions).
        per_product = sfn.DistributedMap(
            self, "EachProduct", items_path="$.items", max_concurrency=max_concurrency,
            map_execution_type=sfn.StateMachineType.EXPRESS, result_path="$.results",
            # A child that fails outright (a timeout, a runtime error) never aborts the Map Run: the summary
            # lists it as failed and the ProductsFailed alarm fires.
            tolerated_failure_percentage=100,
            item_selector={"exchange.$": "$$.Map.Item.Value.exchange", "product_id.$": "$$.Map.Item.Value.product_id"})
        per_product.item_processor(ingest.next(more))
        summarize = tasks.LambdaInvoke(
            self, "Summarize", lambda_function=summary_fn, payload_response_only=True, retry_on_service_exceptions=True,
            payload=sfn.TaskInput.from_object({"items.$": "$.items", "results.$": "$.results"}))
        sm_logs = logs.LogGroup(self, "StateMachineLogs", retention=logs.RetentionDays.ONE_MONTH,
                                removal_policy=cdk.RemovalPolicy.DESTROY)
        machine = sfn.StateMachine(
            self, "Cycle", definition_body=sfn.DefinitionBody.from_chainable(plan.next(per_product).next(summarize)),
            timeout=cdk.Duration.hours(2), tracing_enabled=True,
            logs=sfn.LogOptions(destination=sm_logs, level=sfn.LogLevel.ALL))
        events.Rule(self, "Schedule", schedule=events.Schedule.rate(cdk.Duration.minutes(schedule_minutes)),
                    targets=[targets.SfnStateMachine(machine)])

        # ------------------------------------------------------------------ Glue + Athena
        db = glue.CfnDatabase(self, "Database", catalog_id=self.account,
                              database_input=glue.CfnDatabase.DatabaseInputProperty(name=name))
        location = f"s3://{bucket.bucket_name}/{PREFIX}curated/"
        table = glue.CfnTable(
            self, "TradesTable", catalog_id=self.account, database_name=name,
            table_input=glue.CfnTable.TableInputProperty(
                name="trades", table_type="EXTERNAL_TABLE",
                partition_keys=[glue.CfnTable.ColumnProperty(name=n, type=t) for n, t in GLUE_PARTITIONS],
                parameters={
                    "classification": "parquet", "EXTERNAL": "TRUE",
                    # Registered partitions, no projection: the transform registers each new day at its parts
                    # folder and compaction moves it to the day's one compacted file (see "compaction" below).
                },
                storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                    location=location,
                    columns=[glue.CfnTable.ColumnProperty(name=n, type=t) for n, t in GLUE_COLUMNS],
                    input_format="org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
                    output_format="org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
                    serde_info=glue.CfnTable.SerdeInfoProperty(
                        serialization_library="org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"),
                ),
            ),
        )
        table.node.add_dependency(db)
        workgroup = athena.CfnWorkGroup(
            self, "WorkGroup", name=name, state="ENABLED", recursive_delete_option=True,
            work_group_configuration=athena.CfnWorkGroup.WorkGroupConfigurationProperty(
                enforce_work_group_configuration=True, publish_cloud_watch_metrics_enabled=True,
                bytes_scanned_cutoff_per_query=100 * 1024**3,
                result_configuration=athena.CfnWorkGroup.ResultConfigurationProperty(
                    output_location=f"s3://{bucket.bucket_name}/athena-results/",
                    encryption_configuration=athena.CfnWorkGroup.EncryptionConfigurationProperty(encryption_option="SSE_S3"))))
        for qname, sql in NAMED_QUERIES.items():
            q = athena.CfnNamedQuery(self, f"Query-{qname}", name=qname, database=name, query_string=sql,
                                     work_group=workgroup.name)
            q.node.add_dependency(workgroup)

        # ------------------------------------------------------------------ compaction (issue #13, "athena")
        # Daily: every closed product-day becomes one file, and its Glue partition moves to it (one
        # UpdatePartition). The transform registers each new day at its parts folder and points a day back
        # there when a late part arrives (schemahub.catalog, schemahub.compact.day_files).
        compact_fn = fn("CompactFunction", "handlers.compact.handler", [core, arrow], COMPACT_TIMEOUT_S, 2048)
        glue_table = f"{name}.trades"
        glue_arns = [f"arn:{cdk.Aws.PARTITION}:glue:{self.region}:{self.account}:{r}"
                     for r in ("catalog", f"database/{name}", f"table/{name}/trades")]
        for f, actions in ((transform_fn, ["glue:GetTable", "glue:CreatePartition", "glue:GetPartition",
                                           "glue:UpdatePartition"]),
                           (compact_fn, ["glue:GetTable", "glue:GetPartitions", "glue:BatchCreatePartition",
                                         "glue:BatchUpdatePartition"])):
            f.add_environment("SCHEMAHUB_GLUE_TABLE", glue_table)
            f.add_to_role_policy(iam.PolicyStatement(actions=actions, resources=glue_arns))
        compact_fn.add_to_role_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=obj("curated/", "compacted/")))
        compact_fn.add_to_role_policy(iam.PolicyStatement(actions=["s3:PutObject"], resources=obj("compacted/")))
        # A manifest that no longer names the day's parts is replaced (delete, then a create-only put).
        compact_fn.add_to_role_policy(iam.PolicyStatement(
            actions=["s3:DeleteObject"], resources=[bucket.arn_for_objects(f"{PREFIX}compacted/*/manifest.json")]))
        compact_fn.add_to_role_policy(iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn]))
        events.Rule(self, "CompactSchedule", schedule=events.Schedule.cron(minute=str(COMPACT_AT[1]), hour=str(COMPACT_AT[0])),
                    targets=[targets.LambdaFunction(compact_fn, retry_attempts=2)])

        # ------------------------------------------------------------------ dashboard + alarms
        def m(name: str, exchange: str | None = None, stat: str = "Sum") -> cw.Metric:
            # Custom metrics cost ~$0.30 each a month: only TradesIngested and FreshnessSeconds carry the
            # exchange dimension, the rest are overall (handlers/common.py). Per-product and per-exchange
            # detail comes from Logs Insights over the handlers' structured logs.
            # Exactly the dimension sets handlers/common.py emits: CloudWatch matches the whole set.
            dims = {"exchange": exchange, "service": SERVICE} if exchange else {"service": SERVICE}
            return cw.Metric(namespace=NAMESPACE, metric_name=name, dimensions_map=dims,
                             statistic=stat, period=cdk.Duration.minutes(30))

        exch = sorted(products) or ["coinbase"]
        ingest_logs = [ingest_fn.log_group.log_group_name]
        transform_logs = [transform_fn.log_group.log_group_name]
        dash = cw.Dashboard(self, "Dashboard", dashboard_name=name)
        dash.add_widgets(
            cw.LogQueryWidget(title="Trades ingested per exchange and product (last cycles)", log_group_names=ingest_logs,
                              width=12, query_lines=[
                                  "filter message = 'ingested'",
                                  "stats sum(result.trades) as trades by result.exchange, result.product_id, bin(30m)"]),
            cw.LogQueryWidget(title="Freshness per product: now - newest trade (s)", log_group_names=transform_logs,
                              width=12, query_lines=[
                                  "filter message = 'transformed'",
                                  "stats min(freshness_s) as freshness_s by exchange, product_id, bin(30m)"]),
        )
        dash.add_widgets(
            cw.GraphWidget(title="Trades ingested", left=[m("TradesIngested", e) for e in exch], width=6),
            cw.GraphWidget(title="Rate-limit hits and HTTP retries", left=[m("RateLimited"), m("HttpRetries")], width=6),
            cw.GraphWidget(title="Rows transformed / quarantined", left=[m("RowsTransformed")],
                           right=[m("RowsQuarantined")], width=6),
            cw.GraphWidget(title="Errors", left=[ingest_fn.metric_errors(), transform_fn.metric_errors(), plan_fn.metric_errors(),
                                                 summary_fn.metric_errors(), compact_fn.metric_errors(),
                                                 m("IngestErrors"), m("ProductsFailed")],
                           width=6),
        )
        dash.add_widgets(
            cw.LogQueryWidget(title="Rate limits, retries and failures per exchange", log_group_names=ingest_logs,
                              width=24, query_lines=[
                                  "filter message = 'ingested'",
                                  "stats sum(result.rate_limited) as rate_limited, sum(result.retries) as retries, "
                                  "sum(result.status = 'failed') as failed by result.exchange, bin(30m)"]),
        )
        freshness = [m("FreshnessSeconds", e, "Maximum") for e in exch]
        dlq_depth = dlq.metric_approximate_number_of_messages_visible(period=cdk.Duration.minutes(5))
        failed_runs = machine.metric_failed(period=cdk.Duration.minutes(30))
        dash.add_widgets(cw.GraphWidget(title="Worst freshness per exchange (s)", left=freshness, width=8),
                         cw.GraphWidget(title="Transform DLQ depth", left=[dlq_depth], width=8),
                         cw.GraphWidget(title="Step Functions executions failed", left=[failed_runs], width=8))
        worst = cw.MathExpression(expression="MAX([" + ",".join(f"f{i}" for i in range(len(freshness))) + "])",
                                  using_metrics={f"f{i}": f for i, f in enumerate(freshness)},
                                  label="worst freshness (s)", period=cdk.Duration.minutes(30))
        topic = sns.Topic(self, "Alarms", display_name=f"{name} alarms", enforce_ssl=True)
        if alarm_email:
            topic.add_subscription(subs.EmailSubscription(alarm_email))
        alarms = [
            cw.Alarm(self, "FreshnessAlarm", metric=worst, threshold=freshness_alarm_s, evaluation_periods=1,
                     comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                     treat_missing_data=cw.TreatMissingData.BREACHING,  # no new trades transformed at all is stale too
                     alarm_description="Newest transformed trade is too old"),
            cw.Alarm(self, "DLQAlarm", metric=dlq_depth, threshold=0, evaluation_periods=1,
                     comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                     alarm_description="Raw objects failed to transform 5 times"),
            cw.Alarm(self, "FailedExecutionsAlarm", metric=failed_runs, threshold=1, evaluation_periods=1,
                     comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                     treat_missing_data=cw.TreatMissingData.NOT_BREACHING, alarm_description="A scheduled cycle failed"),
            cw.Alarm(self, "ProductsFailedAlarm", metric=m("ProductsFailed", stat="Maximum"), threshold=1,
                     evaluation_periods=1, comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                     treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
                     alarm_description="Products failed in a cycle: the execution output lists them under `failed`"),
        ]
        for key, f in (("Plan", plan_fn), ("Ingest", ingest_fn), ("Transform", transform_fn), ("Summary", summary_fn),
                       ("Compact", compact_fn)):
            alarms.append(cw.Alarm(self, f"{key}ErrorsAlarm", metric=f.metric_errors(period=cdk.Duration.minutes(30)),
                                   threshold=1, evaluation_periods=1,
                                   comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                                   treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
                                   alarm_description=f"The {key} function raised errors"))
        for a in alarms:
            a.add_alarm_action(cw_actions.SnsAction(topic))

        # ------------------------------------------------------------------ daily audit (issue #12 §2; "audit")
        # handlers.audit: every product's completeness, one report per product-day under audit/, and the
        # MissingTrades metric ({service}, as handlers/common.py emits it) with its alarm. Reads the store, writes
        # audit/ only: it never repairs (that fetches and writes raw/, a deliberate `schemahub audit --repair`).
        AUDIT_DAYS = 3  # each night: the last 3 UTC days (late data and repairs of the days before are seen again)
        audit_fn = fn("AuditFunction", "handlers.audit.handler", [core, arrow], 900, 2048)
        audit_fn.add_to_role_policy(iam.PolicyStatement(
            actions=["s3:GetObject"], resources=obj("raw/", "checkpoints/", "curated/", "compacted/")))
        audit_fn.add_to_role_policy(iam.PolicyStatement(actions=["s3:PutObject"], resources=obj("audit/")))
        audit_fn.add_to_role_policy(iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn]))
        events.Rule(self, "AuditSchedule", schedule=events.Schedule.cron(minute="30", hour="1"),
                    targets=[targets.LambdaFunction(audit_fn, retry_attempts=2, event=events.RuleTargetInput.from_object(
                        {"time": events.EventField.time, "days": AUDIT_DAYS}))])
        missing_trades = cw.Metric(namespace=NAMESPACE, metric_name="MissingTrades", dimensions_map={"service": SERVICE},
                                   statistic="Maximum", period=cdk.Duration.days(1))
        audit_alarms = [
            cw.Alarm(self, "MissingTradesAlarm", metric=missing_trades, threshold=1, evaluation_periods=1,
                     comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                     treat_missing_data=cw.TreatMissingData.NOT_BREACHING,  # no audit ran: AuditErrorsAlarm says why
                     alarm_description="The daily audit found trade ids missing for no known reason (lost or "
                                       "unexplained holes): run `schemahub audit` (then --repair)"),
            cw.Alarm(self, "AuditErrorsAlarm", metric=audit_fn.metric_errors(period=cdk.Duration.days(1)),
                     threshold=1, evaluation_periods=1,
                     comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                     treat_missing_data=cw.TreatMissingData.NOT_BREACHING, alarm_description="The daily audit failed"),
        ]
        for a in audit_alarms:
            a.add_alarm_action(cw_actions.SnsAction(topic))
        # ------------------------------------------------------------------ end of the daily audit

        cdk.CfnOutput(self, "BucketName", value=bucket.bucket_name)
        cdk.CfnOutput(self, "StateMachineArn", value=machine.state_machine_arn)
        self.bucket, self.machine, self.queue, self.dlq = bucket, machine, queue, dlq
        self.functions = {"plan": plan_fn, "ingest": ingest_fn, "transform": transform_fn, "summary": summary_fn,
                          "audit": audit_fn, "compact": compact_fn}
        self.topic = topic
