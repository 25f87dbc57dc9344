"""Onboarding on fake vendors: happy path, validation task, ERP rejection, billing timeout, cutover."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from syncline.errors import BusinessRuleError, TransientError
from syncline.flows import complete_task, derived_id
from syncline.runtime import Syncline
from syncline.store import deliveries, timeline
from tests.flows._harness import (
    Vendors,
    account,
    event,
    ingest,
    instances,
    make_syncline,
    opportunity,
    run_until,
    settled,
    state_of,
    tasks,
)

MISSING_TAX_ID = "tax id is missing (us-inc needs one) and the account is not tax exempt"
_open: list[Syncline] = []


@pytest.fixture(autouse=True)
def _close() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def build(store_url: str, vendors: Vendors, **settings: Any) -> Syncline:
    syncline = make_syncline(store_url, vendors, **settings)
    _open.append(syncline)
    return syncline


def ops(vendor: object) -> list[tuple[str, str]]:
    return [(operation, record) for operation, record, _payload in vendor.calls]  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_closed_won_becomes_an_active_customer_everywhere(store_url: str) -> None:
    vendors = Vendors()
    syncline = build(store_url, vendors)
    ingest(syncline, event("account.created", account("account_1")),
           event("opportunity.closed_won", opportunity("opp_1", "account_1"), correlation_id="deal-1"))

    await run_until(syncline, settled(syncline, "onboarding:opp_1"))

    row = instances(syncline)["onboarding:opp_1"]
    assert row.state == "completed", row.error
    subscription = derived_id("subscription", "opp_1")
    order = derived_id("sales_order", "opp_1")
    price = derived_id("price", "opp_1", "opp_1-l0")
    assert ops(vendors.billing)[0] == ("upsert_customer", "account_1") or ("upsert_customer", "account_1") in ops(
        vendors.billing)
    assert ops(vendors.billing)[-1] == ("upsert_subscription", subscription)
    assert ("upsert_price", price) in ops(vendors.billing)
    assert ops(vendors.erp) == [("upsert_customer", "account_1"), ("upsert_sales_order", order)]
    assert ops(vendors.erp_legacy) == []
    assert ops(vendors.support) == [("upsert_organization", "account_1"),
                                    ("set_entitlement", derived_id("entitlement", "account_1"))]
    # Every record written exactly once.
    for vendor in vendors.all().values():
        assert all(count == 1 for count in vendor.writes.values())
    status = vendors.crm.calls[-1][2]["sync_status"]
    assert status.startswith("active: billing fake-account_1 / fake-" + subscription)
    assert f"ERP fake-account_1 / fake-{order}" in status
    erp_customer = vendors.erp.calls[0][2]
    assert (erp_customer["legal_entity_id"], erp_customer["currency"]) == ("us-inc", "USD")
    with syncline.engine.connect() as conn:
        correlations = set(conn.execute(select(deliveries.c.correlation_id)).scalars())
        stages = [row.stage for row in conn.execute(
            select(timeline.c.stage).where(timeline.c.correlation_id == "deal-1").order_by(timeline.c.id))]
    # The deal's correlation id is carried by every delivery the flow issued.
    assert correlations == {"deal-1"}
    assert stages[0] == "normalized" and "flow_started" in stages and stages[-1] in ("flow_completed", "delivered")
    assert stages.count("delivered") == 9


@pytest.mark.anyio
async def test_invalid_account_opens_a_task_and_the_decision_resumes_the_flow(store_url: str) -> None:
    vendors = Vendors()
    syncline = build(store_url, vendors)
    ingest(syncline, event("account.created", account("account_2", tax_ids=())),
           event("opportunity.closed_won", opportunity("opp_2", "account_2")))

    await run_until(syncline, settled(syncline, "onboarding:opp_2"))

    assert state_of(syncline, "onboarding:opp_2") == "waiting_for_task"
    [task] = tasks(syncline, instance_id="onboarding:opp_2")
    assert task.kind == "fix_account_data" and task.state == "open"
    assert orjson.loads(task.data)["problems"] == [MISSING_TAX_ID]
    assert all(not vendor.calls for vendor in vendors.all().values())

    # Someone fixes the account in the CRM, then tells the flow to try again.
    ingest(syncline, event("account.updated", account("account_2", tax_ids=("US-2",)), event_id="fix"))
    await run_until(syncline, lambda: bool(instances(syncline)) and _fact_updated(syncline))
    decided = complete_task(syncline.engine, task.id, "retry", "alice", reason="tax id added in the CRM")
    assert (decided.state, decided.completed_by, decided.outcome) == ("completed", "alice", "retry")

    await run_until(syncline, settled(syncline, "onboarding:opp_2"))
    assert state_of(syncline, "onboarding:opp_2") == "completed"
    assert vendors.billing.calls[0][2]["tax_ids"] == ["US-2"]


def _fact_updated(syncline: Syncline) -> bool:
    from syncline.flows._tables import flow_facts

    with syncline.engine.connect() as conn:
        return conn.execute(select(flow_facts.c.tax_id).where(flow_facts.c.canonical_id == "account_2")).scalar() \
            == "US2"


@pytest.mark.anyio
@pytest.mark.parametrize(("policy", "status"), [("cancel", "canceled"), ("hold", "paused")])
async def test_erp_rejection_undoes_billing_and_tells_the_crm_why(store_url: str, policy: str, status: str) -> None:
    vendors = Vendors()
    syncline = build(store_url, vendors, on_erp_rejection=policy)
    vendors.erp.fail_next("account_3", BusinessRuleError("subsidiary US Inc does not sell in EUR"))
    ingest(syncline, event("account.created", account("account_3")),
           event("opportunity.closed_won", opportunity("opp_3", "account_3")))

    await run_until(syncline, settled(syncline, "onboarding:opp_3"))

    row = instances(syncline)["onboarding:opp_3"]
    assert row.state == "compensated"
    subscription = derived_id("subscription", "opp_3")
    writes = [(op, rid, payload.get("status")) for op, rid, payload in vendors.billing.calls
              if op == "upsert_subscription"]
    assert writes == [("upsert_subscription", subscription, "active"), ("upsert_subscription", subscription, status)]
    assert vendors.erp.calls == [] and vendors.support.calls == []
    crm_status = vendors.crm.calls[-1][2]["sync_status"]
    assert "ERP rejected the order" in crm_status and "subsidiary US Inc does not sell in EUR" in crm_status
    assert ("subscription cancelled" if policy == "cancel" else "subscription on hold") in crm_status


@pytest.mark.anyio
async def test_billing_silence_escalates_and_a_late_confirmation_closes_the_task(store_url: str) -> None:
    vendors = Vendors()
    syncline = build(store_url, vendors, billing_confirm_seconds=0.3,
                     retry={"base_seconds": 0.25, "cap_seconds": 0.25, "max_attempts": 20})
    subscription = derived_id("subscription", "opp_4")
    # Billing keeps failing transiently for a while: the delivery is retried, the timer fires first.
    vendors.billing.fail_next(subscription, *[TransientError("503 from billing")] * 5)
    ingest(syncline, event("account.created", account("account_4")),
           event("opportunity.closed_won", opportunity("opp_4", "account_4")))

    await run_until(syncline, lambda: bool(tasks(syncline, kind="billing_not_confirmed")), quiet=False)
    [task] = tasks(syncline, kind="billing_not_confirmed")
    assert (task.owner_role, task.state) == ("admin", "open")
    assert vendors.support.calls == [], "support must wait for billing to confirm"

    await run_until(syncline, lambda: state_of(syncline, "onboarding:opp_4") == "completed")
    [task] = tasks(syncline, kind="billing_not_confirmed")
    assert task.state == "cancelled" and task.reason == "billing confirmed"


@pytest.mark.anyio
async def test_escalated_billing_task_abandoned_compensates(store_url: str) -> None:
    vendors = Vendors()
    syncline = build(store_url, vendors, billing_confirm_seconds=0.2,
                     retry={"base_seconds": 0.05, "cap_seconds": 0.05, "max_attempts": 100})
    subscription = derived_id("subscription", "opp_5")
    vendors.billing.fail_next(subscription, *[TransientError("503 from billing")] * 1000)
    ingest(syncline, event("account.created", account("account_5")),
           event("opportunity.closed_won", opportunity("opp_5", "account_5")))
    # Under load the customer step can also outrun the 0.2 s allowance; its escalation task is
    # cancelled once the customer goes through. The one to decide is the failing subscription's.
    def subscription_task() -> list[Any]:
        return [task for task in tasks(syncline, kind="billing_not_confirmed", state="open")
                if orjson.loads(task.data).get("waiting_since_step") == "billing_confirmed"]

    await run_until(syncline, lambda: bool(subscription_task()), quiet=False)
    [task] = subscription_task()
    complete_task(syncline.engine, task.id, "abandon", "bob", reason="customer asked to stop")
    vendors.billing.failures.clear()

    await run_until(syncline, settled(syncline, "onboarding:opp_5"))
    assert state_of(syncline, "onboarding:opp_5") == "compensated"
    assert "abandoned by bob" in vendors.crm.calls[-1][2]["sync_status"]
    assert vendors.erp.calls == []


@pytest.mark.anyio
async def test_legal_entity_routes_the_erp_side_to_the_legacy_connection(store_url: str) -> None:
    vendors = Vendors()
    syncline = build(store_url, vendors)
    ingest(syncline, event("account.created", account("account_6", country="DE", currency="EUR", tax_ids=("DE1",))),
           event("opportunity.closed_won", opportunity("opp_6", "account_6", currency="EUR")))

    await run_until(syncline, settled(syncline, "onboarding:opp_6"))

    assert state_of(syncline, "onboarding:opp_6") == "completed"
    assert vendors.erp.calls == []
    assert [op for op, _rid, _payload in vendors.erp_legacy.calls] == ["upsert_customer", "upsert_sales_order"]
    assert vendors.erp_legacy.calls[1][2]["memo"] == "payment terms net14"
    assert vendors.erp_legacy.calls[0][2]["legal_entity_id"] == "de-gmbh"


@pytest.mark.anyio
async def test_unmapped_country_asks_for_the_legal_entity(store_url: str) -> None:
    vendors = Vendors()
    syncline = build(store_url, vendors)
    ingest(syncline, event("account.created", account("account_7", country="JP", currency=None, tax_ids=("JP7",))),
           event("opportunity.closed_won", opportunity("opp_7", "account_7")))
    await run_until(syncline, settled(syncline, "onboarding:opp_7"))
    [task] = tasks(syncline, instance_id="onboarding:opp_7")
    assert task.kind == "pick_legal_entity"
    assert orjson.loads(task.outcomes) == ["us-inc", "de-gmbh", "abandon"]

    complete_task(syncline.engine, task.id, "de-gmbh", "carol", reason="sold by the German team")
    await run_until(syncline, settled(syncline, "onboarding:opp_7"))
    assert state_of(syncline, "onboarding:opp_7") == "completed"
    assert vendors.erp_legacy.calls[0][2]["legal_entity_id"] == "de-gmbh"


@pytest.mark.anyio
async def test_duplicates_same_tax_id_merges_same_name_asks(store_url: str) -> None:
    vendors = Vendors()
    syncline = build(store_url, vendors)
    ingest(syncline,
           event("account.created", account("account_old", name="Globex GmbH", tax_ids=("DE 123",))),
           event("account.created", account("account_new", name="Globex", tax_ids=("de123",))),
           event("account.created", account("account_twin", name="Globex", tax_ids=("DE999",))),
           event("opportunity.closed_won", opportunity("opp_8", "account_new")))
    await run_until(syncline, settled(syncline, "onboarding:opp_8"))
    assert state_of(syncline, "onboarding:opp_8") == "completed"
    # Same tax id: onboarded onto the existing customer, no second customer anywhere.
    assert [rid for op, rid, _p in vendors.billing.calls if op == "upsert_customer"] == ["account_old"]

    ingest(syncline, event("opportunity.closed_won", opportunity("opp_9", "account_twin")))
    await run_until(syncline, settled(syncline, "onboarding:opp_9"))
    [task] = tasks(syncline, instance_id="onboarding:opp_9")
    assert task.kind == "confirm_duplicate"
    complete_task(syncline.engine, task.id, "different_customer", "dave", reason="different VAT number")
    await run_until(syncline, settled(syncline, "onboarding:opp_9"))
    assert state_of(syncline, "onboarding:opp_9") == "completed"
    assert [rid for op, rid, _p in vendors.billing.calls if op == "upsert_customer"] == ["account_old", "account_twin"]
