"""Step Functions `Ingest` task: land one product exactly once, within the Lambda's time."""

from __future__ import annotations

import time
from datetime import datetime

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel

from handlers.common import exchange_metric, logger, storage
from schemahub.errors import ExchangeBanned
from schemahub.ingest import load_seed, make_source, resolve_products
from schemahub.landing import IngestOptions, Lander, active_ban, record_ban
from schemahub.store import open_store

SAFETY_S = 15.0  # leave time to write the last object and return


class IngestItem(BaseModel):
    exchange: str
    product_id: str
    since: datetime | None = None


class ProductIngestFailed(Exception):
    """Raised so Step Functions' Catch records this product's failure; other products carry on."""


@logger.inject_lambda_context
def handler(event, context) -> dict:
    item = IngestItem.model_validate(event)
    deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000 - SAFETY_S
    store = open_store(storage())
    ban = active_ban(store, item.exchange)
    if ban:  # an earlier invocation was banned: send nothing until the ban ends
        logger.warning("banned", extra={"exchange": item.exchange, "product_id": item.product_id, "reason": ban})
        return {"exchange": item.exchange, "product_id": item.product_id, "status": "skipped", "more_to_do": False,
                "trades": 0, "message": ban}
    source = make_source(item.exchange)
    [product] = resolve_products(source, [item.product_id], load_seed())
    try:
        res = Lander(store, source).run(product, IngestOptions(since=item.since), deadline)
    except ExchangeBanned as e:
        record_ban(store, item.exchange, e)
        exchange_metric("IngestErrors", 1, MetricUnit.Count, item.exchange)
        raise ProductIngestFailed(f"{item.exchange}/{item.product_id}: {e}") from None
    exchange_metric("TradesIngested", res.trades, MetricUnit.Count, item.exchange)
    stats = source.http.stats
    exchange_metric("RateLimited", stats.rate_limited, MetricUnit.Count, item.exchange)
    exchange_metric("HttpRetries", stats.retries, MetricUnit.Count, item.exchange)
    out = {"exchange": item.exchange, "product_id": item.product_id, "status": res.status,
           "more_to_do": res.more_to_do, "trades": res.trades, "watermark": res.hi, "message": res.message,
           "rate_limited": stats.rate_limited, "retries": stats.retries}
    logger.info("ingested", extra={"result": out})  # not **out: "message" is reserved by logging
    if res.status == "failed":
        exchange_metric("IngestErrors", 1, MetricUnit.Count, item.exchange)
        raise ProductIngestFailed(f"{item.exchange}/{item.product_id}: {res.message}")
    return out
