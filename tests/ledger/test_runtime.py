"""A `ledger:` section in syncline.yaml is enough: the running pipeline posts and delivers the entries."""

from __future__ import annotations

import asyncio
import os

import orjson
import pytest

from syncline.canonical import objects as o
from syncline.config import parse_config
from syncline.connectors.base import ConnectorRegistry
from syncline.pipeline.inbox import Received, write_inbox
from syncline.runtime import Syncline
from syncline.testing import FakeConnector, FakeVendor

from . import _build as b
from .test_store import NOV


@pytest.mark.anyio
async def test_configured_ledger_posts_billing_events_and_the_erp_worker_delivers_them(store_url: str) -> None:
    os.environ["LEDGER_FAKE_SECRET"] = "whsec_ledger_runtime"
    erp = FakeVendor("ledger-runtime-erp")
    config = parse_config({
        "store": store_url,
        "connections": {
            "billing": {"vendor": "fake", "base_url": "http://127.0.0.1:9",
                        "secrets": {"webhook_secret": "${env:LEDGER_FAKE_SECRET}"}},
            "netsuite": {"vendor": "fake", "base_url": "http://127.0.0.1:9", "options": {"vendor_state": erp.name}},
        },
        "routes": [],
        "ledger": b.raw_config(),
    })
    syncline = Syncline(config, registry=ConnectorRegistry([FakeConnector]))
    try:
        syncline.migrate()
        assert syncline.delivery_targets() == ["netsuite"]
        assert syncline.ledger is not None
        syncline.ledger.load_rates(b.rates().all())
        invoice = b.invoice("in_rt", "USD", [b.line("l_rt", 4_000, "USD")], issued=NOV, account="acct_us")
        payment = b.payment("py_rt", "in_rt", 4_000, "USD", paid=NOV, account="acct_us")
        created = int(b.at(NOV).timestamp())
        write_inbox(syncline.engine, [
            Received("billing", f"evt_{n}", kind, orjson.dumps(
                {"id": f"evt_{n}", "type": kind, "created": created, "data": doc.model_dump(mode="json")}))
            for n, (kind, doc) in enumerate([("invoice.issued", invoice), ("payment.succeeded", payment)])
        ])
        stop = asyncio.Event()
        task = asyncio.create_task(syncline.run_workers(stop))
        try:
            assert await syncline.wait_idle(20), f"backlog left: {syncline.backlog()}"
        finally:
            stop.set()
            await task
    finally:
        syncline.close()
    posted = [o.JournalEntry.model_validate(payload) for operation, _, payload in erp.calls
              if operation == "post_journal_entry"]
    assert sorted(entry.source_documents[0] for entry in posted) == ["in_rt", "py_rt"]
    for entry in posted:
        debits = sum(line.debit.amount for line in entry.lines if line.debit)
        credits = sum(line.credit.amount for line in entry.lines if line.credit)
        assert debits == credits > 0
