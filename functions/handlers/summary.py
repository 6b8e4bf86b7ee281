"""Step Functions `Summarize` state: the cycle's failed products, as output, metric and retry input."""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel

from handlers.common import logger, metric
from schemahub.pipeline import summarize_cycle


class CycleResults(BaseModel):
    items: list[dict]
    results: list


@logger.inject_lambda_context
def handler(event, context) -> dict:
    req = CycleResults.model_validate(event)
    out = summarize_cycle(req.items, req.results)
    metric("ProductsFailed", len(out["failed"]), MetricUnit.Count)  # the ProductsFailed alarm reads this
    if out["failed"]:
        logger.error("products failed", extra={"failed": out["failed"]})
    logger.info("cycle", extra={"summary": {k: v for k, v in out.items() if k != "retry_input"}})
    return out
