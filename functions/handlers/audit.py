"""The daily audit (EventBridge schedule): every product's completeness, reports under audit/, `MissingTrades`.

The orchestration is schemahub.pipeline.audit, the CLI's `schemahub audit` path too. It audits only: a repair
asks the exchange again and writes raw/ and the table, which stays a deliberate act (`schemahub audit --repair`).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from aws_lambda_powertools.metrics import MetricUnit

from handlers.common import logger, metric, storage
from schemahub.errors import SchemahubError
from schemahub.pipeline import audit
from schemahub.store import open_store


@logger.inject_lambda_context
def handler(event, context) -> dict:
    # The schedule's event time is the audit's time (the only time a report holds); a test or a manual run may omit it.
    event = event or {}
    at = str(event.get("time") or datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"))
    # `days` (the schedule's input): audit the last N UTC days only (from N-1 days before the event's day), so a
    # long history costs its recent days each night; without it, everything.
    days = event.get("days")
    start = (date.fromisoformat(at[:10]) - timedelta(days=int(days) - 1)).isoformat() if days else None
    res = audit(open_store(storage()), audited_at=at, start=start)
    metric("MissingTrades", res.missing_trades, MetricUnit.Count)  # the MissingTrades alarm reads this
    out = {"audited_at": res.audited_at, "from_day": start, "exit_code": res.exit_code, "missing_trades": res.missing_trades,
           "products": len(res.products), "reports": len(res.reports),
           "failed": [{"exchange": p.exchange, "product_id": p.product_id, "missing": p.missing,
                       "duplicates": p.duplicates, "error": p.error} for p in res.products if not p.ok]}
    (logger.error if out["failed"] else logger.info)("audit", extra={"audit": out})
    unaudited = [p for p in res.products if p.error]
    if unaudited:
        # MissingTrades counts only what was audited: a product that could not be audited fails the run, so the
        # audit's errors alarm says so (its reports and the metric above are written first).
        raise SchemahubError("the daily audit could not audit " + "; ".join(
            f"{p.exchange}/{p.product_id}: {p.error}" for p in unaudited))
    return out
