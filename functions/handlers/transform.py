"""SQS-triggered transform: each message is an S3 ObjectCreated notification for raw/ objects."""

from __future__ import annotations

import json
import time
from urllib.parse import unquote_plus

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from handlers.common import exchange_metric, logger, storage
from schemahub.layout import marker_key
from schemahub.store import open_store
from schemahub.transform import Transformer

processor = BatchProcessor(event_type=EventType.SQS)
_state: dict = {}


def _transformer() -> Transformer:
    # Built once per sandbox: the store client and compiled mappings are reused across invocations.
    if "t" not in _state:
        _state["t"] = Transformer(open_store(storage()))
    return _state["t"]


def raw_keys(body: str, prefix: str) -> list[str]:
    """Store-relative raw keys named by one S3 notification (empty for s3:TestEvent)."""
    doc = json.loads(body)
    out = []
    for rec in doc.get("Records", []):
        key = unquote_plus(rec["s3"]["object"]["key"])
        if key.startswith(prefix):
            key = key[len(prefix):]
        if key.startswith("raw/"):
            out.append(key)
    return out


def record_handler(record: SQSRecord) -> None:
    t = _transformer()
    prefix = getattr(t.store, "prefix", "")
    for key in raw_keys(record.body, prefix):
        if t.store.exists(marker_key(key)):
            logger.info("already transformed", extra={"raw_key": key})  # a duplicate delivery changes nothing
            continue
        res = t.transform_object(key)
        _, exchange, product_id, _ = key.split("/", 3)
        exchange_metric("RowsTransformed", res.rows, MetricUnit.Count, exchange)
        exchange_metric("RowsQuarantined", res.quarantined, MetricUnit.Count, exchange)
        freshness = None
        if res.last_trade_us is not None:
            freshness = round(max(0.0, time.time() - res.last_trade_us / 1e6), 1)
            exchange_metric("FreshnessSeconds", freshness, MetricUnit.Seconds, exchange)
        logger.info("transformed", extra={"raw_key": key, "exchange": exchange, "product_id": product_id,
                                          "rows": res.rows, "quarantined": res.quarantined, "freshness_s": freshness})


@logger.inject_lambda_context
def handler(event, context) -> dict:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
