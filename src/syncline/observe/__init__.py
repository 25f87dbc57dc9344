"""Observability: metrics, structured logs, correlation ids."""

from syncline.observe import metrics
from syncline.observe.logging import configure_logging

__all__ = ["configure_logging", "metrics"]
