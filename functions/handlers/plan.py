"""Step Functions `Plan` state: the seeded products to ingest this cycle."""

from __future__ import annotations

from pydantic import BaseModel

from handlers.common import logger
from schemahub.ingest import load_seed


class Only(BaseModel):
    exchange: str
    product_id: str


class PlanInput(BaseModel):
    exchanges: list[str] | None = None  # default: every seeded exchange
    only: list[Only] | None = None  # retry these products only: a cycle's output `retry_input` is this shape


@logger.inject_lambda_context
def handler(event, context) -> dict:
    req = PlanInput.model_validate(event or {})
    seed = load_seed()
    exchanges = req.exchanges or sorted(seed)
    items = [{"exchange": ex, "product_id": p.product_id} for ex in exchanges for p in seed.get(ex, [])]
    if req.only is not None:
        wanted = {(o.exchange, o.product_id) for o in req.only}
        unknown = wanted - {(i["exchange"], i["product_id"]) for i in items}
        if unknown:
            raise ValueError(f"plan input `only` names products that are not seeded: {sorted(unknown)}")
        items = [i for i in items if (i["exchange"], i["product_id"]) in wanted]
    logger.info("planned", extra={"items": len(items)})
    return {"items": items, "count": len(items)}
