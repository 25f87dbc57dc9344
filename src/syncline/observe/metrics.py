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

# Figures read from the store when /metrics is scraped (see syncline.observe.business.refresh_gauges).
outbox_oldest_age = Gauge(
    "syncline_outbox_oldest_age_seconds", "Age of the oldest delivery still waiting per connection", ["connection"],
    registry=registry,
)
inbox_depth = Gauge("syncline_inbox_depth", "Inbox rows by state (received, parked)", ["state"], registry=registry)
breaker_state = Gauge(
    "syncline_breaker_state", "Circuit breaker per connection: 0 closed, 1 half-open, 2 open", ["connection"],
    registry=registry,
)
connection_paused = Gauge("syncline_connection_paused", "1 while deliveries to a connection are paused",
                          ["connection"], registry=registry)
exceptions_open = Gauge(
    "syncline_exceptions_open", "Open exceptions by connection and error class", ["connection", "error_class"],
    registry=registry,
)
invoices_late_to_erp = Gauge(
    "syncline_invoices_late_to_erp", "Invoices not yet in the ERP past their service level", registry=registry
)
invoices_waiting_for_erp = Gauge(
    "syncline_invoices_waiting_for_erp", "Invoices not yet in the ERP", registry=registry
)
payments_late_to_crm = Gauge(
    "syncline_payments_late_to_crm", "Payments not yet reflected in the CRM past their service level",
    registry=registry,
)
orders_awaiting_billing = Gauge(
    "syncline_orders_awaiting_billing", "Won deals whose onboarding flow has not finished", registry=registry
)
tasks_open = Gauge("syncline_tasks_open", "Open human tasks by age bucket", ["age"], registry=registry)
