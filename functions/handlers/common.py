"""What every handler shares: the store, Powertools logger and metrics."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from schemahub.memory import tune_allocator

NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "schemahub")
SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "schemahub")
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE)
tune_allocator()  # once per cold start: every handler imports this module


# The only metrics with an exchange dimension: an alarm (freshness) or the headline graph reads them per exchange.
PER_EXCHANGE = frozenset({"TradesIngested", "FreshnessSeconds"})


def exchange_metric(name: str, value: float, unit: MetricUnit, exchange: str) -> None:
    """One custom metric: dimensions {exchange, service} where PER_EXCHANGE says so, else {service}.

    Powertools adds `service` to every metric when POWERTOOLS_SERVICE_NAME is set, so it is added here
    explicitly too: the dashboard and the alarms (cdk_app/stack.py) read exactly these dimension sets.

    Each (name, dimensions) pair costs ~$0.30 a month: 2 per exchange plus 5 overall stays at
    13 metrics for 4 exchanges, where 7 per exchange would be 28. Per-product and per-exchange
    detail goes to the structured logs instead (Logs Insights widgets).
    """
    with single_metric(name=name, unit=unit, value=value, namespace=NAMESPACE) as m:
        m.add_dimension(name="service", value=SERVICE)
        if name in PER_EXCHANGE:
            m.add_dimension(name="exchange", value=exchange)


def metric(name: str, value: float, unit: MetricUnit) -> None:
    """One overall custom metric, dimension {service}."""
    with single_metric(name=name, unit=unit, value=value, namespace=NAMESPACE) as m:
        m.add_dimension(name="service", value=SERVICE)


def storage() -> str:
    return os.environ["SCHEMAHUB_STORAGE"]
