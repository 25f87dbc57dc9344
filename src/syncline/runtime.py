"""Wire configuration, store, connectors, router and workers into one running Syncline."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Engine, func, select

from syncline.config import SynclineConfig
from syncline.connectors.base import ConnectionSettings, Connector, ConnectorRegistry, Limits
from syncline.flows.definition import Flow, FlowRegistry
from syncline.flows.engine import FlowEngine
from syncline.flows.quote_to_cash import enabled_flows
from syncline.observe import metrics
from syncline.pipeline.breaker import CircuitBreaker
from syncline.pipeline.budget import Budget
from syncline.pipeline.catchup import catch_up_loop
from syncline.pipeline.delivery import DeliveryWorker
from syncline.pipeline.normalize import EventObserver, normalize_batch
from syncline.pipeline.retry import RetryPolicy
from syncline.pipeline.routing import Router
from syncline.store import create_store_engine, deliveries, inbox, migrate

if TYPE_CHECKING:
    from syncline.ledger.store import LedgerStore

log = structlog.get_logger("syncline.runtime")


def default_registry() -> ConnectorRegistry:
    """Return the registry of the connectors that ship with Syncline."""
    from syncline.connectors.hubspot import HubSpotConnector
    from syncline.connectors.netsuite import NetSuiteConnector
    from syncline.connectors.salesforce import SalesforceConnector
    from syncline.connectors.stripe import StripeConnector
    from syncline.connectors.zendesk import ZendeskConnector

    return ConnectorRegistry([StripeConnector, NetSuiteConnector, ZendeskConnector, SalesforceConnector,
                              HubSpotConnector])


class Syncline:
    """One Syncline instance: its store, connections, routes and workers."""

    def __init__(
        self,
        config: SynclineConfig,
        *,
        registry: ConnectorRegistry | None = None,
        engine: Engine | None = None,
        durable: bool = True,
        flows: Sequence[Flow] = (),
    ) -> None:
        self.config = config
        self.engine = engine or create_store_engine(config.store, durable=durable)
        registry = registry or default_registry()
        self.connectors: dict[str, Connector] = {}
        self.limits: dict[str, Limits] = {}
        self.budgets: dict[str, Budget] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        for name, conn in config.connections.items():
            cls = registry.get(conn.vendor)
            settings = ConnectionSettings(
                name=name, vendor=conn.vendor, base_url=conn.base_url, secrets=conn.secrets, options=conn.options
            )
            connector = cls(settings)
            declared = cls.default_limits
            overrides = {k: v for k, v in conn.budget.model_dump().items() if v is not None}
            limits = replace(declared, **overrides)
            self.connectors[name] = connector
            self.limits[name] = limits
            self.budgets[name] = Budget(limits.concurrency, limits.rate_per_second)
            self.breakers[name] = CircuitBreaker(
                config.pipeline.breaker_failures, config.pipeline.breaker_cooldown_seconds
            )
        self.router = Router(config.routes, self.connectors)
        # Flows are registered explicitly; without any, no flow tables are read or written.
        self.flow_engine: FlowEngine | None = None
        flows = flows or enabled_flows(config.flows)
        if flows:
            self.flow_engine = FlowEngine(self.engine, FlowRegistry(flows), config.flows,
                                          on_deliveries=self._wake_workers)
        # The ledger posts billing events as journal entries inside the normalizer's transaction.
        self.ledger: LedgerStore | None = None
        if config.ledger is not None:
            from syncline.ledger.store import LedgerStore

            self.ledger = LedgerStore(self.engine, config.ledger)
        retry = config.retry
        self.policy = RetryPolicy(retry.max_attempts, retry.base_seconds, retry.cap_seconds,
                                  retry.dependency_max_attempts)
        self.inbox_arrived = asyncio.Event()
        self.workers: list[DeliveryWorker] = []
        self.catch_up_nudges: dict[str, asyncio.Event] = {}

    def migrate(self) -> None:
        """Create or upgrade the store schema."""
        migrate(self.engine)

    def delivery_targets(self) -> list[str]:
        """Connections some route delivers to."""
        targets = {route.deliver.connection for route in self.config.routes}
        if self.flow_engine is not None:
            targets.update(name for name in self.flow_engine.connections() if name in self.connectors)
        if self.config.ledger is not None and self.config.ledger.erp is not None:
            targets.add(self.config.ledger.erp.connection)
        return sorted(targets)

    def make_workers(self, *, lease_seconds: float | None = None) -> list[DeliveryWorker]:
        lease = lease_seconds or self.config.pipeline.lease_seconds
        self.workers = [
            DeliveryWorker(
                self.engine, self.connectors[name], limits=self.limits[name], budget=self.budgets[name],
                breaker=self.breakers[name], policy=self.policy, lease_seconds=lease,
            )
            for name in self.delivery_targets()
        ]
        return self.workers

    async def normalize_loop(self, stop: asyncio.Event, *, poll_seconds: float = 0.05) -> None:
        """Normalize inbox batches until ``stop``; wake the delivery workers after each one."""
        batch_size = self.config.pipeline.batch_size
        failures = 0
        while not stop.is_set():
            try:
                stats = await asyncio.to_thread(normalize_batch, self.engine, self.connectors, self.router,
                                                limit=batch_size, observers=self._observers())
            except Exception:
                # The batch rolled back and stays in the inbox; keep the loop alive and say so loudly.
                failures += 1
                log.exception("normalize batch failed; retrying", consecutive_failures=failures)
                await asyncio.sleep(min(30.0, 0.1 * 2**failures))
                continue
            failures = 0
            for name in stats.notified:
                # The vendor said something changed without saying what: read its change feed.
                if name in self.catch_up_nudges:
                    self.catch_up_nudges[name].set()
            if stats.claimed:
                metrics.normalized.labels("done").inc(stats.claimed - stats.ignored - stats.parked)
                metrics.normalized.labels("ignored").inc(stats.ignored)
                metrics.normalized.labels("parked").inc(stats.parked)
                for worker in self.workers:
                    worker.wakeup.set()
                continue
            self.inbox_arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.inbox_arrived.wait(), timeout=poll_seconds)

    async def run_workers(self, stop: asyncio.Event, *, lease_seconds: float | None = None) -> None:
        """Run the normalizer and one delivery worker per target connection until ``stop``."""
        workers = self.make_workers(lease_seconds=lease_seconds)
        await asyncio.gather(self.normalize_loop(stop), self.flows_loop(stop),
                             *(worker.run(stop) for worker in workers), *self._catch_up_loops(stop))

    def _catch_up_loops(self, stop: asyncio.Event) -> list[Coroutine[Any, Any, None]]:
        """One polling loop per connection with ``catch_up_seconds`` set."""
        loops = []
        for name, conn in self.config.connections.items():
            if conn.catch_up_seconds is None:
                continue
            nudged = self.catch_up_nudges.setdefault(name, asyncio.Event())
            loops.append(catch_up_loop(self.engine, self.connectors[name], self.limits[name], self.budgets[name],
                                       every=conn.catch_up_seconds, nudged=nudged, stop=stop))
        return loops

    def _observers(self) -> tuple[EventObserver, ...]:
        observers: list[EventObserver] = []
        if self.flow_engine is not None:
            observers.append(self.flow_engine.sink)
        if self.ledger is not None:
            observers.append(self.ledger)
        return tuple(observers)

    def _wake_workers(self) -> None:
        for worker in self.workers:
            worker.wakeup.set()

    async def flows_loop(self, stop: asyncio.Event) -> None:
        """Advance the registered flows until ``stop`` (returns at once when none are registered)."""
        if self.flow_engine is not None:
            await self.flow_engine.run(stop)

    def backlog(self) -> dict[str, int]:
        """Rows still to process: received inbox rows, and outbox rows pending or in flight."""
        with self.engine.connect() as conn:
            received = conn.execute(
                select(func.count()).select_from(inbox).where(inbox.c.state == "received")
            ).scalar_one()
            outstanding = conn.execute(
                select(func.count()).select_from(deliveries).where(deliveries.c.state.in_(("pending", "inflight")))
            ).scalar_one()
        return {"inbox": int(received), "outbox": int(outstanding)}

    async def wait_idle(self, within: float, *, settle: float = 0.2) -> bool:
        """Wait until nothing is left to normalize or deliver; False on timeout."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            backlog = await asyncio.to_thread(self.backlog)
            if not any(backlog.values()):
                await asyncio.sleep(settle)
                if not any((await asyncio.to_thread(self.backlog)).values()):
                    return True
            await asyncio.sleep(0.1)
        return False

    def connection_names(self) -> Sequence[str]:
        return list(self.connectors)

    def close(self) -> None:
        """Release the store's connections."""
        self.engine.dispose()
