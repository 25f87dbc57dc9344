"""End to end against the NetSuite sandbox: periods sync and rates load via the CLI, posting into
the outbox, delivery by the real connector, and a replay that creates no second journal entry."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select, update
from typer.testing import CliRunner

from syncline.canonical import objects as o
from syncline.cli import app
from syncline.config import load_config
from syncline.connectors.netsuite import NetSuiteSandbox
from syncline.connectors.netsuite.sandbox import DEFAULT_ACCOUNTS
from syncline.ledger import LedgerStore
from syncline.ledger.tables import ledger_periods
from syncline.pipeline.delivery import DeliveryWorker
from syncline.runtime import Syncline
from syncline.sandbox import ServerThread
from syncline.store import deliveries

from . import _build as b
from .test_store import _cloud

SECRETS = {"consumer_key": "ck_l", "consumer_secret": "cs_l", "token_id": "tk_l", "token_secret": "ts_l"}
#: GL accounts of the sandbox account: its defaults plus the ledger's affiliate and product-line accounts.
ACCOUNTS = {**DEFAULT_ACCOUNTS, "80": "1900 Due from affiliate", "81": "2900 Due to affiliate",
            "82": "4010 API revenue", "83": "2310 VAT payable"}


@pytest.fixture
def sandbox() -> Iterator[tuple[NetSuiteSandbox, str]]:
    sandbox = NetSuiteSandbox(account_id="TSTDRV9", credentials=SECRETS, closed_periods={"2026-10"},
                              calendar_years=(2026, 2027), accounts=ACCOUNTS)
    with ServerThread(sandbox.app) as server:
        yield sandbox, server.url


@pytest.fixture
def project(tmp_path: Path, store_url: str, sandbox: tuple[NetSuiteSandbox, str],
            monkeypatch: pytest.MonkeyPatch) -> Path:
    for key, value in SECRETS.items():
        monkeypatch.setenv(f"NS_{key.upper()}", value)
    ledger = b.raw_config()
    ledger["erp"] = {"connection": "netsuite", "mode": "detailed"}
    config: dict[str, Any] = {
        "store": store_url,
        "connections": {"netsuite": {
            "vendor": "netsuite", "base_url": sandbox[1],
            "secrets": {key: f"${{env:NS_{key.upper()}}}" for key in SECRETS},
            "options": {
                "account_id": "TSTDRV9", "subsidiaries": {"us": "1", "eu": "2"}, "currencies": {"USD": "1", "EUR": "4"},
                "accounts": {"1000": "1", "1150": "2", "1200": "6", "4000": "54", "2400": "58", "2300": "67",
                             "6100": "71", "1900": "80", "2900": "81", "4010": "82", "2310": "83"},
            },
        }},
        "ledger": ledger,
    }
    path = tmp_path / "syncline.yaml"
    path.write_text(yaml.safe_dump(config))
    (tmp_path / "rates.csv").write_text("date,base,quote,rate\n2026-11-01,EUR,USD,1.0850\n")
    return path


async def _deliver_all(syncline: Syncline) -> None:
    worker = DeliveryWorker(syncline.engine, syncline.connectors["netsuite"], limits=syncline.limits["netsuite"],
                            budget=syncline.budgets["netsuite"], breaker=syncline.breakers["netsuite"],
                            policy=syncline.policy, poll_seconds=0.02)
    stop = asyncio.Event()
    runner = asyncio.create_task(worker.run(stop))
    try:
        assert await syncline.wait_idle(30, settle=0.1)
    finally:
        stop.set()
        await runner


@pytest.mark.anyio
async def test_ledger_posts_to_netsuite_once_in_the_right_period(
    project: Path, sandbox: tuple[NetSuiteSandbox, str],
) -> None:
    netsuite, _ = sandbox
    runner = CliRunner()
    # The CLI runs its own event loop: call it from a thread, as a shell would from another process.
    synced = await asyncio.to_thread(runner.invoke, app, ["ledger", "periods", "sync", "netsuite", "-c", str(project)])
    assert synced.exit_code == 0, synced.output
    rates = ["ledger", "rates", "load", str(project.parent / "rates.csv"), "-c", str(project)]
    loaded = await asyncio.to_thread(runner.invoke, app, rates)
    assert loaded.exit_code == 0 and "loaded 1 rates" in loaded.output

    syncline = Syncline(load_config(project))
    try:
        with syncline.engine.connect() as conn:
            october = conn.execute(select(ledger_periods).where(
                ledger_periods.c.entity == "us", ledger_periods.c.name == "Oct 2026")).one()
            november = conn.execute(select(ledger_periods).where(
                ledger_periods.c.entity == "us", ledger_periods.c.name == "Nov 2026")).one()
        assert october.status == "closed" and november.status == "open" and october.origin == "netsuite"

        assert syncline.config.ledger is not None
        store = LedgerStore(syncline.engine, syncline.config.ledger)
        late = b.invoice("in_oct", "USD", [b.line("l_oct", 45_000, "USD", product="prod_api")],
                         issued=date(2026, 10, 30), account="acct_us")
        german = b.invoice("in_de", "EUR", [b.line("l_de", 50_000, "EUR", tax=9_500, tax_code="DE_VAT",
                                                   jurisdiction="DE")], issued=date(2026, 11, 3))
        paid = b.payment("py_de", "in_de", 59_500, "EUR", paid=date(2026, 11, 6))
        events = [_cloud("invoice.issued", late), _cloud("invoice.issued", german), _cloud("payment.succeeded", paid)]
        with syncline.engine.begin() as conn:
            stats = store.post_events(conn, events)
        assert stats.deliveries == 4
        await _deliver_all(syncline)

        with syncline.engine.connect() as conn:
            rows = conn.execute(select(deliveries.c.state, deliveries.c.payload)).all()
        assert {row.state for row in rows} == {"done"}
        entries = [o.JournalEntry.model_validate_json(row.payload) for row in rows]
        for entry in entries:
            [record] = netsuite.records_with_external_id("journalEntry", entry.id)
            assert record["fields"]["subsidiary"] == {"id": "1" if entry.legal_entity_id == "us" else "2"}
        moved = next(e for e in entries if e.source_documents == ["in_oct"])
        record = netsuite.find("journalEntry", moved.id)
        assert record is not None
        fields = record["fields"]
        assert fields["postingPeriod"] == {"id": november.id} and fields["tranDate"] == "2026-11-01"
        converted = next(e for e in entries if e.legal_entity_id == "us" and e.currency == "EUR")
        stored = netsuite.find("journalEntry", converted.id)
        assert stored is not None and stored["fields"]["exchangeRate"] == Decimal("1.0850")

        # A replayed batch posts nothing new; a re-sent delivery updates the same NetSuite record.
        with syncline.engine.begin() as conn:
            assert store.post_events(conn, events).deliveries == 0
            conn.execute(update(deliveries).values(state="pending", next_attempt_at=0))
        await _deliver_all(syncline)
        assert len(netsuite.records("journalEntry")) == 4
    finally:
        syncline.close()

    # The calendar check: in step after the sync, then finance closes November in NetSuite.
    check = ["ledger", "periods", "check", "netsuite", "--entity", "us", "-c", str(project)]
    matches = await asyncio.to_thread(runner.invoke, app, check)
    assert matches.exit_code == 0 and "calendar matches netsuite" in matches.output
    netsuite.closed_periods.add("2026-11")
    drifted = await asyncio.to_thread(runner.invoke, app, check)
    assert drifted.exit_code == 1
    assert drifted.output.strip().splitlines() == [
        f"us Nov 2026 ({november.id}): Syncline 2026-11-01..2026-11-30 open, ERP 2026-11-01..2026-11-30 closed"
    ]
