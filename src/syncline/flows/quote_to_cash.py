"""The quote-to-cash flows: onboarding, amendments, and payment failure (dunning).

**Onboarding** (``opportunity.closed_won`` → an active customer everywhere)::

    validate ─► enrich ─► dedupe ─► billing_customer ─► billing_subscription ─► erp_customer
       │ task     │ task     │ task        │ fail: task        │ 15 min: escalation   │ fail ─► compensate
       ▼          ▼          ▼             ▼                   ▼ task                 ▼
    erp_order ─► support_organization ─► entitlement ─► write_back ─► completed
       │ fail ─► compensate: cancel (or hold) the subscription, write the reason to the CRM ─► compensated

The legal entity (from the account's country, or picked by a person) sets the currency and
payment terms defaults and decides which ERP connection gets the customer and the order
(cutover routing). The support entitlement is only set once billing confirmed the subscription.

**Amendment** (``subscription.updated`` / ``subscription.canceled`` from a system other than
billing): one long-lived instance per subscription applies amendments one at a time, in
arrival order, skipping any older than one already applied (by event sequence), and after each
waits until billing finalised the invoice it caused before applying the next.

**Dunning** (``payment.failed``): flag the deal in the CRM, wait a grace period for the
payment, downgrade the support entitlement, restore it when the invoice is paid.
"""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, date, datetime
from typing import Any

from syncline.canonical.objects import (
    Account,
    Entitlement,
    EntitlementLevel,
    Opportunity,
    Price,
    Product,
    SalesOrder,
    SourceRef,
    Subscription,
    SubscriptionItem,
    SubscriptionStatus,
)
from syncline.flows.definition import Flow, FlowEvent, StepContext, Transition
from syncline.flows.engine import tax_key
from syncline.flows.settings import FlowsSettings, LegalEntityPolicy

_IDS = uuid.UUID("4d8f3a51-0f3e-4c41-9d5e-7a0c2b9e6f18")
#: Objects the flows create carry this source system (not a connection: see Stripe's outbound docs).
SYSTEM = "syncline"


@functools.lru_cache(maxsize=65536)
def derived_id(kind: str, *parts: str) -> str:
    """Return the deterministic canonical id of an object a flow creates (a subscription for a deal)."""
    return f"{kind}_{uuid.uuid5(_IDS, '/'.join(parts)).hex[:20]}"


def _source(kind: str, canonical_id: str) -> SourceRef:
    return SourceRef(system=SYSTEM, object_type=kind, external_id=canonical_id)


def _today(ctx: StepContext) -> date:
    return datetime.fromtimestamp(ctx.now, UTC).date()


# =============================================================================================
# Onboarding
# =============================================================================================

onboarding = Flow("onboarding", version=1, description="closed-won opportunity → active customer in every system")
onboarding.starts_on("opportunity.closed_won", key=lambda event, _settings: event.subject)
onboarding.keeps_facts("account", "opportunity")


def _opportunity(ctx: StepContext) -> dict[str, Any]:
    return dict(ctx.data["event"])


def _write_back(ctx: StepContext, status: str, name: str = "write_back") -> None:
    """Write ``status`` and the other systems' ids back to the CRM opportunity.

    The payload is the canonical Opportunity plus ``external_ids`` ``{"billing", "erp"}``, the
    shape the CRM connectors' ``write_back_status`` documents.
    """
    opportunity = Opportunity.model_validate({**_opportunity(ctx), "sync_status": status[:255]})
    payload = opportunity.model_dump(mode="json")
    ids = {"billing": ctx.data.get("billing_subscription_external_id") or ctx.data.get("billing_customer_id"),
           "erp": ctx.data.get("erp_sales_order_id")}
    if any(ids.values()):
        payload["external_ids"] = {key: value for key, value in ids.items() if value}
    ctx.deliver(name, ctx.settings.connections.crm, "write_back_status", payload)


def _failure_task(ctx: StepContext, kind: str, title: str, failed: dict[str, Any], retry_step: str) -> Transition:
    ctx.data["retry_step"] = retry_step
    task = ctx.open_task(
        kind, title, outcomes=["retry", "abandon"],
        data={"opportunity_id": ctx.key, "failures": failed, "account": ctx.data.get("account")},
    )
    return ctx.wait(next="after_failure_task", task=task)


@onboarding.step("validate", initial=True)
def validate(ctx: StepContext) -> Transition:
    """Check the account has what billing and the ERP need; ask a person to fix it when not."""
    opportunity = _opportunity(ctx)
    account = ctx.facts.get(str(opportunity["account_id"]))
    problems: list[str] = []
    if account is None:
        problems.append(f"account {opportunity['account_id']} is not known to Syncline yet")
    else:
        if not account.get("name"):
            problems.append("account name is missing")
        country = (account.get("address") or {}).get("country")
        if not country and not account.get("legal_entity_id") and not ctx.data.get("legal_entity"):
            problems.append("billing country is missing (needed to choose the legal entity)")
        entity = _entity(ctx, account)
        if entity is not None and entity.requires_tax_id and not account.get("tax_exempt") \
                and not account.get("tax_ids"):
            problems.append(f"tax id is missing ({entity.id} needs one) and the account is not tax exempt")
        if account.get("currency") and account["currency"] != opportunity["currency"]:
            problems.append(f"account currency {account['currency']} differs from the deal's {opportunity['currency']}")
    if not opportunity.get("lines") and not (opportunity.get("amount") and ctx.settings.default_interval):
        problems.append("the opportunity has no lines")
    if problems:
        ctx.note("validation failed: " + "; ".join(problems))
        task = ctx.open_task(
            "fix_account_data", "Fix the account data so onboarding can continue",
            outcomes=["retry", "abandon"],
            data={"opportunity_id": ctx.key, "account_id": opportunity["account_id"], "problems": problems},
        )
        return ctx.wait(next="after_validation_task", task=task)
    ctx.data["account"] = account
    return ctx.goto("enrich")


@onboarding.step("after_validation_task")
def after_validation_task(ctx: StepContext) -> Transition:
    assert ctx.resume.task is not None
    if ctx.resume.task.outcome == "retry":
        return ctx.goto("validate")
    return _abandon(ctx)


def _entity(ctx: StepContext, account: dict[str, Any]) -> LegalEntityPolicy | None:
    chosen = ctx.data.get("legal_entity") or account.get("legal_entity_id")
    if chosen:
        return ctx.settings.entity(chosen)
    return ctx.settings.entity_for_country((account.get("address") or {}).get("country"))


@onboarding.step("enrich")
def enrich(ctx: StepContext) -> Transition:
    """Choose the legal entity by the account's country (or a person), then currency and terms."""
    account = ctx.data["account"]
    settings = ctx.settings
    entity = _entity(ctx, account)
    if entity is None:
        task = ctx.open_task(
            "pick_legal_entity", f"Pick the legal entity for {account.get('name') or account['id']}",
            outcomes=[item.id for item in settings.legal_entities] + ["abandon"],
            data={"opportunity_id": ctx.key, "account": account},
        )
        return ctx.wait(next="after_entity_task", task=task)
    ctx.data["legal_entity"] = entity.id
    ctx.data["currency"] = account.get("currency") or _opportunity(ctx)["currency"] or entity.currency
    ctx.data["payment_terms"] = entity.payment_terms
    ctx.data["erp_connection"] = settings.erp_connection(entity)
    ctx.note(f"legal entity {entity.id}, ERP connection {ctx.data['erp_connection']}")
    return ctx.goto("dedupe")


@onboarding.step("after_entity_task")
def after_entity_task(ctx: StepContext) -> Transition:
    assert ctx.resume.task is not None
    if ctx.resume.task.outcome == "abandon":
        return _abandon(ctx)
    ctx.data["legal_entity"] = ctx.resume.task.outcome
    # The entity may need a tax id the account lacks: validate again with the entity known.
    return ctx.goto("validate")


@onboarding.step("dedupe")
def dedupe(ctx: StepContext) -> Transition:
    """Use an existing customer with the same tax id; ask a person when only the name matches."""
    account = ctx.data["account"]
    candidates = ctx.facts.similar_accounts(account)
    own_tax = tax_key(account)
    same_tax = [item for item in candidates if own_tax and tax_key(item) == own_tax]
    if same_tax:
        ctx.data["customer_id"] = same_tax[0]["id"]
        ctx.note(f"duplicate of {same_tax[0]['id']} (same tax id): onboarding onto that customer")
        return ctx.goto("billing_customer")
    if candidates:
        task = ctx.open_task(
            "confirm_duplicate", f"Is {account.get('name')} the same customer as {candidates[0].get('name')}?",
            outcomes=["same_customer", "different_customer"],
            data={"opportunity_id": ctx.key, "account": account, "candidates": candidates[:5]},
        )
        return ctx.wait(next="after_duplicate_task", task=task)
    ctx.data["customer_id"] = account["id"]
    return ctx.goto("billing_customer")


@onboarding.step("after_duplicate_task")
def after_duplicate_task(ctx: StepContext) -> Transition:
    assert ctx.resume.task is not None
    account = ctx.data["account"]
    if ctx.resume.task.outcome == "same_customer":
        ctx.data["customer_id"] = ctx.facts.similar_accounts(account)[0]["id"]
    else:
        ctx.data["customer_id"] = account["id"]
    return ctx.goto("billing_customer")


def _customer(ctx: StepContext) -> Account:
    account = ctx.data["account"]
    return Account.model_validate({
        **account, "id": ctx.data["customer_id"], "currency": ctx.data["currency"],
        "legal_entity_id": ctx.data["legal_entity"],
    })


def _lines(ctx: StepContext) -> list[dict[str, Any]]:
    """The deal's lines with product and price ids filled in (derived from the deal when absent)."""
    out = []
    opportunity = _opportunity(ctx)
    lines = opportunity["lines"] or [{
        "id": "amount", "description": opportunity.get("name") or "Subscription", "quantity": 1,
        "unit_amount": opportunity["amount"], "interval": ctx.settings.default_interval,
    }]
    for line in lines:
        product_id = line.get("product_id") or derived_id("product", ctx.key, line["id"])
        price_id = line.get("price_id") or derived_id("price", ctx.key, line["id"])
        out.append({**line, "product_id": product_id, "price_id": price_id})
    return out


def _billing_timeout(ctx: StepContext) -> float:
    """Seconds left until billing must have confirmed (one deadline for the whole billing phase)."""
    return max(0.0, float(ctx.data["billing_deadline"]) - ctx.now)


def _billing_silence(ctx: StepContext, step: str) -> Transition | None:
    """Handle a billing wait that ended by timer or by the escalation task; None when billing answered.

    On the timer: open an escalation task and keep waiting for billing *or* the decision. If
    billing answers first, the task is closed as no longer needed.
    """
    resume = ctx.resume
    if resume.kind == "timeout":
        minutes = ctx.settings.billing_confirm_seconds / 60
        ctx.note(f"billing has not confirmed within {minutes:g} minutes: escalating")
        task = ctx.open_task(
            "billing_not_confirmed", f"Billing has not confirmed the customer and subscription for {ctx.key}",
            outcomes=["keep_waiting", "abandon"], owner_role=ctx.settings.escalate_to,
            data={"opportunity_id": ctx.key, "waiting_since_step": step},
        )
        ctx.data["escalation_task"] = task
        return ctx.wait(next=step, deliveries=True, task=task)
    if resume.kind == "task":
        assert resume.task is not None
        ctx.data.pop("escalation_task", None)
        if resume.task.outcome == "abandon":
            ctx.data["compensation_reason"] = f"abandoned by {resume.task.decided_by}: billing did not confirm"
            return ctx.goto("compensate")
        return ctx.wait(next=step, deliveries=True)
    task = ctx.data.pop("escalation_task", None)
    if task:
        ctx.cancel_task(task, "billing confirmed")
    if ctx.now >= float(ctx.data["billing_deadline"]):
        # Billing answered after the escalation: the next billing step gets a fresh allowance.
        ctx.data["billing_deadline"] = ctx.now + ctx.settings.billing_confirm_seconds
    return None


@onboarding.step("billing_customer")
def billing_customer(ctx: StepContext) -> Transition:
    """Create or update the billing customer and the recurring lines' products and prices."""
    billing = ctx.settings.connections.billing
    ctx.data.setdefault("billing_deadline", ctx.now + ctx.settings.billing_confirm_seconds)
    ctx.deliver("customer", billing, "upsert_customer", _customer(ctx))
    for line in _lines(ctx):
        if not line.get("interval"):
            continue
        ctx.deliver(f"product:{line['id']}", billing, "upsert_product", Product(
            id=line["product_id"], source=_source("product", line["product_id"]),
            name=line.get("description") or line["product_id"]))
        ctx.deliver(f"price:{line['id']}", billing, "upsert_price", Price(
            id=line["price_id"], source=_source("price", line["price_id"]), product_id=line["product_id"],
            unit_amount=line["unit_amount"], interval=line["interval"]), after=line["product_id"])
    return ctx.wait(next="billing_subscription", deliveries=True, timeout=_billing_timeout(ctx))


@onboarding.step("billing_subscription")
def billing_subscription(ctx: StepContext) -> Transition:
    """Create the subscription once the customer and prices exist; billing must confirm in time."""
    silence = _billing_silence(ctx, "billing_subscription")
    if silence is not None:
        return silence
    if ctx.resume.failed:
        return _failure_task(ctx, "billing_rejected", "Billing rejected the customer or a price",
                             _failures(ctx), "billing_customer")
    ctx.data["billing_customer_id"] = ctx.resume.deliveries["customer"].external_id
    recurring = [line for line in _lines(ctx) if line.get("interval")]
    if not recurring:
        ctx.note("no recurring lines: no subscription")
        return ctx.goto("erp_customer")
    subscription_id = derived_id("subscription", ctx.key)
    ctx.data["subscription_id"] = subscription_id
    ctx.deliver("subscription", ctx.settings.connections.billing, "upsert_subscription", _subscription(
        ctx, SubscriptionStatus.ACTIVE))
    return ctx.wait(next="billing_confirmed", deliveries=True, timeout=_billing_timeout(ctx))


def _subscription(ctx: StepContext, status: SubscriptionStatus) -> Subscription:
    recurring = [line for line in _lines(ctx) if line.get("interval")]
    subscription_id = ctx.data["subscription_id"]
    return Subscription(
        id=subscription_id, source=_source("subscription", subscription_id), account_id=ctx.data["customer_id"],
        status=status, currency=ctx.data["currency"],
        items=[SubscriptionItem(price_id=line["price_id"], quantity=line["quantity"]) for line in recurring],
    )


def _failures(ctx: StepContext) -> dict[str, Any]:
    return {name: {"error_class": outcome.error_class, "error": outcome.error}
            for name, outcome in ctx.resume.failed.items()}


@onboarding.step("billing_confirmed")
def billing_confirmed(ctx: StepContext) -> Transition:
    """Continue when billing confirmed; escalate to a person when it has not within the limit."""
    silence = _billing_silence(ctx, "billing_confirmed")
    if silence is not None:
        return silence
    if ctx.resume.failed:
        return _failure_task(ctx, "billing_rejected", "Billing rejected the subscription", _failures(ctx),
                             "billing_subscription_retry")
    ctx.data["billing_subscription_external_id"] = ctx.resume.deliveries["subscription"].external_id
    ctx.data["billing_confirmed"] = True
    return ctx.goto("erp_customer")


@onboarding.step("billing_subscription_retry")
def billing_subscription_retry(ctx: StepContext) -> Transition:
    ctx.data["billing_deadline"] = ctx.now + ctx.settings.billing_confirm_seconds
    ctx.deliver("subscription", ctx.settings.connections.billing, "upsert_subscription",
                _subscription(ctx, SubscriptionStatus.ACTIVE))
    return ctx.wait(next="billing_confirmed", deliveries=True, timeout=_billing_timeout(ctx))


@onboarding.step("erp_customer")
def erp_customer(ctx: StepContext) -> Transition:
    """Create or update the ERP customer on the legal entity's ERP connection."""
    ctx.deliver("erp_customer", ctx.data["erp_connection"], "upsert_customer", _customer(ctx))
    return ctx.wait(next="erp_order", deliveries=True)


@onboarding.step("erp_order")
def erp_order(ctx: StepContext) -> Transition:
    if ctx.resume.failed:
        return _erp_rejected(ctx)
    ctx.data["erp_customer_id"] = ctx.resume.deliveries["erp_customer"].external_id
    opportunity = _opportunity(ctx)
    order_id = derived_id("sales_order", ctx.key)
    ctx.data["sales_order_id"] = order_id
    order = SalesOrder(
        id=order_id, source=_source("sales_order", order_id), account_id=ctx.data["customer_id"],
        opportunity_id=ctx.key, currency=ctx.data["currency"],
        order_date=opportunity.get("close_date") or _today(ctx), lines=_lines(ctx),
        legal_entity_id=ctx.data["legal_entity"], memo=f"payment terms {ctx.data['payment_terms']}",
    )
    ctx.deliver("sales_order", ctx.data["erp_connection"], "upsert_sales_order", order)
    return ctx.wait(next="support_organization", deliveries=True)


def _erp_rejected(ctx: StepContext) -> Transition:
    reasons = "; ".join(f"{outcome.error}" for outcome in ctx.resume.failed.values())
    ctx.data["compensation_reason"] = f"ERP rejected the order: {reasons}"
    return ctx.goto("compensate")


@onboarding.step("support_organization")
def support_organization(ctx: StepContext) -> Transition:
    """Billing confirmed and the ERP has the order: now the support desk gets the customer."""
    if ctx.resume.failed:
        return _erp_rejected(ctx)
    ctx.data["erp_sales_order_id"] = ctx.resume.deliveries["sales_order"].external_id
    ctx.deliver("organization", ctx.settings.connections.support, "upsert_organization", _customer(ctx))
    return ctx.wait(next="entitlement", deliveries=True)


@onboarding.step("entitlement")
def entitlement(ctx: StepContext) -> Transition:
    if ctx.resume.failed:
        return _failure_task(ctx, "support_rejected", "The support desk rejected the organization",
                             _failures(ctx), "support_organization_retry")
    entitlement_id = derived_id("entitlement", ctx.data["customer_id"])
    ctx.deliver("entitlement", ctx.settings.connections.support, "set_entitlement", Entitlement(
        id=entitlement_id, source=_source("entitlement", entitlement_id), account_id=ctx.data["customer_id"],
        level=ctx.settings.entitlement_level, active=True, reason=f"onboarding of {ctx.key}"))
    return ctx.wait(next="write_back", deliveries=True)


@onboarding.step("support_organization_retry")
def support_organization_retry(ctx: StepContext) -> Transition:
    ctx.deliver("organization", ctx.settings.connections.support, "upsert_organization", _customer(ctx))
    return ctx.wait(next="entitlement", deliveries=True)


@onboarding.step("write_back")
def write_back(ctx: StepContext) -> Transition:
    if ctx.resume.failed:
        return _failure_task(ctx, "support_rejected", "The support desk rejected the entitlement",
                             _failures(ctx), "entitlement")
    data = ctx.data
    status = (f"active: billing {data.get('billing_customer_id')}"
              + (f" / {data['billing_subscription_external_id']}" if data.get("billing_subscription_external_id")
                 else "")
              + f", ERP {data.get('erp_customer_id')} / {data.get('erp_sales_order_id')}"
              + f", support {ctx.settings.entitlement_level}")
    _write_back(ctx, status)
    return ctx.wait(next="done", deliveries=True)


@onboarding.step("done")
def done(ctx: StepContext) -> Transition:
    if ctx.resume.failed:
        ctx.note("the CRM did not take the status write-back: " + "; ".join(
            str(outcome.error) for outcome in ctx.resume.failed.values()))
    return ctx.finish("completed")


@onboarding.step("after_failure_task")
def after_failure_task(ctx: StepContext) -> Transition:
    assert ctx.resume.task is not None
    if ctx.resume.task.outcome == "retry":
        ctx.data.pop("billing_deadline", None)
        return ctx.goto(ctx.data.pop("retry_step"))
    if ctx.data.get("billing_confirmed") or ctx.data.get("subscription_id"):
        ctx.data["compensation_reason"] = f"abandoned by {ctx.resume.task.decided_by}"
        return ctx.goto("compensate")
    return _abandon(ctx)


@onboarding.step("compensate")
def compensate(ctx: StepContext) -> Transition:
    """Undo billing per policy (cancel or hold the subscription) and tell the CRM why."""
    reason = ctx.data["compensation_reason"]
    if ctx.data.get("subscription_id"):
        status = SubscriptionStatus.CANCELED if ctx.settings.on_erp_rejection == "cancel" else SubscriptionStatus.PAUSED
        ctx.deliver("undo_subscription", ctx.settings.connections.billing, "upsert_subscription",
                    _subscription(ctx, status))
        action = "subscription cancelled" if status is SubscriptionStatus.CANCELED else "subscription on hold"
    else:
        action = "nothing to undo in billing"
    ctx.data["compensation"] = action
    _write_back(ctx, f"onboarding stopped: {reason}; {action}")
    return ctx.wait(next="compensated", deliveries=True)


@onboarding.step("compensated")
def compensated(ctx: StepContext) -> Transition:
    if ctx.resume.failed:
        task = ctx.open_task(
            "compensation_failed", f"Undoing onboarding of {ctx.key} failed: finish it by hand",
            outcomes=["done"], owner_role=ctx.settings.escalate_to,
            data={"opportunity_id": ctx.key, "failures": _failures(ctx)},
        )
        return ctx.wait(next="compensated_by_hand", task=task)
    return ctx.finish("compensated", f"{ctx.data['compensation_reason']}; {ctx.data['compensation']}")


@onboarding.step("compensated_by_hand")
def compensated_by_hand(ctx: StepContext) -> Transition:
    return ctx.finish("compensated", f"{ctx.data['compensation_reason']}; finished by hand")


def _abandon(ctx: StepContext) -> Transition:
    assert ctx.resume.task is not None
    ctx.data["abandoned_by"] = ctx.resume.task.decided_by
    if ctx.resume.task.reason:
        ctx.data["abandoned_because"] = ctx.resume.task.reason
    return ctx.goto("abandon")


@onboarding.step("abandon")
def abandon(ctx: StepContext) -> Transition:
    who = ctx.data["abandoned_by"]
    why = ctx.data.get("abandoned_because")
    _write_back(ctx, f"onboarding abandoned by {who}" + (f": {why}" if why else ""))
    return ctx.wait(next="abandoned", deliveries=True)


@onboarding.step("abandoned")
def abandoned(ctx: StepContext) -> Transition:
    return ctx.finish("cancelled", f"abandoned by {ctx.data['abandoned_by']}")


# =============================================================================================
# Amendments
# =============================================================================================

def _amendment_key(event: FlowEvent, settings: FlowsSettings) -> str | None:
    # Billing's own subscription events report what it already did: applying them would loop.
    if event.source == f"/connections/{settings.connections.billing}":
        return None
    return event.subject


def _invoice_subscription(event: FlowEvent, _settings: FlowsSettings) -> str | None:
    value = event.data.get("subscription_id")
    return str(value) if value else None


amendment = Flow("amendment", version=1, description="subscription amendments applied to billing in order")
for _kind in ("subscription.updated", "subscription.canceled"):
    amendment.starts_on(_kind, key=_amendment_key)
    amendment.listens_to(_kind, key=_amendment_key)
for _kind in ("invoice.issued", "invoice.paid", "invoice.voided"):
    amendment.listens_to(_kind, key=_invoice_subscription)

_AMENDMENTS = ("subscription.updated", "subscription.canceled")
_FINALISED = ("invoice.issued", "invoice.paid", "invoice.voided")


@amendment.step("next_amendment", initial=True)
def next_amendment(ctx: StepContext) -> Transition:
    """Take the oldest queued amendment (the starting event is queued too)."""
    return ctx.wait(next="apply_amendment", signals=_AMENDMENTS)


@amendment.step("apply_amendment")
def apply_amendment(ctx: StepContext) -> Transition:
    signal = ctx.resume.signal
    assert signal is not None
    applied = ctx.data.get("applied_sequence")
    if signal.sequence and applied and signal.sequence <= applied:
        ctx.note(f"amendment {signal.id} (sequence {signal.sequence}) is older than the applied "
                 f"{applied}: skipped")
        return ctx.goto("next_amendment")
    subscription = Subscription.model_validate({**signal.data, "source": _source("subscription", ctx.key)})
    ctx.data["current"] = {"event": signal.id, "type": signal.type, "sequence": signal.sequence,
                           "subscription": subscription.model_dump(mode="json")}
    return ctx.goto("deliver_amendment")


@amendment.step("deliver_amendment")
def deliver_amendment(ctx: StepContext) -> Transition:
    ctx.deliver("amendment", ctx.settings.connections.billing, "upsert_subscription",
                ctx.data["current"]["subscription"])
    return ctx.wait(next="amendment_applied", deliveries=True)


@amendment.step("amendment_applied")
def amendment_applied(ctx: StepContext) -> Transition:
    current = ctx.data["current"]
    if ctx.resume.failed:
        task = ctx.open_task(
            "amendment_rejected", f"Billing rejected amendment {current['event']} of {ctx.key}",
            outcomes=["skip", "retry"], data={"subscription_id": ctx.key, "failures": _failures(ctx)},
        )
        return ctx.wait(next="after_amendment_task", task=task)
    if current.get("sequence"):
        ctx.data["applied_sequence"] = current["sequence"]
    ctx.data["applied"] = int(ctx.data.get("applied", 0)) + 1
    if current["type"] == "subscription.canceled":
        return ctx.finish("completed", "subscription cancelled")
    # The next amendment waits until billing finalised the invoice this one caused.
    return ctx.wait(next="invoice_finalised", signals=_FINALISED, timeout=ctx.settings.billing_confirm_seconds)


@amendment.step("invoice_finalised")
def invoice_finalised(ctx: StepContext) -> Transition:
    if ctx.resume.kind == "timeout":
        task = ctx.open_task(
            "invoice_not_finalised", f"Billing has not finalised the invoice of the last amendment to {ctx.key}",
            outcomes=["apply_next", "keep_waiting"], owner_role=ctx.settings.escalate_to,
            data={"subscription_id": ctx.key, "amendment": ctx.data["current"]},
        )
        return ctx.wait(next="invoice_finalised", signals=_FINALISED, task=task)
    if ctx.resume.kind == "task":
        assert ctx.resume.task is not None
        if ctx.resume.task.outcome == "keep_waiting":
            return ctx.wait(next="invoice_finalised", signals=_FINALISED)
    elif ctx.resume.signal is not None:
        ctx.note(f"invoice {ctx.resume.signal.subject} finalised ({ctx.resume.signal.type})")
    return ctx.goto("next_amendment")


@amendment.step("after_amendment_task")
def after_amendment_task(ctx: StepContext) -> Transition:
    assert ctx.resume.task is not None
    if ctx.resume.task.outcome == "retry":
        return ctx.goto("deliver_amendment")
    ctx.note(f"amendment {ctx.data['current']['event']} skipped by {ctx.resume.task.decided_by}")
    return ctx.goto("next_amendment")


# =============================================================================================
# Payment failure (dunning)
# =============================================================================================

def _unpaid_invoice(event: FlowEvent, _settings: FlowsSettings) -> str | None:
    value = event.data.get("invoice_id") or event.data.get("id")
    return str(value) if value else None


def _paid_invoice(event: FlowEvent, _settings: FlowsSettings) -> str | None:
    value = event.data.get("id") if event.type.startswith("invoice.") else event.data.get("invoice_id")
    return str(value) if value else None


dunning = Flow("dunning", version=1, description="failed payment → CRM flag, support downgrade after grace, restore")
dunning.starts_on("payment.failed", key=_unpaid_invoice)
dunning.listens_to("invoice.paid", key=_paid_invoice)
dunning.listens_to("payment.succeeded", key=_paid_invoice)
dunning.keeps_facts("account", "opportunity")

_PAID = ("invoice.paid", "payment.succeeded")


def _dunning_status(ctx: StepContext, status: str, name: str) -> None:
    opportunity = ctx.data.get("opportunity")
    if opportunity is None:
        ctx.note(f"no closed-won deal known for account {ctx.data.get('account_id')}: CRM not updated ({status})")
        return
    ctx.deliver(name, ctx.settings.connections.crm, "write_back_status",
                Opportunity.model_validate({**opportunity, "sync_status": status[:255]}))


def _entitlement(ctx: StepContext, level: EntitlementLevel, reason: str) -> Entitlement:
    account_id = str(ctx.data["account_id"])
    entitlement_id = derived_id("entitlement", account_id)
    return Entitlement(id=entitlement_id, source=_source("entitlement", entitlement_id), account_id=account_id,
                       level=level, active=True, reason=reason)


@dunning.step("flag", initial=True)
def flag(ctx: StepContext) -> Transition:
    """Flag the account's deal in the CRM, then give the customer the grace period to pay."""
    payment = ctx.data["event"]
    ctx.data["account_id"] = payment.get("account_id")
    if not payment.get("account_id"):
        return ctx.finish("failed", "the failed payment names no account")
    ctx.data["opportunity"] = ctx.facts.latest_for_account("opportunity", str(payment["account_id"]))
    reason = payment.get("failure_reason") or "declined"
    days = ctx.settings.dunning_grace_seconds / 86400
    _dunning_status(ctx, f"payment failed ({reason}); support downgrades in {days:g} days unless paid", "flag")
    return ctx.wait(next="grace_over", signals=_PAID, timeout=ctx.settings.dunning_grace_seconds)


@dunning.step("grace_over")
def grace_over(ctx: StepContext) -> Transition:
    if ctx.resume.kind == "signal":
        _dunning_status(ctx, "payment received", "cleared")
        return ctx.wait(next="finished", deliveries=True)
    ctx.deliver("downgrade", ctx.settings.connections.support, "set_entitlement",
                _entitlement(ctx, ctx.settings.downgraded_level, "payment overdue"))
    _dunning_status(ctx, f"payment overdue: support downgraded to {ctx.settings.downgraded_level}", "flag_downgraded")
    ctx.data["downgraded"] = True
    return ctx.wait(next="await_payment", deliveries=True)


@dunning.step("await_payment")
def await_payment(ctx: StepContext) -> Transition:
    return ctx.wait(next="restore", signals=_PAID)


@dunning.step("restore")
def restore(ctx: StepContext) -> Transition:
    ctx.deliver("restore", ctx.settings.connections.support, "set_entitlement",
                _entitlement(ctx, ctx.settings.entitlement_level, "payment received"))
    _dunning_status(ctx, f"payment received: support restored to {ctx.settings.entitlement_level}", "cleared")
    return ctx.wait(next="finished", deliveries=True)


@dunning.step("finished")
def finished(ctx: StepContext) -> Transition:
    return ctx.finish("completed", "restored" if ctx.data.get("downgraded") else "paid within the grace period")


#: The quote-to-cash flows, for ``Syncline(..., flows=QUOTE_TO_CASH)``.
QUOTE_TO_CASH: tuple[Flow, ...] = (onboarding, amendment, dunning)


def enabled_flows(settings: FlowsSettings) -> tuple[Flow, ...]:
    """The built-in flows ``settings.enabled`` names, in a stable order."""
    return tuple(flow for flow in QUOTE_TO_CASH if flow.name in settings.enabled)
