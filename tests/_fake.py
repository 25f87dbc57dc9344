"""Builders for pipeline tests on the in-process fake connector."""

from __future__ import annotations

import os
from typing import Any

import orjson

from syncline.config import parse_config
from syncline.connectors.base import ConnectorRegistry
from syncline.runtime import Syncline
from syncline.testing import FakeConnector, FakeVendor

SECRET = "whsec_fake_for_tests"


def make_syncline(store_url: str, vendor: FakeVendor, **pipeline: Any) -> Syncline:
    os.environ["FAKE_WEBHOOK_SECRET"] = SECRET
    config = parse_config({
        "store": store_url,
        "connections": {
            "src": {"vendor": "fake", "base_url": "http://127.0.0.1:9",
                    "secrets": {"webhook_secret": "${env:FAKE_WEBHOOK_SECRET}"}},
            "erp": {"vendor": "fake", "base_url": "http://127.0.0.1:9", "options": {"vendor_state": vendor.name},
                    "budget": {"concurrency": 4}},
        },
        "routes": [
            {"event": "account.*", "deliver": {"connection": "erp", "operation": "upsert_account"}},
            {"event": "invoice.*", "deliver": {"connection": "erp", "operation": "upsert_invoice"}},
            {"event": "payment.succeeded", "when": "data.amount.amount > `0`",
             "deliver": {"connection": "erp", "operation": "upsert_payment"}},
        ],
        "retry": {"base_seconds": 0.01, "cap_seconds": 0.05, "max_attempts": 4},
        "pipeline": {"breaker_failures": 1000, **pipeline},
    })
    syncline = Syncline(config, registry=ConnectorRegistry([FakeConnector]))
    syncline.migrate()
    return syncline


def money(amount: int, currency: str = "USD") -> dict[str, Any]:
    return {"amount": amount, "currency": currency}


def source(kind: str, ext: str) -> dict[str, str]:
    return {"system": "src", "object_type": kind, "external_id": ext}


def account_event(event_id: str, account: str, *, seq: int = 1, name: str = "Acme") -> bytes:
    return orjson.dumps({"id": event_id, "type": "account.created", "sequence": seq, "created": 1, "data": {
        "id": account, "source": source("customer", account), "name": name}})


def invoice_event(event_id: str, invoice: str, account: str, *, seq: int = 1, status: str = "open",
                  kind: str = "invoice.issued", total: int = 1000) -> bytes:
    return orjson.dumps({"id": event_id, "type": kind, "sequence": seq, "created": 1, "data": {
        "id": invoice, "source": source("invoice", invoice), "account_id": account, "status": status,
        "currency": "USD", "subtotal": money(total), "tax": money(0), "total": money(total),
        "amount_paid": money(total if status == "paid" else 0),
        "amount_due": money(0 if status == "paid" else total),
        "lines": [{"id": f"{invoice}-l1", "amount": money(total)}]}})


def payment_event(event_id: str, payment: str, invoice: str, account: str, amount: int = 1000) -> bytes:
    return orjson.dumps({"id": event_id, "type": "payment.succeeded", "created": 1, "data": {
        "id": payment, "source": source("charge", payment), "account_id": account, "invoice_id": invoice,
        "amount": money(amount), "amount_refunded": money(0), "status": "succeeded",
        "paid_at": "2026-11-01T00:00:00Z"}})
