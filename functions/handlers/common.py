"""What every handler shares: the store, Powertools logger and metrics."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "schemahub")
logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "schemahub"))
metrics = Metrics(namespace=NAMESPACE)


def exchange_metric(name: str, value: float, unit: MetricUnit, exchange: str) -> None:
    """One metric with the (exchange) dimension set the dashboard and alarms read.

    Per-product numbers go to the structured logs instead (Logs Insights widgets): a custom metric
    per product would cost ~$0.30 a month each.
    """
    with single_metric(name=name, unit=unit, value=value, namespace=NAMESPACE) as m:
        m.add_dimension(name="exchange", value=exchange)


def storage() -> str:
    return os.environ["SCHEMAHUB_STORAGE"]
