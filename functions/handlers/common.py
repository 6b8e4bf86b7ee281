"""What every handler shares: the store, Powertools logger and metrics."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "schemahub")
logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "schemahub"))
metrics = Metrics(namespace=NAMESPACE)


def product_metric(name: str, value: float, unit: MetricUnit, exchange: str, product_id: str) -> None:
    """One metric with the (exchange, product_id) dimension set the dashboard reads."""
    with single_metric(name=name, unit=unit, value=value, namespace=NAMESPACE) as m:
        m.add_dimension(name="exchange", value=exchange)
        m.add_dimension(name="product_id", value=product_id)


def exchange_metric(name: str, value: float, unit: MetricUnit, exchange: str) -> None:
    """One metric with the (exchange) dimension set."""
    with single_metric(name=name, unit=unit, value=value, namespace=NAMESPACE) as m:
        m.add_dimension(name="exchange", value=exchange)


def storage() -> str:
    return os.environ["SCHEMAHUB_STORAGE"]
