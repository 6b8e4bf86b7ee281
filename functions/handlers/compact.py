"""Scheduled `Compact`: every closed product-day into one file, and the Glue partitions pointed at it.

The orchestration is schemahub.pipeline.compact_closed, the CLI's `schemahub compact` too; this module only
bounds it by the Lambda's time (a backlog goes on in the next invocation) and maps the result.
"""

from __future__ import annotations

import time

from handlers.common import logger, storage
from schemahub.pipeline import compact_closed
from schemahub.store import open_store

SAFETY_S = 120.0  # no new day after this much time is left: the last one and the catalog sync still fit


@logger.inject_lambda_context
def handler(event, context) -> dict:
    deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000 - SAFETY_S
    res = compact_closed(open_store(storage()), deadline=deadline)
    out = {"partitions": res.partitions, "parts": res.parts, "rows": res.rows, "duplicates": res.duplicates,
           "open": res.skipped_open, "pending": res.pending, "catalog": res.catalog}
    logger.info("compacted", extra={"result": out})
    return out
