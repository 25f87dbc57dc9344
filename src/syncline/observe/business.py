"""Business health: the figures a finance operator asks about, computed from the store.

* invoices not yet in the ERP past their service level;
* payments not yet reflected in the CRM past their service level;
* orders awaiting billing (quote-to-cash flow instances still open, when flows are installed);
* open human tasks by age.

The console home page shows them; :func:`refresh_gauges` exports them to Prometheus.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, func, inspect, select

from syncline.observe.settings import ConsoleConfig
from syncline.store import deliveries

if TYPE_CHECKING:
    from syncline.runtime import Syncline

__all__ = ["BusinessHealth", "business_health", "refresh_gauges"]

_UNSENT = ("pending", "inflight", "parked")
TASK_AGE_BUCKETS = (("under_1h", 0.0, 3600.0), ("1h_to_24h", 3600.0, 86400.0), ("over_24h", 86400.0, float("inf")))


@dataclass
class BusinessHealth:
    """A snapshot of the business figures."""

    invoices_late_to_erp: int = 0
    invoices_waiting_for_erp: int = 0
    payments_late_to_crm: int = 0
    payments_waiting_for_crm: int = 0
    orders_awaiting_billing: int | None = None
    open_tasks_by_age: dict[str, int] | None = None
    oldest_late_invoice_seconds: float | None = None
    by_connection: dict[str, dict[str, int]] = field(default_factory=dict)


def _targets(vendors_by_connection: Mapping[str, str], vendors: list[str]) -> list[str]:
    wanted = set(vendors)
    return [name for name, vendor in vendors_by_connection.items() if vendor in wanted]


def _has_table(engine: Engine, name: str) -> bool:
    return bool(inspect(engine).has_table(name))


def business_health(engine: Engine, vendors_by_connection: Mapping[str, str], config: ConsoleConfig,
                    *, now: float | None = None) -> BusinessHealth:
    """Compute the business figures for connections ``{name: vendor}`` under the SLAs of ``config``."""
    now = time.time() if now is None else now
    health = BusinessHealth()
    erp = _targets(vendors_by_connection, config.erp_vendors)
    crm = _targets(vendors_by_connection, config.crm_vendors)
    invoice_cutoff = now - config.invoice_sla_minutes * 60
    payment_cutoff = now - config.payment_sla_minutes * 60
    with engine.connect() as conn:
        if erp:
            waiting = (deliveries.c.connection.in_(erp) & deliveries.c.event_type.like("invoice.%")
                       & deliveries.c.state.in_(_UNSENT))
            health.invoices_waiting_for_erp = int(conn.execute(
                select(func.count()).select_from(deliveries).where(waiting)).scalar_one())
            late = conn.execute(
                select(func.count(), func.min(deliveries.c.created_at))
                .where(waiting, deliveries.c.created_at < invoice_cutoff)).one()
            health.invoices_late_to_erp = int(late[0])
            health.oldest_late_invoice_seconds = round(now - float(late[1]), 1) if late[1] is not None else None
        if crm:
            waiting = (deliveries.c.connection.in_(crm) & deliveries.c.event_type.like("payment.%")
                       & deliveries.c.state.in_(_UNSENT))
            health.payments_waiting_for_crm = int(conn.execute(
                select(func.count()).select_from(deliveries).where(waiting)).scalar_one())
            health.payments_late_to_crm = int(conn.execute(
                select(func.count()).select_from(deliveries)
                .where(waiting, deliveries.c.created_at < payment_cutoff)).scalar_one())
        for name, late_invoices in conn.execute(
            select(deliveries.c.connection, func.count())
            .where(deliveries.c.event_type.like("invoice.%"), deliveries.c.state.in_(_UNSENT),
                   deliveries.c.created_at < invoice_cutoff)
            .group_by(deliveries.c.connection)
        ):
            health.by_connection.setdefault(name, {})["invoices_late"] = int(late_invoices)
    health.orders_awaiting_billing, health.open_tasks_by_age = _flow_figures(engine, now)
    return health


def _flow_figures(engine: Engine, now: float) -> tuple[int | None, dict[str, int] | None]:
    # Flows are a separate part; without their tables these figures are unknown, not zero.
    if not _has_table(engine, "flow_tasks"):
        return None, None
    from syncline.flows._tables import flow_instances, flow_tasks

    with engine.connect() as conn:
        orders = int(conn.execute(
            select(func.count()).select_from(flow_instances)
            .where(flow_instances.c.flow.like("%onboarding%") | flow_instances.c.flow.like("%quote_to_cash%"),
                   flow_instances.c.state.not_in(("completed", "compensated", "cancelled", "failed")))
        ).scalar_one())
        created: list[Any] = list(conn.execute(
            select(flow_tasks.c.created_at).where(flow_tasks.c.state.in_(("open", "claimed")))).scalars())
    ages = {name: 0 for name, _, _ in TASK_AGE_BUCKETS}
    for at in created:
        age = now - float(at)
        for name, low, high in TASK_AGE_BUCKETS:
            if low <= age < high:
                ages[name] += 1
    return orders, ages


_BREAKER_VALUE = {"closed": 0, "half_open": 1, "open": 2}


def refresh_gauges(syncline: Syncline) -> None:
    """Set the store-derived Prometheus gauges (queue depth and age, breakers, budgets, business figures)."""
    from syncline.api._queries import connection_health
    from syncline.observe import metrics
    from syncline.store import exceptions, inbox

    now = time.time()
    for row in connection_health(syncline):
        name = row["name"]
        for state in ("pending", "inflight", "parked"):
            metrics.queue_depth.labels(name, state).set(row[state])
        metrics.outbox_oldest_age.labels(name).set(row["oldest_waiting_seconds"] or 0.0)
        metrics.breaker_state.labels(name).set(_BREAKER_VALUE.get(row["breaker"], 0))
        metrics.connection_paused.labels(name).set(1 if row["paused"] else 0)
        metrics.budget_in_use.labels(name).set(row["budget_in_use"])
        metrics.budget_limit.labels(name).set(row["budget_limit"])
    with syncline.engine.connect() as conn:
        states: dict[str, int] = dict(conn.execute(
            select(inbox.c.state, func.count()).where(inbox.c.state.in_(("received", "parked")))
            .group_by(inbox.c.state)).all())
        open_rows = conn.execute(
            select(exceptions.c.connection, exceptions.c.error_class, func.count())
            .where(exceptions.c.resolved_at.is_(None)).group_by(exceptions.c.connection, exceptions.c.error_class)
        ).all()
    for state in ("received", "parked"):
        metrics.inbox_depth.labels(state).set(int(states.get(state, 0)))
    metrics.exceptions_open.clear()
    for connection, error_class, count in open_rows:
        metrics.exceptions_open.labels(connection, error_class).set(int(count))
    vendors = {name: connector.vendor for name, connector in syncline.connectors.items()}
    health = business_health(syncline.engine, vendors, syncline.config.console, now=now)
    metrics.invoices_late_to_erp.set(health.invoices_late_to_erp)
    metrics.invoices_waiting_for_erp.set(health.invoices_waiting_for_erp)
    metrics.payments_late_to_crm.set(health.payments_late_to_crm)
    metrics.orders_awaiting_billing.set(health.orders_awaiting_billing or 0)
    for bucket, count in (health.open_tasks_by_age or {}).items():
        metrics.tasks_open.labels(bucket).set(count)
