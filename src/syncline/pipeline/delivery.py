"""Delivery workers: move outbox rows to one target connection, within its budget.

Per connection, one :class:`DeliveryWorker`:

* claims due rows in batches under a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), only
  the head row of each ordering key, and only once the rows its ``after_key`` names are done;
* sends each through the connector inside a :class:`~syncline.pipeline.budget.Budget` slot;
* records results in batches: done (+ cross-reference), retry later (backoff, Retry-After),
  parked (business rule, data quality, retries exhausted), or connection paused (auth/config);
* stops claiming while the connection is paused or its circuit breaker is open.

A crash between the vendor's answer and the result commit leaves the row leased; when the
lease runs out the row is sent again with the same idempotency key, which the vendor's own
mechanism (external-id upsert, Idempotency-Key) turns into a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from opentelemetry import propagate
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from sqlalchemy import Connection, Engine, and_, bindparam, exists, or_, select, update
from sqlalchemy.orm import aliased

from syncline.connectors.base import Connector, DeliveryResult, Limits
from syncline.errors import (
    AuthConfigError,
    DeliveryError,
    ErrorClass,
    RateLimitedError,
    TransientError,
)
from syncline.observe import metrics
from syncline.observe.tracing import tracer
from syncline.pipeline import identity
from syncline.pipeline.breaker import CircuitBreaker
from syncline.pipeline.budget import Budget
from syncline.pipeline.retry import RetryPolicy
from syncline.store import (
    aliases,
    connection_state,
    deliveries,
    exceptions,
    insert_ignore,
    timeline,
    upsert,
    xref,
)

log = structlog.get_logger("syncline.delivery")

_BLOCKING_STATES = ("pending", "inflight", "parked")


@dataclass
class DeliveryStats:
    delivered: int = 0
    created: int = 0
    updated: int = 0
    retried: int = 0
    parked: int = 0
    by_class: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Claimed:
    id: int
    operation: str
    idempotency_key: str
    canonical_id: str
    correlation_id: str
    attempts: int
    payload: str
    failures: int
    traceparent: str | None = None


@dataclass(frozen=True)
class _Outcome:
    row: _Claimed
    result: DeliveryResult | None = None
    error: DeliveryError | None = None
    elapsed: float = 0.0


def claim(
    engine: Engine, connection: str, owner: str, limit: int, lease_seconds: float, now: float | None = None
) -> list[_Claimed]:
    """Lease up to ``limit`` deliverable rows of ``connection`` to ``owner``."""
    now = time.time() if now is None else now
    earlier = aliased(deliveries)
    # A row waits for older unfinished rows of its own key, and for every unfinished row of the
    # key it depends on, older or not: webhooks arrive out of order, so an invoice's customer
    # may be queued after the invoice, and polling the vendor with the invoice until then would
    # only spend the budget (and, under load, starve the customer row itself).
    blocked = exists().where(
        or_(
            and_(earlier.c.ordering_key == deliveries.c.ordering_key, earlier.c.id < deliveries.c.id),
            earlier.c.ordering_key == deliveries.c.after_key,
        ),
        earlier.c.state.in_(_BLOCKING_STATES),
    )
    due = or_(
        and_(deliveries.c.state == "pending", deliveries.c.next_attempt_at <= now),
        and_(deliveries.c.state == "inflight", deliveries.c.lease_until < now),
    )
    query = (
        select(
            deliveries.c.id, deliveries.c.operation, deliveries.c.idempotency_key, deliveries.c.canonical_id,
            deliveries.c.correlation_id, deliveries.c.attempts, deliveries.c.payload, deliveries.c.failures,
            deliveries.c.traceparent,
        )
        .where(deliveries.c.connection == connection, due, ~blocked)
        .order_by(deliveries.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=deliveries)
    )
    with engine.begin() as conn:
        rows = conn.execute(query).all()
        if rows:
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id.in_([row.id for row in rows]))
                .values(state="inflight", lease_owner=owner, lease_until=now + lease_seconds, updated_at=now)
            )
    return [_Claimed(*row) for row in rows]


def is_paused(engine: Engine, connection: str) -> bool:
    with engine.connect() as conn:
        paused = conn.execute(
            select(connection_state.c.paused).where(connection_state.c.connection == connection)
        ).scalar()
    return bool(paused)


def set_paused(bind: Engine | Connection, connection: str, paused: bool, reason: str | None) -> None:
    """Pause or resume deliveries to ``connection`` (persisted; every worker obeys).

    Given a Connection, the change joins the caller's transaction.
    """
    statement = upsert(bind.engine, connection_state, ["connection"], ["paused", "reason", "updated_at"])
    values = {"connection": connection, "paused": paused, "reason": reason, "updated_at": time.time()}
    if isinstance(bind, Connection):
        bind.execute(statement, values)
        return
    with bind.begin() as conn:
        conn.execute(statement, values)


class DeliveryWorker:
    """Delivers one connection's outbox rows until stopped."""

    def __init__(
        self,
        engine: Engine,
        connector: Connector,
        *,
        limits: Limits,
        budget: Budget,
        breaker: CircuitBreaker,
        policy: RetryPolicy,
        lease_seconds: float = 60.0,
        poll_seconds: float = 0.05,
        owner: str | None = None,
    ) -> None:
        self.engine = engine
        self.connector = connector
        self.connection = connector.name
        self.limits = limits
        self.budget = budget
        self.breaker = breaker
        self.policy = policy
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.owner = owner or f"{self.connection}-{uuid.uuid4().hex[:12]}"
        self.stats = DeliveryStats()
        self.wakeup = asyncio.Event()
        self._results: list[_Outcome] = []
        self._results_ready = asyncio.Event()
        self._draining = asyncio.Event()
        self._in_flight = 0
        self._paused_checked = 0.0
        self._paused = False

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; in-flight requests finish and are recorded first."""
        http = self.connector.http_client(self.limits)
        flusher = asyncio.create_task(self._flush_loop(stop), name=f"flush-{self.connection}")
        tasks: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                if await self._paused_now():
                    await self._sleep(stop, 0.5)
                    continue
                allowed = self.breaker.allows()
                if allowed == 0:
                    await self._sleep(stop, 0.1)
                    continue
                # Keep a small prefetch beyond the free slots so no slot idles between claims.
                want = self.budget.limit * 2 * max(1, self.limits.batch_size) - self._in_flight
                if allowed == 1:
                    want = min(want, 1)
                if want <= 0:
                    await self._sleep(stop, self.poll_seconds)
                    continue
                rows = await asyncio.to_thread(
                    claim, self.engine, self.connection, self.owner, want, self.lease_seconds
                )
                if not rows:
                    if allowed == 1:
                        self.breaker.release_probe()
                    await self._sleep(stop, self.poll_seconds)
                    continue
                for group in self._groups(rows):
                    self._in_flight += len(group)
                    task = asyncio.create_task(self._deliver(http, group))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if allowed == 1:
                    # Half-open: wait for the probe's verdict before claiming more.
                    await asyncio.wait(set(tasks))
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            stop.set()
            self._draining.set()
            self._results_ready.set()
            await flusher
            await http.aclose()

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        self.wakeup.clear()
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(self.wakeup.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _paused_now(self) -> bool:
        now = time.monotonic()
        if now - self._paused_checked > 1.0:
            self._paused = await asyncio.to_thread(is_paused, self.engine, self.connection)
            self._paused_checked = now
        return self._paused

    def _groups(self, rows: list[_Claimed]) -> list[list[_Claimed]]:
        """Split claimed rows into requests: batches for batchable operations, else one each."""
        size = self.limits.batch_size
        groups: list[list[_Claimed]] = []
        batches: dict[str, list[_Claimed]] = {}
        for row in rows:
            operation = self.connector.operations.get(row.operation)
            if size > 1 and operation is not None and operation.batchable:
                batch = batches.setdefault(row.operation, [])
                batch.append(row)
                if len(batch) == size:
                    groups.append(batches.pop(row.operation))
            else:
                groups.append([row])
        groups.extend(batches.values())
        return groups

    async def _deliver(self, http: Any, group: list[_Claimed]) -> None:
        """Send one request (one row, or one batch of rows) inside a budget slot."""
        outcomes: list[_Outcome]
        async with self.budget.slot():
            span = self._span(group)
            started = time.monotonic()
            try:
                if len(group) == 1:
                    row = group[0]
                    result = await self.connector.deliver(
                        http, row.operation, orjson.loads(row.payload), idempotency_key=row.idempotency_key
                    )
                    outcomes = [_Outcome(row, result=result, elapsed=time.monotonic() - started)]
                else:
                    answers = await self.connector.deliver_batch(
                        http, group[0].operation, [(row.idempotency_key, orjson.loads(row.payload)) for row in group]
                    )
                    if len(answers) != len(group):
                        raise DeliveryError(
                            f"batch answered {len(answers)} results for {len(group)} rows", code="connector_bug"
                        )
                    elapsed = time.monotonic() - started
                    outcomes = [
                        _Outcome(row, error=answer, elapsed=elapsed)
                        if isinstance(answer, DeliveryError)
                        else _Outcome(row, result=answer, elapsed=elapsed)
                        for row, answer in zip(group, answers, strict=True)
                    ]
            except DeliveryError as exc:
                outcomes = [_Outcome(row, error=exc, elapsed=time.monotonic() - started) for row in group]
            except Exception as exc:
                # A connector bug must park the rows, not kill the worker.
                log.exception("connector raised an untyped error", connection=self.connection,
                              deliveries=[row.id for row in group])
                error = DeliveryError(f"connector error {type(exc).__name__}", code="connector_bug")
                outcomes = [_Outcome(row, error=error, elapsed=time.monotonic() - started) for row in group]
        failed = [outcome.error for outcome in outcomes if outcome.error is not None]
        if failed:
            span.set_status(Status(StatusCode.ERROR, failed[0].code))
            span.set_attribute("syncline.error_class", str(failed[0].error_class or "unclassified"))
        span.end()
        for outcome in outcomes:
            self._observe(outcome)
        self._in_flight -= len(group)
        self._results.extend(outcomes)
        if len(self._results) >= 100:
            self._results_ready.set()

    def _span(self, group: list[_Claimed]) -> Span:
        """Start the client span of one vendor request, a child of the webhook request's span."""
        head = group[0]
        parent = propagate.extract({"traceparent": head.traceparent}) if head.traceparent else None
        return tracer.start_span(
            f"deliver {self.connection}.{head.operation}", context=parent, kind=SpanKind.CLIENT,
            attributes={"syncline.connection": self.connection, "syncline.operation": head.operation,
                        "syncline.correlation_id": head.correlation_id, "syncline.deliveries": len(group),
                        "syncline.delivery_id": head.id},
        )

    def _observe(self, outcome: _Outcome) -> None:
        metrics.delivery_seconds.labels(self.connection).observe(outcome.elapsed)
        error = outcome.error
        if error is None:
            self.budget.record_success()
            self.breaker.record_success()
            metrics.deliveries.labels(self.connection, "delivered").inc()
            return
        kind = error.error_class.value if error.error_class else "unclassified"
        metrics.deliveries.labels(self.connection, kind).inc()
        if isinstance(error, RateLimitedError):
            self.budget.record_rate_limited(error.retry_after)
        if error.error_class is ErrorClass.TRANSIENT:
            self.breaker.record_failure()
        else:
            # Any coherent answer (rate limit, missing dependency, business or data error) means
            # the vendor is up; it is also the verdict a half-open probe waits for.
            self.breaker.record_success()

    async def _flush_loop(self, stop: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._results_ready.wait(), timeout=0.02)
            self._results_ready.clear()
            if self._results:
                batch, self._results = self._results, []
                await asyncio.to_thread(self._record, batch)
                self.wakeup.set()
            elif self._draining.is_set() and self._in_flight == 0:
                # Only once the run loop has stopped claiming: rows claimed after ``stop`` was
                # set are still delivered, and their results must be written, not left leased.
                return

    def _record(self, batch: list[_Outcome]) -> None:
        """Write one batch of outcomes in one transaction."""
        now = time.time()
        done: list[dict[str, Any]] = []
        retry: list[dict[str, Any]] = []
        park: list[dict[str, Any]] = []
        refs: list[dict[str, Any]] = []
        alias_rows: list[dict[str, Any]] = []
        history: list[dict[str, Any]] = []
        problems: list[dict[str, Any]] = []
        pause_reason: str | None = None
        for outcome in batch:
            row, error = outcome.row, outcome.error
            attempt = row.attempts + 1
            failures = row.failures + (error is not None and error.error_class is ErrorClass.TRANSIENT)
            if error is None and outcome.result is not None:
                result = outcome.result
                done.append({"b_id": row.id, "b_attempts": attempt, "b_external": result.external_id})
                refs.append({"system": self.connection, "object_type": result.object_type,
                             "external_id": result.external_id, "canonical_id": row.canonical_id,
                             "created_at": now})
                operation = self.connector.operations.get(row.operation)
                if operation is not None and result.external_id:
                    alias = identity.alias_row(self.connection, operation.accepts, result.external_id,
                                               row.canonical_id, now)
                    if alias is not None:
                        alias_rows.append(alias)
                verb = {True: "created", False: "updated", None: "upserted"}[result.created]
                history.append(self._history(row, "delivered", f"{row.operation}: {verb} {result.external_id}", now))
                self.stats.delivered += 1
                self.stats.created += result.created is True
                self.stats.updated += result.created is False
                continue
            assert error is not None
            kind = error.error_class.value if error.error_class else "unclassified"
            self.stats.by_class[kind] = self.stats.by_class.get(kind, 0) + 1
            message = f"{error.code}: {error.message}"[:2000]
            if isinstance(error, AuthConfigError):
                # Not the record's fault: put it back untouched and stop the connection.
                retry.append({"b_id": row.id, "b_attempts": row.attempts, "b_failures": row.failures, "b_next": now,
                              "b_class": kind, "b_error": message})
                pause_reason = message
                history.append(self._history(row, "connection_paused", message, now))
                continue
            if isinstance(error, TransientError) and not self.policy.exhausted(attempt, failures, error):
                delay = self.policy.delay(attempt, error.retry_after)
                retry.append({"b_id": row.id, "b_attempts": attempt, "b_failures": failures, "b_next": now + delay,
                              "b_class": kind, "b_error": message})
                history.append(self._history(row, "retry_scheduled", f"{message} (retry in {delay:.1f}s)", now))
                self.stats.retried += 1
                continue
            if isinstance(error, TransientError):
                message = f"gave up after {attempt} attempts: {message}"
            park.append({"b_id": row.id, "b_attempts": attempt, "b_failures": failures, "b_class": kind,
                         "b_error": message})
            problems.append({"source": "delivery", "ref_id": row.id, "connection": self.connection,
                             "error_class": kind, "code": error.code, "reason": message,
                             "correlation_id": row.correlation_id, "created_at": now})
            history.append(self._history(row, "parked", message, now))
            self.stats.parked += 1

        mine = and_(deliveries.c.id == bindparam("b_id"), deliveries.c.lease_owner == self.owner)
        with self.engine.begin() as conn:
            if done:
                conn.execute(
                    update(deliveries).where(mine).values(
                        state="done", attempts=bindparam("b_attempts"), external_id=bindparam("b_external"),
                        delivered_at=now, updated_at=now, lease_owner=None, lease_until=None,
                        error_class=None, last_error=None,
                    ),
                    done,
                )
                conn.execute(insert_ignore(self.engine, xref), refs)
                if alias_rows:
                    conn.execute(insert_ignore(self.engine, aliases), alias_rows)
            if retry:
                conn.execute(
                    update(deliveries).where(mine).values(
                        state="pending", attempts=bindparam("b_attempts"), failures=bindparam("b_failures"),
                        next_attempt_at=bindparam("b_next"),
                        error_class=bindparam("b_class"), last_error=bindparam("b_error"), updated_at=now,
                        lease_owner=None, lease_until=None,
                    ),
                    retry,
                )
            if park:
                conn.execute(
                    update(deliveries).where(mine).values(
                        state="parked", attempts=bindparam("b_attempts"), failures=bindparam("b_failures"),
                        error_class=bindparam("b_class"),
                        last_error=bindparam("b_error"), updated_at=now, lease_owner=None, lease_until=None,
                    ),
                    park,
                )
                conn.execute(exceptions.insert(), problems)
            if history:
                conn.execute(timeline.insert(), history)
        if pause_reason is not None:
            log.error("pausing connection after an auth/config error", connection=self.connection,
                      reason=pause_reason)
            set_paused(self.engine, self.connection, True, pause_reason)
            self._paused, self._paused_checked = True, time.monotonic()

    def _history(self, row: _Claimed, stage: str, detail: str, now: float) -> dict[str, Any]:
        return {"at": now, "correlation_id": row.correlation_id, "canonical_id": row.canonical_id,
                "stage": stage, "connection": self.connection, "ref": str(row.id), "detail": detail}

