"""Step Functions `Ingest` task: land one product exactly once, within the Lambda's time and the child's.

The orchestration is schemahub.pipeline.ingest_product, the CLI's path too; this module parses the
payload and maps the result.
"""

from __future__ import annotations

import time
from datetime import datetime

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel

from handlers.common import exchange_metric, logger, storage
from schemahub.ingest import load_seed, make_source, resolve_products
from schemahub.landing import IngestOptions
from schemahub.pipeline import ingest_product, may_continue
from schemahub.store import open_store

SAFETY_S = 15.0  # leave time to write the last object and return


class IngestItem(BaseModel):
    exchange: str
    product_id: str
    since: datetime | None = None
    started: datetime | None = None  # $$.Execution.StartTime: when this product's Express child started
    again_until_s: float | None = None  # another invocation may start until this many seconds after `started`


class ProductIngestFailed(Exception):
    """Raised so Step Functions' Catch records this product's failure; other products carry on."""


@logger.inject_lambda_context
def handler(event, context) -> dict:
    item = IngestItem.model_validate(event)
    deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000 - SAFETY_S
    store = open_store(storage())
    # REST only: the archive's reader needs pyarrow, which this function's layer leaves out (cold starts, size);
    # a backfill from the archive runs with the CLI against the same s3:// storage (README, Binance archive).
    source = make_source(item.exchange, archive=False)
    [product] = resolve_products(source, [item.product_id], load_seed())
    res = ingest_product(store, source, product, IngestOptions(since=item.since), deadline)
    stats = source.http.stats
    exchange_metric("TradesIngested", res.trades, MetricUnit.Count, item.exchange)
    exchange_metric("RateLimited", stats.rate_limited, MetricUnit.Count, item.exchange)
    exchange_metric("HttpRetries", stats.retries, MetricUnit.Count, item.exchange)
    out = {"exchange": item.exchange, "product_id": item.product_id, "status": res.status,
           "more_to_do": res.more_to_do, "trades": res.trades, "watermark": res.hi, "message": res.message,
           "rate_limited": stats.rate_limited, "retries": stats.retries,
           # The state machine loops on `again`: more to do, and time for one more invocation in this child.
           # Otherwise the backlog goes on in the next cycle.
           "again": res.more_to_do and may_continue(item.started, item.again_until_s)}
    logger.info("ingested", extra={"result": out})  # not **out: "message" is reserved by logging
    if res.status == "failed":
        exchange_metric("IngestErrors", 1, MetricUnit.Count, item.exchange)
        raise ProductIngestFailed(f"{item.exchange}/{item.product_id}: {res.message}")
    return out
