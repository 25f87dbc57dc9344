"""Prometheus metrics (one registry per process, served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

registry = CollectorRegistry(auto_describe=True)

webhooks = Counter(
    "syncline_webhooks_total", "Inbound webhook requests by outcome", ["connection", "outcome"], registry=registry
)
ingest_seconds = Histogram(
    "syncline_ingest_seconds", "Webhook request handling time until durable", ["connection"], registry=registry,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
normalized = Counter(
    "syncline_normalized_total", "Inbox rows normalized by outcome", ["outcome"], registry=registry
)
deliveries = Counter(
    "syncline_deliveries_total", "Delivery attempts by outcome or error class", ["connection", "outcome"],
    registry=registry,
)
delivery_seconds = Histogram(
    "syncline_delivery_seconds", "Vendor call latency per delivery attempt", ["connection"], registry=registry,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
budget_in_use = Gauge(
    "syncline_budget_in_use", "Requests in flight per connection", ["connection"], registry=registry
)
budget_limit = Gauge(
    "syncline_budget_limit", "Current concurrency limit per connection", ["connection"], registry=registry
)
queue_depth = Gauge(
    "syncline_outbox_depth", "Outbox rows not yet delivered per connection and state", ["connection", "state"],
    registry=registry,
)
