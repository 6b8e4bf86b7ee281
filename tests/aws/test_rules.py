"""The AWS rules layer: each function runs from its synthesized asset and layers, with the template's
environment, under its own role's IAM policies and S3's existence rule (see iam.py, sandbox.py, asl.py)."""

from __future__ import annotations

import json
from urllib.parse import quote_plus

import pytest

from tests.aws.template import alarm_metrics, dashboard_metrics, resources

pytestmark = pytest.mark.xdist_group("aws")


def s3_notification(bucket: str, key: str, region: str = "eu-west-1") -> str:
    """The body S3 sends to SQS for one ObjectCreated event."""
    return json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": region,
        "eventTime": "2026-11-29T12:00:00.000Z", "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "raw", "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": quote_plus(key, safe="/"), "size": 1, "eTag": "x", "sequencer": "0"}}}]})


def sqs_event(bodies: list[str], region: str = "eu-west-1") -> dict:
    return {"Records": [{"messageId": f"m{i}", "receiptHandle": f"r{i}", "body": b, "attributes": {
        "ApproximateReceiveCount": "1", "SentTimestamp": "0", "SenderId": "s3", "ApproximateFirstReceiveTimestamp": "0"},
        "messageAttributes": {}, "md5OfBody": "x", "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{region}:123456789012:RawObjects", "awsRegion": region}
        for i, b in enumerate(bodies)]}


def ingest_payload(world, exchange: str, product_id: str) -> dict:
    """The Ingest task's payload for one product, as the synthesized state machine builds it."""
    from tests.aws.asl import Interpreter

    _, d = world.dep.state_machine()
    inner = d["States"]["EachProduct"]["ItemProcessor"]["States"]["Ingest"]
    interp = Interpreter(d, invoke=None, timeouts={}, role_statements=[])
    from tests.aws.asl import Clock

    params = inner["Parameters"]
    params = params.get("Payload", params) if "FunctionName" in params else params
    return interp._params(params, {"exchange": exchange, "product_id": product_id},
                          {"clock": Clock(), "item": {}, "index": 0})


# ------------------------------------------------------------------ findings 1 and 2: IAM and S3's 403 rule

def test_first_ingest_lands_under_the_ingest_role(world):
    """Finding 1+2: ban check (bans/), first-run checkpoint read and raw existence checks under the real role."""
    inv = world.sandbox("handlers.ingest.handler").invoke(ingest_payload(world, "coinbase", "BTC-USD"))
    assert not inv.denied(), inv.denied()
    assert inv.error is None, inv.error
    assert inv.result["status"] == "ok" and inv.result["trades"] > 0
    reads = {c["action"] for c in inv.calls}
    assert {"s3:GetObject", "s3:PutObject", "s3:ListBucket"} <= reads


def test_transform_of_a_new_raw_object_under_the_transform_role(world):
    """Finding 2: the marker of a new object does not exist yet; without ListBucket S3 says 403, not 404."""
    store = world.store()
    keys = [o.key for o in store.list("raw/coinbase/BTC-USD/")]
    assert keys, "run the ingest test first (module order)"
    inv = world.sandbox("handlers.transform.handler").invoke(
        sqs_event([s3_notification(world.bucket, f"schemahub/{keys[0]}")]))
    assert not inv.denied(), inv.denied()
    assert inv.error is None and inv.result == {"batchItemFailures": []}, (inv.error, inv.result, inv.stdout[-5:])
    assert any(o.key.startswith("curated/exchange=coinbase/product_id=BTC-USD/") for o in store.list("curated/"))


# ------------------------------------------------------------------ finding 4: metrics match their readers

def _emitted(world):
    out = {}
    for sb in world.sandboxes.values():
        for inv in sb.invocations:
            for ref, v in inv.metrics:
                out.setdefault(ref, []).append(v)
    return out


def test_every_custom_metric_read_by_the_dashboard_or_an_alarm_is_emitted_with_that_exact_dimension_set(world):
    # This test lands and transforms a product of its own, so it never depends on which tests ran before it.
    ingest = world.sandbox("handlers.ingest.handler").invoke(ingest_payload(world, "coinbase", "ETH-USD"))
    assert ingest.error is None and not ingest.denied(), (ingest.error, ingest.denied())
    key = next(o.key for o in world.store().list("raw/coinbase/ETH-USD/"))
    transform = world.sandbox("handlers.transform.handler").invoke(
        sqs_event([s3_notification(world.bucket, f"schemahub/{key}")]))
    assert transform.error is None and not transform.denied(), (transform.error, transform.denied())
    audit = world.sandbox("handlers.audit.handler").invoke({"time": "2026-12-02T01:30:00Z"})
    assert audit.error is None and not audit.denied(), (audit.error, audit.denied())
    emitted = _emitted(world)
    assert emitted, ("no EMF output captured", ingest.stdout[-5:], transform.stdout[-5:])
    readers = [(title, m) for title, m in dashboard_metrics(world.dep.dashboard())]
    for name, alarm in world.dep.alarms().items():
        readers += [(f"alarm {name}", m) for m in alarm_metrics(alarm)]
    ours = [(t, m) for t, m in readers if m.namespace == "schemahub"]
    assert ours
    simulated = set(world.sims)
    missing = []
    for title, m in ours:
        dims = dict(m.dimensions)
        if dims.get("exchange") not in (None, *simulated):
            continue
        if m.name in ("ProductsFailed", "IngestErrors"):
            continue  # emitted on failures only: the flow test (a failing product) checks them
        if dims.get("exchange") not in (None, "coinbase"):
            continue  # only coinbase ran in this module; the flow test covers every exchange
        if m not in emitted:
            near = [str(e) for e in emitted if e.name == m.name]
            missing.append(f"{title}: reads {m}, handlers emit {near or 'nothing by that name'}")
    assert not missing, "\n".join(missing)


def test_handlers_run_from_the_asset_with_the_layer_sdk(world):
    """Finding 8: boto3/botocore come from the pinned layer, not from the runtime or the test venv."""
    from tests.conftest import ROOT

    inv = world.sandbox("handlers.ingest.handler").invocations[0]
    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().split("\n")
                if "==" in line for line in [line.split("#")[0].strip()])
    assert "botocore" in pins and "boto3" in pins
    layer = str(world.dep.layer_dirs(world.dep.function_id("handlers.ingest.handler"))[0])
    assert inv.modules["botocore"].startswith(layer), inv.modules
    dist = [p.name for p in (world.dep.layer_dirs(world.dep.function_id("handlers.ingest.handler"))[0] / "python").iterdir()]
    assert f"botocore-{pins['botocore']}.dist-info" in dist and f"boto3-{pins['boto3']}.dist-info" in dist


def test_sandbox_environment_is_the_templates(world):
    sb = world.sandbox("handlers.ingest.handler")
    env = sb.template_env
    assert "POWERTOOLS_SERVICE_NAME" in env and env["SCHEMAHUB_STORAGE"] == f"s3://{world.bucket}/schemahub"
    _ = resources


# ------------------------------------------------------------------ a damaged raw object in the transform Lambda

def _raw(start: int, n: int, product: str = "LTC-USD") -> bytes:
    from schemahub.rawobject import encode, make_header

    ids = range(start + 1, start + n + 1)
    lines = [json.dumps({"time": f"2026-11-29T10:00:{i % 60:02d}.000001Z", "trade_id": i, "price": "70.5",
                         "size": "1", "side": "sell"}, separators=(",", ":")).encode() for i in ids]
    header = make_header(exchange="coinbase", product_id=product, symbol=product, start=start, end=start + n,
                         count=n, min_id=ids[0], max_id=ids[-1], fetched_at="2026-11-29T12:00:00Z", requests=[])
    return encode(header, lines)


def test_a_damaged_raw_object_is_set_aside_and_the_batch_succeeds_for_the_others(world):
    """A truncated raw object (a partial upload) is not transient: retrying it only sends it to the DLQ. It is
    recorded under damaged/ with its reason, logged by key and counted, and the good object of the batch lands."""
    from schemahub.layout import damaged_key, marker_key, raw_key

    store = world.store()
    good, bad = raw_key("coinbase", "LTC-USD", 0), raw_key("coinbase", "LTC-USD", 5)
    store.put(good, _raw(0, 5))
    whole = _raw(5, 5)
    store.put(bad, whole[: len(whole) // 2])
    inv = world.sandbox("handlers.transform.handler").invoke(sqs_event(
        [s3_notification(world.bucket, f"schemahub/{k}") for k in (bad, good)]))
    assert not inv.denied(), inv.denied()
    assert inv.error is None and inv.result == {"batchItemFailures": []}, (inv.error, inv.result, inv.stdout[-5:])
    assert store.exists(marker_key(good)) and not store.exists(marker_key(bad))
    record = json.loads(store.get(damaged_key(bad)).data)
    assert record["raw_key"] == bad and record["reason"]
    lines = [line for line in inv.stdout if bad in line and "damaged" in line]
    assert lines and record["reason"] in lines[0]
    assert [v for ref, v in inv.metrics if ref.name == "ObjectsDamaged"] == [1]


def test_a_restored_raw_object_is_transformed_and_its_damaged_record_goes(world):
    """README: a damaged object "stays untransformed until it is restored from a copy or deleted; then the
    record goes". Restoring it on S3 notifies the queue again; the Lambda transforms it and, with only its own
    grants, removes the damaged/ record (a record left behind would point an operator at a problem that is gone)."""
    from schemahub.layout import damaged_key, marker_key, raw_key

    store = world.store()
    key = raw_key("coinbase", "LTC-USD", 100)
    whole = _raw(100, 5)
    store.put(key, whole[: len(whole) // 2])
    fn = world.sandbox("handlers.transform.handler")
    event = sqs_event([s3_notification(world.bucket, f"schemahub/{key}")])
    assert fn.invoke(event).result == {"batchItemFailures": []}
    assert store.exists(damaged_key(key))
    store.put(key, whole)  # restored from a copy
    inv = fn.invoke(event)
    assert not inv.denied(), inv.denied()
    assert inv.error is None and inv.result == {"batchItemFailures": []}, (inv.error, inv.result, inv.stdout[-5:])
    assert store.exists(marker_key(key)) and not store.exists(damaged_key(key))
