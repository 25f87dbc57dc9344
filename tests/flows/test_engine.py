"""The engine's contract: versions, durable timers, signal order, step failures; dunning and amendments."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
from sqlalchemy import Engine, func, select

from syncline.canonical.events import CloudEvent, make_event
from syncline.canonical.objects import Account, SourceRef
from syncline.flows import (
    Flow,
    FlowEngine,
    FlowRegistry,
    FlowsSettings,
    StepContext,
    Transition,
    complete_task,
    derived_id,
    list_tasks,
)
from syncline.flows._tables import flow_instances
from syncline.runtime import Syncline
from syncline.store import deliveries
from tests.flows._harness import (
    Vendors,
    account,
    event,
    ingest,
    instances,
    make_syncline,
    opportunity,
    run_until,
    state_of,
    tasks,
)

_open: list[Syncline] = []


@pytest.fixture(autouse=True)
def _close() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def _greeter(version: int) -> Flow:
    flow = Flow("greeter", version=version)
    flow.starts_on("account.created", key=lambda event, _settings: event.subject)

    @flow.step("hello", initial=True)
    def hello(ctx: StepContext) -> Transition:
        ctx.data["said"] = [f"hello v{version}"]
        return ctx.wait(next="bye", timeout=3600)

    @flow.step("bye")
    def bye(ctx: StepContext) -> Transition:
        ctx.data["said"].append(f"bye v{version} after {ctx.resume.kind}")
        return ctx.finish("completed")

    return flow


def _account_event(account_id: str) -> CloudEvent:
    data = Account(id=account_id, source=SourceRef(system="crm", object_type="account", external_id=account_id))
    return make_event("account.created", data, connection="crm", vendor_event_id=f"e-{account_id}",
                      time=datetime.now(UTC))


def test_instances_finish_on_their_version_and_timers_survive_a_restart(engine: Engine) -> None:
    v1 = FlowEngine(engine, FlowRegistry([_greeter(1)]))
    v1.emit([_account_event("account_a")])
    v1.tick()
    # "Deploy" v2: a new engine (as after a restart) knows both versions.
    v2 = FlowEngine(engine, FlowRegistry([_greeter(1), _greeter(2)]))
    v2.emit([_account_event("account_b")])
    v2.tick()
    with engine.connect() as conn:
        rows = {row.id: row for row in conn.execute(select(flow_instances))}
    assert (rows["greeter:account_a"].version, rows["greeter:account_b"].version) == (1, 2)
    assert rows["greeter:account_a"].state == "waiting" and rows["greeter:account_a"].wake_at > time.time() + 3000
    assert v2.tick().advanced == 0, "the timer is not due yet"
    v2.tick(now=time.time() + 3601)
    with engine.connect() as conn:
        rows = {row.id: row for row in conn.execute(select(flow_instances))}
    assert orjson.loads(rows["greeter:account_a"].data)["said"] == ["hello v1", "bye v1 after timeout"]
    assert orjson.loads(rows["greeter:account_b"].data)["said"] == ["hello v2", "bye v2 after timeout"]


def test_a_failing_step_applies_nothing_and_marks_the_instance_failed(engine: Engine) -> None:
    broken = Flow("broken", version=1)
    broken.starts_on("account.created", key=lambda event, _settings: event.subject)

    @broken.step("first", initial=True)
    def first(ctx: StepContext) -> Transition:
        ctx.deliver("x", "crm", "upsert_account", {"id": "account_x"})
        return ctx.goto("second")

    @broken.step("second")
    def second(ctx: StepContext) -> Transition:
        raise KeyError("missing_field")

    flows = FlowEngine(engine, FlowRegistry([broken]), FlowsSettings())
    flows.emit([_account_event("account_x")])
    flows.tick()
    with engine.connect() as conn:
        row = conn.execute(select(flow_instances)).one()
        issued = conn.execute(select(func.count()).select_from(deliveries)).scalar_one()
    assert (row.state, row.step, row.seq) == ("failed", "first", 0)
    assert "KeyError" in row.error and issued == 0


def test_overdue_tasks_move_to_the_escalation_role_once(engine: Engine) -> None:
    approval = Flow("approval", version=1)
    approval.starts_on("account.created", key=lambda event, _settings: event.subject)

    @approval.step("ask", initial=True)
    def ask(ctx: StepContext) -> Transition:
        task = ctx.open_task("approve_credit", "Approve the credit limit", outcomes=["approve", "reject"],
                             data={"limit": 5000}, due_in=60, escalate_to="admin")
        return ctx.wait(next="decided", task=task)

    @approval.step("decided")
    def decided(ctx: StepContext) -> Transition:
        assert ctx.resume.task is not None
        return ctx.finish("completed", ctx.resume.task.outcome)

    flows = FlowEngine(engine, FlowRegistry([approval]))
    flows.emit([_account_event("account_e")])
    flows.tick()
    [task] = list_tasks(engine, kind="approve_credit")
    assert (task.owner_role, task.escalated_at) == ("operator", None)
    assert flows.tick(now=time.time() + 30).escalated == 0
    assert flows.tick(now=time.time() + 61).escalated == 1
    assert flows.tick(now=time.time() + 120).escalated == 0, "escalates once"
    [task] = list_tasks(engine, kind="approve_credit")
    assert task.owner_role == "admin" and task.escalated_at is not None
    complete_task(engine, task.id, "approve", "root", reason="long-standing customer")
    flows.tick()
    with engine.connect() as conn:
        row = conn.execute(select(flow_instances)).one()
    assert (row.state, row.error) == ("completed", "approve")


def test_registry_refuses_duplicates_and_incomplete_flows() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        FlowRegistry([_greeter(1), _greeter(1)])
    with pytest.raises(ValueError, match="no initial step"):
        FlowRegistry([Flow("empty", version=1)])


@pytest.mark.anyio
async def test_dunning_downgrades_after_grace_and_restores_on_payment(store_url: str) -> None:
    vendors = Vendors()
    syncline = make_syncline(store_url, vendors, dunning_grace_seconds=0.3)
    _open.append(syncline)
    ingest(syncline, event("account.created", account("account_d")),
           event("opportunity.closed_won", opportunity("opp_d", "account_d")))
    await run_until(syncline, lambda: state_of(syncline, "onboarding:opp_d") == "completed")
    payment = {"id": "payment_1", "source": {"system": "billing", "object_type": "charge", "external_id": "ch_1"},
               "account_id": "account_d", "invoice_id": "invoice_1", "amount": {"amount": 500, "currency": "USD"},
               "amount_refunded": {"amount": 0, "currency": "USD"}, "status": "failed",
               "paid_at": "2026-11-23T10:00:00Z", "failure_reason": "card_declined"}
    ingest(syncline, event("payment.failed", payment), connection="billing")
    entitlement = derived_id("entitlement", "account_d")
    await run_until(syncline, lambda: sum(1 for op, rid, _p in vendors.support.calls if rid == entitlement) == 2)
    # Let the downgrade's CRM status land too: the instance then waits for the payment only.
    await run_until(syncline, lambda: '"signals":["invoice.paid"' in (instances(syncline)["dunning:invoice_1"]
                                                                     .waiting_on or ""))
    levels = [p["level"] for op, rid, p in vendors.support.calls if rid == entitlement]
    assert levels == ["standard", "basic"]
    statuses = [p["sync_status"] for _op, _rid, p in vendors.crm.calls]
    assert any(status.startswith("payment failed (card_declined)") for status in statuses)

    invoice = {"id": "invoice_1", "source": {"system": "billing", "object_type": "invoice", "external_id": "in_1"},
               "account_id": "account_d", "status": "paid", "currency": "USD",
               **{k: {"amount": 500, "currency": "USD"} for k in ("subtotal", "total", "amount_paid")},
               "tax": {"amount": 0, "currency": "USD"}, "amount_due": {"amount": 0, "currency": "USD"}, "lines": []}
    ingest(syncline, event("invoice.paid", invoice), connection="billing")
    await run_until(syncline, lambda: state_of(syncline, "dunning:invoice_1") == "completed")
    levels = [p["level"] for op, rid, p in vendors.support.calls if rid == entitlement]
    assert levels == ["standard", "basic", "standard"]
    assert vendors.crm.calls[-1][2]["sync_status"] == "payment received: support restored to standard"


def _subscription(sub: str, quantity: int) -> dict[str, object]:
    return {"id": sub, "source": {"system": "crm", "object_type": "subscription", "external_id": sub},
            "account_id": "account_s", "status": "active", "currency": "USD",
            "items": [{"price_id": "price_1", "quantity": quantity}]}


@pytest.mark.anyio
async def test_amendments_apply_in_order_one_finalised_invoice_at_a_time(store_url: str) -> None:
    vendors = Vendors()
    syncline = make_syncline(store_url, vendors, billing_confirm_seconds=60)
    _open.append(syncline)
    # Three amendments arrive at once, plus a stale one (sequence 1 after 3).
    ingest(syncline, *[event("subscription.updated", _subscription("sub_s", quantity), event_id=f"amend-{quantity}",
                             sequence=quantity) for quantity in (1, 2, 3)])
    await run_until(syncline, lambda: len(vendors.billing.calls) == 1)
    await run_until(syncline, lambda: instances(syncline)["amendment:sub_s"].step == "invoice_finalised")
    assert [p["items"][0]["quantity"] for _op, _rid, p in vendors.billing.calls] == [1], \
        "the second amendment must wait for the first one's invoice"

    def finalise(n: int) -> bytes:
        invoice = {"id": f"invoice_s{n}", "source": {"system": "billing", "object_type": "invoice",
                                                     "external_id": f"in_{n}"},
                   "account_id": "account_s", "subscription_id": "sub_s", "status": "open", "currency": "USD",
                   **{k: {"amount": 100, "currency": "USD"} for k in ("subtotal", "total", "amount_due")},
                   "tax": {"amount": 0, "currency": "USD"}, "amount_paid": {"amount": 0, "currency": "USD"},
                   "lines": []}
        return event("invoice.issued", invoice)

    ingest(syncline, finalise(1), connection="billing")
    await run_until(syncline, lambda: len(vendors.billing.calls) == 2)
    ingest(syncline, finalise(2), connection="billing")
    ingest(syncline, event("subscription.updated", _subscription("sub_s", 9), event_id="stale", sequence=1))
    await run_until(syncline, lambda: len(vendors.billing.calls) == 3)
    ingest(syncline, finalise(3), connection="billing")
    await run_until(syncline, lambda: bool(_notes(syncline)))
    assert [p["items"][0]["quantity"] for _op, _rid, p in vendors.billing.calls] == [1, 2, 3]
    assert '"applied":3' in instances(syncline)["amendment:sub_s"].data.replace(" ", "")
    assert tasks(syncline) == []


def _notes(syncline: Syncline) -> list[str]:
    from syncline.store import timeline

    with syncline.engine.connect() as conn:
        return list(conn.execute(select(timeline.c.detail).where(timeline.c.stage == "flow_note",
                                                                  timeline.c.detail.like("%older than%"))).scalars())
