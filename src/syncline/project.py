"""The project folder: the commented ``syncline.yaml`` that ``syncline init`` writes."""

from __future__ import annotations

TEMPLATE = """\
# Syncline project configuration.
# Secrets are never written here: use ${env:NAME} or ${file:/path/to/secret} references.

# Where Syncline keeps its inbox, outbox, cross-references and timeline.
# Embedded SQLite by default; PostgreSQL when several workers share the work:
#   store: ${env:SYNCLINE_DATABASE_URL}      (postgresql://user@host:5432/syncline)
store: sqlite:///syncline.db

connections:
  # Billing: Stripe sends webhooks to POST /v1/webhooks/stripe
  stripe:
    vendor: stripe
    base_url: https://api.stripe.com
    secrets:
      api_key: ${env:STRIPE_API_KEY}
      webhook_secret: ${env:STRIPE_WEBHOOK_SECRET}
    webhook:
      max_body_bytes: 1048576
  # ERP: NetSuite REST record API, token-based authentication.
  netsuite:
    vendor: netsuite
    base_url: https://123456.suitetalk.api.netsuite.com
    options:
      account_id: "123456"
      subsidiary_id: "1"
    secrets:
      consumer_key: ${env:NETSUITE_CONSUMER_KEY}
      consumer_secret: ${env:NETSUITE_CONSUMER_SECRET}
      token_id: ${env:NETSUITE_TOKEN_ID}
      token_secret: ${env:NETSUITE_TOKEN_SECRET}
    # Our share of the account's concurrency limit (other integrations use the rest).
    budget:
      concurrency: 5

# Event type (or prefix.*) + optional JMESPath condition -> deliver to a connection's operation.
routes:
  - event: account.*
    deliver: {connection: netsuite, operation: upsert_customer}
  - event: invoice.*
    deliver: {connection: netsuite, operation: upsert_invoice}
  - event: payment.succeeded
    when: "data.invoice_id != null"
    deliver: {connection: netsuite, operation: upsert_customer_payment}
  - event: credit_memo.issued
    deliver: {connection: netsuite, operation: upsert_credit_memo}
  - event: refund.succeeded
    deliver: {connection: netsuite, operation: upsert_customer_refund}

retry:
  max_attempts: 12        # transient failures before a delivery is parked
  base_seconds: 0.5       # exponential backoff with full jitter, capped:
  cap_seconds: 300

api:
  host: 127.0.0.1
  port: 8080
"""
