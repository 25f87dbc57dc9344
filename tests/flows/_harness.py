"""Quote-to-cash flows on in-process fake connectors: one fake vendor per connection."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from sqlalchemy import select

from syncline.config import parse_config
from syncline.connectors.base import Connector, ConnectorRegistry, Operation
from syncline.flows import QUOTE_TO_CASH, Flow
from syncline.flows._tables import flow_instances, flow_tasks
from syncline.pipeline.inbox import Received, write_inbox
from syncline.runtime import Syncline
from syncline.testing import FakeConnector, FakeVendor

SECRET = "whsec_flows_tests"
_names = itertools.count()


def _fake(vendor: str, operations: Mapping[str, str]) -> type[Connector]:
    ops = {name: Operation(name, accepts) for name, accepts in operations.items()}
    return type(f"Fake_{vendor}", (FakeConnector,), {"vendor": vendor, "operations": ops})


CRM = _fake("fake_crm", {"write_back_status": "opportunity", "upsert_account": "account"})
BILLING = _fake("fake_billing", {"upsert_customer": "account", "upsert_product": "product",
                                 "upsert_price": "price", "upsert_subscription": "subscription"})
ERP = _fake("fake_erp", {"upsert_customer": "account", "upsert_sales_order": "sales_order"})
SUPPORT = _fake("fake_support", {"upsert_organization": "account", "set_entitlement": "entitlement",
                                 "open_ticket": "support_ticket"})


class Vendors:
    """One fake vendor per connection, with names unique to the test."""

    def __init__(self) -> None:
        run = next(_names)
        self.crm = FakeVendor(f"flows-{run}-crm")
        self.billing = FakeVendor(f"flows-{run}-billing")
        self.erp = FakeVendor(f"flows-{run}-erp")
        self.erp_legacy = FakeVendor(f"flows-{run}-erp-legacy")
        self.support = FakeVendor(f"flows-{run}-support")

    def all(self) -> dict[str, FakeVendor]:
        return {"crm": self.crm, "billing": self.billing, "erp": self.erp, "erp_legacy": self.erp_legacy,
                "support": self.support}


def make_syncline(store_url: str, vendors: Vendors, *, flows: tuple[Flow, ...] = QUOTE_TO_CASH,
                  retry: Mapping[str, Any] | None = None, **flow_settings: Any) -> Syncline:
    os.environ["FLOWS_WEBHOOK_SECRET"] = SECRET
    connections: dict[str, Any] = {
        name: {"vendor": vendor, "base_url": "http://127.0.0.1:9", "options": {"vendor_state": state.name},
               "secrets": {"webhook_secret": "${env:FLOWS_WEBHOOK_SECRET}"}}
        for name, vendor, state in [
            ("crm", "fake_crm", vendors.crm), ("billing", "fake_billing", vendors.billing),
            ("erp", "fake_erp", vendors.erp), ("erp_legacy", "fake_erp", vendors.erp_legacy),
            ("support", "fake_support", vendors.support),
        ]
    }
    config = parse_config({
        "store": None,
        "connections": connections,
        "retry": dict(retry or {"base_seconds": 0.01, "cap_seconds": 0.05, "max_attempts": 6}),
        "pipeline": {"breaker_failures": 10_000},
        "flows": {
            "legal_entities": [
                {"id": "us-inc", "countries": ["US", "CA"], "currency": "USD"},
                {"id": "de-gmbh", "countries": ["DE", "AT"], "currency": "EUR", "payment_terms": "net14",
                 "erp_connection": "erp_legacy"},
            ],
            "poll_seconds": 0.02,
            **flow_settings,
        },
    })
    from syncline.store import create_store_engine

    syncline = Syncline(config, registry=ConnectorRegistry([CRM, BILLING, ERP, SUPPORT]),
                        engine=create_store_engine(store_url), flows=flows)
    syncline.migrate()
    return syncline


def money(amount: int, currency: str = "USD") -> dict[str, Any]:
    return {"amount": amount, "currency": currency}


def account(account_id: str, *, name: str = "Acme Corp", country: str | None = "US",
            tax_ids: tuple[str, ...] = ("US-1",),
            currency: str | None = "USD") -> dict[str, Any]:
    return {"id": account_id, "source": {"system": "crm", "object_type": "account", "external_id": account_id},
            "name": name, "currency": currency, "tax_ids": list(tax_ids),
            "address": {"country": country} if country else None}


def opportunity(opportunity_id: str, account_id: str, *, currency: str = "USD", lines: int = 1) -> dict[str, Any]:
    return {
        "id": opportunity_id,
        "source": {"system": "crm", "object_type": "opportunity", "external_id": opportunity_id},
        "account_id": account_id, "name": f"Deal {opportunity_id}", "stage": "closed_won", "currency": currency,
        "amount": money(12000 * lines, currency), "close_date": "2026-11-20",
        "lines": [{"id": f"{opportunity_id}-l{n}", "description": f"Plan {n}", "quantity": 2,
                   "unit_amount": money(6000, currency), "interval": "month"} for n in range(lines)],
    }


def event(kind: str, data: Mapping[str, Any], *, event_id: str | None = None, sequence: int | None = None,
          correlation_id: str | None = None) -> bytes:
    body: dict[str, Any] = {"id": event_id or f"{kind}-{data['id']}", "type": kind, "created": 1, "data": data}
    if sequence is not None:
        body["sequence"] = sequence
    if correlation_id is not None:
        body["correlation_id"] = correlation_id
    return orjson.dumps(body)


def ingest(syncline: Syncline, *bodies: bytes, connection: str = "crm") -> None:
    items = [Received(connection, orjson.loads(body)["id"], orjson.loads(body)["type"], body) for body in bodies]
    write_inbox(syncline.engine, items)


def instances(syncline: Syncline) -> dict[str, Any]:
    with syncline.engine.connect() as conn:
        return {row.id: row for row in conn.execute(select(flow_instances))}


def tasks(syncline: Syncline, **where: Any) -> list[Any]:
    query = select(flow_tasks).order_by(flow_tasks.c.created_at)
    for column, value in where.items():
        query = query.where(flow_tasks.c[column] == value)
    with syncline.engine.connect() as conn:
        return list(conn.execute(query))


async def run_until(syncline: Syncline, done: Callable[[], bool], *, within: float = 60.0, quiet: bool = True) -> None:
    """Run the whole pipeline (normalizer, flows, workers) until ``done()`` holds (and, with
    ``quiet``, nothing is left in the outbox)."""
    stop = asyncio.Event()
    runner = asyncio.create_task(syncline.run_workers(stop))
    deadline = time.monotonic() + within
    try:
        # Stop only once the outbox is quiet too: a delivery claimed while the workers stop would
        # stay leased until its lease runs out (see the flows report on DeliveryWorker shutdown).
        while not (await asyncio.to_thread(done)
                   and not (quiet and any((await asyncio.to_thread(syncline.backlog)).values()))):
            if runner.done():
                runner.result()
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not reached within {within}s; instances: "
                                     f"{[(row.id, row.state, row.step) for row in instances(syncline).values()]}")
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await runner


def state_of(syncline: Syncline, instance_id: str) -> str | None:
    row = instances(syncline).get(instance_id)
    return None if row is None else str(row.state)


def settled(syncline: Syncline, *instance_ids: str) -> Callable[[], bool]:
    """True once every instance is final or waiting for a person."""
    def check() -> bool:
        rows = instances(syncline)
        return all(i in rows and rows[i].state in ("completed", "compensated", "cancelled", "failed",
                                                   "waiting_for_task") for i in instance_ids)
    return check
