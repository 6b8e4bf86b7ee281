"""Step Functions `Plan` state: the seeded products to ingest this cycle."""

from __future__ import annotations

from pydantic import BaseModel

from handlers.common import logger
from schemahub.ingest import load_seed


class PlanInput(BaseModel):
    exchanges: list[str] | None = None  # default: every seeded exchange


@logger.inject_lambda_context
def handler(event, context) -> dict:
    req = PlanInput.model_validate(event or {})
    seed = load_seed()
    exchanges = req.exchanges or sorted(seed)
    items = [{"exchange": ex, "product_id": p.product_id} for ex in exchanges for p in seed.get(ex, [])]
    logger.info("planned", extra={"items": len(items)})
    return {"items": items, "count": len(items)}
