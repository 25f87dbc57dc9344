"""The pipeline end to end on the fake connector: inbox, normalize, route, deliver, park, replay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import orjson
import pytest
from sqlalchemy import Engine, func, select, update

from syncline.canonical import canonical_id
from syncline.errors import AuthConfigError, BusinessRuleError, DataQualityError, RateLimitedError, TransientError
from syncline.pipeline import operations
from syncline.pipeline.delivery import claim
from syncline.pipeline.inbox import Received, write_inbox
from syncline.pipeline.normalize import normalize_batch
from syncline.runtime import Syncline
from syncline.store import deliveries, exceptions, inbox, timeline, xref
from syncline.testing import FakeVendor
from tests._fake import account_event, invoice_event, payment_event
from tests._fake import make_syncline as _make_syncline

_open: list[Syncline] = []


@pytest.fixture(autouse=True)
def _close_instances() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def make_syncline(store_url: str, vendor: FakeVendor) -> Syncline:
    syncline = _make_syncline(store_url, vendor)
    _open.append(syncline)
    return syncline


def ingest(syncline: Syncline, *bodies: bytes) -> set[tuple[str, str]]:
    items = [Received("src", orjson.loads(body)["id"], orjson.loads(body)["type"], body) for body in bodies]
    return write_inbox(syncline.engine, items)


async def run_until_idle(syncline: Syncline, timeout: float = 20.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(syncline.run_workers(stop))
    try:
        assert await syncline.wait_idle(timeout), f"backlog left: {syncline.backlog()}"
    finally:
        stop.set()
        await task


def count(syncline: Syncline, table, *where) -> int:  # type: ignore[no-untyped-def]
    with syncline.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def test_inbox_keeps_one_row_per_vendor_event(store_url: str) -> None:
    syncline = make_syncline(store_url, FakeVendor("dedupe"))
    body = account_event("evt_1", "account_a")
    assert ingest(syncline, body, body) == {("src", "evt_1")}
    assert ingest(syncline, body) == set()
    assert count(syncline, inbox) == 1
    with syncline.engine.connect() as conn:
        assert conn.execute(select(inbox.c.body)).scalar_one() == body


def test_normalize_routes_ignores_and_parks_in_one_batch(store_url: str) -> None:
    syncline = make_syncline(store_url, FakeVendor("normalize"))
    ingest(syncline, account_event("e1", "account_a"), invoice_event("e2", "invoice_1", "account_a"))
    unknown = orjson.dumps({"id": "e3", "type": "plan.created", "data": {}})
    broken = orjson.dumps({"id": "e4", "type": "invoice.paid", "data": {"id": "invoice_x"}})
    zero_payment = payment_event("e5", "payment_0", "invoice_1", "account_a", amount=0)
    ingest(syncline, unknown, broken, zero_payment)

    stats = normalize_batch(syncline.engine, syncline.connectors, syncline.router)

    assert (stats.claimed, stats.deliveries, stats.ignored, stats.parked) == (5, 2, 1, 1)
    assert count(syncline, inbox, inbox.c.state == "received") == 0
    assert count(syncline, inbox, inbox.c.state == "ignored") == 1
    with syncline.engine.connect() as conn:
        reason = conn.execute(select(exceptions.c.reason).where(exceptions.c.source == "inbox")).scalar_one()
        rows = conn.execute(select(deliveries.c.operation, deliveries.c.after_key).order_by(deliveries.c.id)).all()
        refs = conn.execute(select(func.count()).select_from(xref)).scalar_one()
    assert "invoice.paid data invalid" in reason
    # The zero-amount payment fails the route condition: no delivery, but the event is recorded.
    assert [row.operation for row in rows] == ["upsert_account", "upsert_invoice"]
    assert rows[1].after_key == "erp:account_a"
    assert refs == 3
    assert normalize_batch(syncline.engine, syncline.connectors, syncline.router).claimed == 0


def test_stale_and_fresh_snapshots_in_one_batch(store_url: str) -> None:
    syncline = make_syncline(store_url, FakeVendor("stale-batch"))
    ingest(syncline, invoice_event("paid", "invoice_1", "account_a", seq=20, status="paid", kind="invoice.paid"),
           invoice_event("issued", "invoice_1", "account_a", seq=10, status="open"),
           invoice_event("other", "invoice_2", "account_a", seq=10, status="open"))
    stats = normalize_batch(syncline.engine, syncline.connectors, syncline.router)
    assert (stats.stale, stats.deliveries) == (1, 2)


def test_older_snapshot_arriving_late_is_skipped(store_url: str) -> None:
    syncline = make_syncline(store_url, FakeVendor("stale"))
    ingest(syncline, invoice_event("paid", "invoice_1", "account_a", seq=20, status="paid", kind="invoice.paid"))
    normalize_batch(syncline.engine, syncline.connectors, syncline.router)
    ingest(syncline, invoice_event("issued", "invoice_1", "account_a", seq=10, status="open"))
    stats = normalize_batch(syncline.engine, syncline.connectors, syncline.router)
    assert stats.stale == 1
    with syncline.engine.connect() as conn:
        states = dict(conn.execute(select(deliveries.c.event_type, deliveries.c.state)).all())
    assert states == {"invoice.paid": "pending", "invoice.issued": "skipped"}


@pytest.mark.anyio
async def test_everything_is_delivered_once_in_order_per_key(store_url: str) -> None:
    vendor = FakeVendor("order", latency=0.005, seed=7)
    syncline = make_syncline(store_url, vendor)
    bodies = [account_event(f"a{n}", f"account_{n}") for n in range(20)]
    for step in range(3):
        bodies += [invoice_event(f"i{n}-{step}", f"invoice_{n}", f"account_{n % 20}", seq=step + 1,
                                 total=1000 + step) for n in range(40)]
    ingest(syncline, *bodies)

    await run_until_idle(syncline)

    assert len(vendor.writes) == 60
    for n in range(40):
        seen = [p["total"]["amount"] for op, rid, p in vendor.calls if rid == f"invoice_{n}"]
        assert seen == [1000, 1001, 1002], f"invoice_{n} went out of order: {seen}"
        customer_at = next(i for i, c in enumerate(vendor.calls) if c[1] == f"account_{n % 20}")
        first_invoice_at = next(i for i, c in enumerate(vendor.calls) if c[1] == f"invoice_{n}")
        assert customer_at < first_invoice_at
    assert vendor.peak <= 4
    assert vendor.peak > 1, "unrelated records should go in parallel"
    assert count(syncline, deliveries, deliveries.c.state == "done") == 140


@pytest.mark.anyio
async def test_errors_decide_retry_park_or_pause(store_url: str) -> None:
    vendor = FakeVendor("errors")
    syncline = make_syncline(store_url, vendor)
    vendor.fail_next("invoice_retry", TransientError("502"), RateLimitedError("slow down", retry_after=0.05))
    vendor.fail_next("invoice_rule", BusinessRuleError("period closed"))
    vendor.fail_next("invoice_data", DataQualityError("tax id missing"))
    vendor.fail_next("invoice_flaky", *[TransientError("503")] * 10)
    ingest(syncline, account_event("a", "account_a"),
           *[invoice_event(f"e-{name}", f"invoice_{name}", "account_a") for name in
             ("retry", "rule", "data", "flaky")])

    await run_until_idle(syncline)

    with syncline.engine.connect() as conn:
        states = dict(conn.execute(select(deliveries.c.canonical_id, deliveries.c.state)).all())
        problems = {row.code: row.reason for row in conn.execute(select(exceptions))}
        stages = [row.stage for row in conn.execute(
            select(timeline.c.stage).where(timeline.c.canonical_id == "invoice_retry").order_by(timeline.c.id))]
    assert states["invoice_retry"] == "done"
    assert stages == ["normalized", "retry_scheduled", "retry_scheduled", "delivered"]
    assert states["invoice_rule"] == states["invoice_data"] == states["invoice_flaky"] == "parked"
    assert problems["business_rule"].endswith("period closed")
    assert "gave up after 4 attempts" in problems["transient"]
    assert vendor.writes[("upsert_invoice", "invoice_retry")] == 1

    # An operator fixes things and retries the parked rows by filter: same budget, delivered.
    assert operations.retry_parked(syncline.engine, operations.Filter(error_class="data_quality")) == 1
    assert operations.retry_parked(syncline.engine) == 2
    vendor.failures.clear()
    await run_until_idle(syncline)
    assert count(syncline, deliveries, deliveries.c.state == "done") == 5
    assert count(syncline, exceptions, exceptions.c.resolved_at.is_(None)) == 0


@pytest.mark.anyio
async def test_auth_failure_pauses_the_connection_without_spending_attempts(store_url: str) -> None:
    vendor = FakeVendor("auth")
    syncline = make_syncline(store_url, vendor)
    vendor.fail_next("account_a", AuthConfigError("401 invalid login"))
    ingest(syncline, account_event("a", "account_a"))

    stop = asyncio.Event()
    task = asyncio.create_task(syncline.run_workers(stop))
    for _ in range(100):
        if operations.status(syncline.engine)["paused"]:
            break
        await asyncio.sleep(0.05)
    assert operations.status(syncline.engine)["paused"] == {"erp": "auth_config: 401 invalid login"}
    await asyncio.sleep(0.3)
    assert vendor.writes == {}
    with syncline.engine.connect() as conn:
        row = conn.execute(select(deliveries.c.state, deliveries.c.attempts)).one()
    assert tuple(row) == ("pending", 0)

    operations.resume(syncline.engine, "erp")
    assert await syncline.wait_idle(10)
    stop.set()
    await task
    assert vendor.writes == {("upsert_account", "account_a"): 1}


@pytest.mark.anyio
async def test_replay_redelivers_with_the_same_idempotency_key(store_url: str) -> None:
    vendor = FakeVendor("replay")
    syncline = make_syncline(store_url, vendor)
    ingest(syncline, account_event("a", "account_a"), invoice_event("i", "invoice_1", "account_a"))
    await run_until_idle(syncline)
    with syncline.engine.connect() as conn:
        before = dict(conn.execute(select(deliveries.c.id, deliveries.c.idempotency_key)).all())

    assert operations.replay(syncline.engine, operations.Filter(correlation_id="invoice_1")) == 1
    await run_until_idle(syncline)

    with syncline.engine.connect() as conn:
        after = dict(conn.execute(select(deliveries.c.id, deliveries.c.idempotency_key)).all())
    assert before == after
    assert vendor.writes[("upsert_invoice", "invoice_1")] == 2
    assert vendor.writes[("upsert_account", "account_a")] == 1


@pytest.mark.anyio
async def test_paused_connection_holds_rows_until_resumed(store_url: str) -> None:
    vendor = FakeVendor("pause")
    syncline = make_syncline(store_url, vendor)
    operations.pause(syncline.engine, "erp", "ERP maintenance window")
    ingest(syncline, account_event("a", "account_a"))
    stop = asyncio.Event()
    task = asyncio.create_task(syncline.run_workers(stop))
    await asyncio.sleep(0.5)
    assert vendor.writes == {}
    assert syncline.backlog() == {"inbox": 0, "outbox": 1}
    operations.resume(syncline.engine, "erp")
    assert await syncline.wait_idle(10)
    stop.set()
    await task
    assert vendor.writes == {("upsert_account", "account_a"): 1}


@pytest.mark.anyio
async def test_batchable_operations_go_in_batches_of_the_declared_size(store_url: str) -> None:
    from syncline.config import DeliverAction, RouteConfig
    from syncline.pipeline.routing import Router

    vendor = FakeVendor("batches")
    syncline = make_syncline(store_url, vendor)
    syncline.config.routes[0] = RouteConfig(event="account.*",
                                            deliver=DeliverAction(connection="erp", operation="batch_upsert_account"))
    syncline.router = Router(syncline.config.routes, syncline.connectors)
    from dataclasses import replace
    syncline.limits["erp"] = replace(syncline.limits["erp"], batch_size=10)
    vendor.fail_next("account_7", DataQualityError("bad vat number"))
    ingest(syncline, *[account_event(f"a{n}", f"account_{n}") for n in range(35)])

    await run_until_idle(syncline)

    assert sum(vendor.batches) == 35
    assert max(vendor.batches) == 10 and len(vendor.batches) >= 4
    assert len(vendor.writes) == 34
    with syncline.engine.connect() as conn:
        parked = conn.execute(select(deliveries.c.canonical_id).where(deliveries.c.state == "parked")).scalars().all()
    assert parked == ["account_7"]  # one bad record in a batch parks alone


def test_a_row_waits_for_its_dependency_even_when_the_dependency_was_queued_later(engine: Engine) -> None:
    # Webhooks arrive out of order: the invoice's row is older than its customer's.
    now = time.time()

    def row(key: str, after: str | None) -> dict[str, object]:
        return {"connection": "erp", "operation": "upsert", "ordering_key": key, "after_key": after,
                "dedupe_key": key, "idempotency_key": key, "canonical_id": key, "event_type": "x.y",
                "correlation_id": "c", "payload": "{}", "state": "pending", "attempts": 0,
                "next_attempt_at": now, "created_at": now, "updated_at": now}

    with engine.begin() as conn:
        conn.execute(deliveries.insert(), [row("erp:invoice_1", "erp:account_1"), row("erp:account_1", None)])
    first = claim(engine, "erp", "w", 10, 30.0)
    assert [r.canonical_id for r in first] == ["erp:account_1"]
    with engine.begin() as conn:
        conn.execute(update(deliveries).where(deliveries.c.canonical_id == "erp:account_1").values(state="done"))
    assert [r.canonical_id for r in claim(engine, "erp", "w", 10, 30.0)] == ["erp:invoice_1"]


def test_a_decoder_crash_parks_its_row_and_the_batch_goes_on(store_url: str) -> None:
    syncline = make_syncline(store_url, FakeVendor("decoder-bug"))
    ingest(syncline, account_event("e1", "account_a"))
    # Valid JSON the fake decoder does not expect: it raises AttributeError, not a SynclineError.
    write_inbox(syncline.engine, [Received("src", "e2", "account.created", b"[1, 2]")])

    stats = normalize_batch(syncline.engine, syncline.connectors, syncline.router)

    assert (stats.claimed, stats.deliveries, stats.parked) == (2, 1, 1)
    with syncline.engine.connect() as conn:
        code, reason = conn.execute(select(exceptions.c.code, exceptions.c.reason)).one()
    assert code == "decoder_failed"
    assert "AttributeError" in reason


@pytest.mark.anyio
async def test_ids_a_target_echoes_back_resolve_to_the_identity_syncline_delivered(store_url: str) -> None:
    vendor = FakeVendor("echo")
    syncline = make_syncline(store_url, vendor)
    ingest(syncline, account_event("a1", "account_1"))
    await run_until_idle(syncline)
    # The ERP named the customer fake-account_1; its own webhook about an invoice says so.
    echoed = canonical_id("erp", "account", "fake-account_1")
    write_inbox(syncline.engine, [
        Received("erp", "e1", "invoice.issued", invoice_event("e1", "invoice_9", echoed)),
        Received("erp", "e2", "account.updated", account_event("e2", echoed)),
    ])

    normalize_batch(syncline.engine, syncline.connectors, syncline.router)

    with syncline.engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.operation, deliveries.c.canonical_id, deliveries.c.after_key,
                                   deliveries.c.payload).where(deliveries.c.state == "pending")
                            .order_by(deliveries.c.id)).all()
    assert [(r.operation, r.canonical_id, r.after_key) for r in rows] == [
        ("upsert_invoice", "invoice_9", "erp:account_1"),
        ("upsert_account", "account_1", None),
    ]
    assert orjson.loads(rows[0].payload)["account_id"] == "account_1"
    # A record never delivered anywhere keeps the id it decoded to.
    assert orjson.loads(rows[0].payload)["id"] == "invoice_9"
