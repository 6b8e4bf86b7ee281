"""SQS-triggered transform: each message is an S3 ObjectCreated notification for raw/ objects.

Parsing uses Powertools' event classes (the S3 notification nested in SQS); transforming one object is
schemahub.pipeline.transform_key, which skips objects already transformed.
"""

from __future__ import annotations

import time
from urllib.parse import unquote_plus

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from handlers.common import exchange_metric, logger, storage
from schemahub.errors import DamagedObject
from schemahub.layout import damaged_key, parse_source_key
from schemahub.pipeline import transform_key
from schemahub.store import open_store
from schemahub.transform import Transformer

processor = BatchProcessor(event_type=EventType.SQS)
_state: dict = {}


def _transformer() -> Transformer:
    # Built once per sandbox: the store client and compiled mappings are reused across invocations.
    if "t" not in _state:
        _state["t"] = Transformer(open_store(storage()))
    return _state["t"]


def raw_keys(record: SQSRecord, prefix: str) -> list[str]:
    """Store-relative raw keys named by one S3 notification (none for s3:TestEvent)."""
    body = record.json_body
    if not isinstance(body, dict) or "Records" not in body:
        return []  # s3:TestEvent, sent once when the notification is configured
    out = []
    for rec in record.decoded_nested_s3_event.records:
        key = unquote_plus(rec.s3.get_object.key)
        key = key.removeprefix(prefix)
        if parse_source_key(key) is not None:
            out.append(key)
    return out


def record_handler(record: SQSRecord) -> None:
    t = _transformer()
    for key in raw_keys(record, getattr(t.store, "prefix", "")):
        try:
            res = transform_key(t, key)
        except DamagedObject as e:
            # Not transient: a retry reads the same bytes and only sends the message to the DLQ. The transform
            # recorded it under damaged/ with its reason; the message succeeds and the rest of the batch goes on.
            # Anything else (S3 unavailable, throttled, a bug) raises: the message is retried, then the DLQ.
            parts = parse_source_key(key)
            logger.error(f"{key}: damaged raw object, set aside ({e.reason}); recorded in {damaged_key(key)}: "
                         "restore the object from a copy or delete it, then run `schemahub transform`",
                         extra={"raw_key": key, "exchange": parts.exchange, "product_id": parts.product_id,
                                "reason": e.reason})
            exchange_metric("ObjectsDamaged", 1, MetricUnit.Count, parts.exchange)
            continue
        if res is None:
            logger.info("already transformed", extra={"raw_key": key})  # a duplicate delivery changes nothing
            continue
        parts = parse_source_key(key)
        exchange_metric("RowsTransformed", res.rows, MetricUnit.Count, parts.exchange)
        exchange_metric("RowsQuarantined", res.quarantined, MetricUnit.Count, parts.exchange)
        freshness = None
        if res.last_trade_us is not None:
            freshness = round(max(0.0, time.time() - res.last_trade_us / 1e6), 1)
            exchange_metric("FreshnessSeconds", freshness, MetricUnit.Seconds, parts.exchange)
        logger.info("transformed", extra={"raw_key": key, "exchange": parts.exchange, "product_id": parts.product_id,
                                          "rows": res.rows, "quarantined": res.quarantined, "freshness_s": freshness})


@logger.inject_lambda_context
def handler(event, context) -> dict:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
