"""The flow engine: persisted process managers driven by events, delivery outcomes, timers and tasks.

One engine tick runs four batch passes, each in one transaction over hundreds of rows:

1. **ingest** flow events (written by the normalizer in its own transaction): update facts,
   start instances (one per flow and key; a second start event for the same key is ignored),
   queue signals and wake the instances waiting for them;
2. **settle** instances waiting on deliveries: once every awaited outbox row is done, parked
   or skipped, the instance becomes runnable with the outcomes;
3. **escalate** overdue tasks to their escalation role;
4. **advance** runnable instances and those whose timer (``wake_at``) has passed: run steps until
   the next wait, then write the new state, the deliveries and the tasks in the same commit.

Because a step's state change and its effects commit together, and delivery keys derive from
(instance, step sequence, name), a crash anywhere repeats at most uncommitted work, with the
same keys: no step is issued twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from sqlalchemy import Connection, Engine, and_, bindparam, or_, select, update

from syncline.canonical.events import CloudEvent
from syncline.flows._tables import flow_events, flow_facts, flow_instances, flow_signals, flow_tasks
from syncline.flows.definition import (
    WAITING_STATES,
    DeliveryOutcome,
    Finish,
    Flow,
    FlowEvent,
    FlowRegistry,
    Goto,
    IssuedDelivery,
    KeyFn,
    OpenedTask,
    Resume,
    StepContext,
    TaskDecision,
    Wait,
)
from syncline.flows.settings import FlowsSettings
from syncline.store import deliveries, insert_ignore, timeline, upsert

log = structlog.get_logger("syncline.flows")

_TERMINAL_DELIVERY = ("done", "parked", "skipped")
_MAX_STEPS_PER_RUN = 100
_SETTLE_INTERVAL = 0.1
# Long waits are checked less often: a quarter of the time waited so far, at most this.
_SETTLE_MAX_INTERVAL = 2.0
_CHUNK = 500
_LEGAL_SUFFIXES = {"inc", "llc", "ltd", "gmbh", "ag", "sa", "sarl", "bv", "plc", "corp", "co", "limited", "kg"}


def match_name(name: str | None) -> str | None:
    """Normalise a company name for the duplicate check ("ACME, Inc." → "acme")."""
    if not name:
        return None
    words = [word for word in re.findall(r"[a-z0-9]+", name.lower()) if word not in _LEGAL_SUFFIXES]
    return " ".join(words)[:255] or None


def tax_key(data: Mapping[str, Any]) -> str | None:
    """Normalise an account's first tax id for the duplicate check ("de 123" → "DE123")."""
    tax_ids = data.get("tax_ids") or []
    if not tax_ids:
        return None
    return re.sub(r"[^A-Z0-9]", "", str(tax_ids[0]).upper())[:64] or None


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


@dataclass
class TickStats:
    """What one engine tick did."""

    events: int = 0
    started: int = 0
    settled: int = 0
    escalated: int = 0
    advanced: int = 0
    deliveries: int = 0
    finished: int = 0

    @property
    def busy(self) -> bool:
        return bool(self.events or self.settled or self.advanced or self.escalated)


class _Facts:
    """Fact look-ups inside the advancing transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def get(self, canonical_id: str) -> dict[str, Any] | None:
        data = self._conn.execute(
            select(flow_facts.c.data).where(flow_facts.c.canonical_id == canonical_id)
        ).scalar()
        return None if data is None else dict(orjson.loads(data))

    def latest_for_account(self, object_type: str, account_id: str) -> dict[str, Any] | None:
        data = self._conn.execute(
            select(flow_facts.c.data)
            .where(flow_facts.c.account_id == account_id, flow_facts.c.object_type == object_type)
            .order_by(flow_facts.c.updated_at.desc())
            .limit(1)
        ).scalar()
        return None if data is None else dict(orjson.loads(data))

    def similar_accounts(self, account: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Other accounts with the same normalised name or tax id (one indexed query each)."""
        found: dict[str, dict[str, Any]] = {}
        for column, value in ((flow_facts.c.tax_id, tax_key(account)),
                              (flow_facts.c.match_name, match_name(account.get("name")))):
            if not value:
                continue
            rows = self._conn.execute(
                select(flow_facts.c.canonical_id, flow_facts.c.data)
                .where(flow_facts.c.object_type == "account", column == value,
                       flow_facts.c.canonical_id != str(account.get("id")))
                .order_by(flow_facts.c.canonical_id)
                .limit(10)
            ).all()
            for row in rows:
                found.setdefault(row.canonical_id, dict(orjson.loads(row.data)))
        return list(found.values())


class FlowEventSink:
    """Writes the canonical events flows care about into ``flow_events``, inside the caller's
    transaction (the normalizer's), so an event is never routed without reaching its flows."""

    def __init__(self, registry: FlowRegistry) -> None:
        self._types = registry.event_types()

    def wants(self, event_type: str) -> bool:
        if event_type in self._types:
            return True
        prefix = event_type.split(".", 1)[0]
        return f"{prefix}.*" in self._types

    def record(self, conn: Connection, events: Sequence[CloudEvent], now: float) -> int:
        """Insert the wanted ``events`` (duplicates by event id are ignored); return how many were wanted."""
        rows = [
            {"event_id": event.id, "type": event.type, "source": event.source, "subject": event.subject,
             "correlation_id": event.correlationid, "sequence": event.sequence, "data": _dumps(event.data),
             "created_at": now, "processed_at": None}
            for event in events if self.wants(event.type)
        ]
        if rows:
            conn.execute(insert_ignore(conn.engine, flow_events), rows)
        return len(rows)


class FlowEngine:
    """Runs the registered flows against one store."""

    def __init__(
        self,
        engine: Engine,
        registry: FlowRegistry,
        settings: FlowsSettings | None = None,
        *,
        on_deliveries: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.settings = settings or FlowsSettings()
        self.sink = FlowEventSink(registry)
        self.on_deliveries = on_deliveries
        self._latest = {flow.name: flow for flow in registry.latest()}
        # Signals address instances by flow name, whatever version they run.
        self._signals: dict[str, list[tuple[KeyFn, Flow]]] = {}
        for flow in registry.all():
            for event_type, key in flow.signal_events.items():
                self._signals.setdefault(event_type, []).append((key, flow))
        self._facts = registry.fact_types()

    # -- public entry points -------------------------------------------------------------------
    def connections(self) -> set[str]:
        """The connections the flows deliver to (by role, and every legal entity's ERP)."""
        roles = self.settings.connections
        names = {roles.crm, roles.billing, roles.erp, roles.support}
        names.update(self.settings.erp_connection(entity) for entity in self.settings.legal_entities)
        return names

    def emit(self, events: Iterable[CloudEvent]) -> int:
        """Record canonical events for the flows outside the normalizer (operators, tests)."""
        with self.engine.begin() as conn:
            return self.sink.record(conn, list(events), time.time())

    def tick(self, now: float | None = None) -> TickStats:
        """Run one round of the four passes."""
        stats = TickStats()
        # Each pass reads the clock when it starts, so timeline entries stay in causal order;
        # ``now`` shifts the clock (tests of timers).
        offset = 0.0 if now is None else now - time.time()
        self.ingest(stats, time.time() + offset)
        self.settle(stats, time.time() + offset)
        self.escalate(stats, time.time() + offset)
        self.advance(stats, time.time() + offset)
        return stats

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until ``stop``; sleep ``poll_seconds`` when a tick found nothing to do."""
        failures = 0
        while not stop.is_set():
            try:
                stats = await asyncio.to_thread(self.tick)
            except Exception:
                # The tick's transactions rolled back; the rows stay for the next try.
                failures += 1
                log.exception("flow engine tick failed; retrying", consecutive_failures=failures)
                await asyncio.sleep(min(30.0, 0.1 * 2**failures))
                continue
            failures = 0
            if stats.deliveries and self.on_deliveries is not None:
                self.on_deliveries()
            if not stats.busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.settings.poll_seconds)

    # -- pass 1: events ----------------------------------------------------------------------------
    def ingest(self, stats: TickStats, now: float) -> None:
        limit = self.settings.batch_size
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(flow_events)
                .where(flow_events.c.processed_at.is_(None))
                .order_by(flow_events.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return
            stats.events = len(rows)
            facts: dict[str, dict[str, Any]] = {}
            starts: dict[str, dict[str, Any]] = {}
            signals: list[dict[str, Any]] = []
            history: list[dict[str, Any]] = []
            for row in rows:
                event = FlowEvent(row.event_id, row.type, row.source, row.subject, row.correlation_id, row.sequence,
                                  orjson.loads(row.data))
                object_type = str(event.data.get("object_type"))
                if object_type in self._facts and event.subject:
                    facts[event.subject] = {
                        "canonical_id": event.subject, "object_type": object_type,
                        "match_name": match_name(event.data.get("name")) if object_type == "account" else None,
                        "tax_id": tax_key(event.data) if object_type == "account" else None,
                        "account_id": event.data.get("account_id"),
                        "data": _dumps(event.data), "updated_at": now,
                    }
                for flow in self._latest.values():
                    key_fn = flow.start_events.get(event.type)
                    key = key_fn(event, self.settings) if key_fn is not None else None
                    if key is None:
                        continue
                    instance_id = flow.instance_id(key)
                    if instance_id in starts:
                        continue
                    assert flow.initial is not None
                    starts[instance_id] = {
                        "id": instance_id, "flow": flow.name, "version": flow.version, "key": key[:128],
                        "correlation_id": event.correlation_id, "state": "runnable", "step": flow.initial,
                        "seq": 0, "data": _dumps({"event": event.data, "event_type": event.type,
                                                  "event_source": event.source}),
                        "waiting_on": None, "resume": _dumps({"kind": "start"}), "wake_at": None,
                        "check_at": None, "error": None, "created_at": now, "updated_at": now,
                        "finished_at": None,
                    }
                for key_fn, flow in self._signals.get(event.type, []):
                    key = key_fn(event, self.settings)
                    if key is None:
                        continue
                    signals.append({
                        "instance_id": flow.instance_id(key), "name": event.type, "event_id": event.id,
                        "source": event.source, "sequence": event.sequence, "data": _dumps(event.data),
                        "created_at": now, "consumed_at": None,
                    })
            if facts:
                conn.execute(
                    upsert(self.engine, flow_facts, ["canonical_id"],
                           ["object_type", "match_name", "tax_id", "account_id", "data", "updated_at"]),
                    list(facts.values()),
                )
            if starts:
                existing = set(conn.execute(
                    select(flow_instances.c.id).where(flow_instances.c.id.in_(list(starts)))
                ).scalars())
                fresh = [row for instance_id, row in starts.items() if instance_id not in existing]
                if fresh:
                    conn.execute(insert_ignore(self.engine, flow_instances), fresh)
                    stats.started = len(fresh)
                    history.extend(
                        {"at": now, "correlation_id": row["correlation_id"], "canonical_id": row["key"],
                         "stage": "flow_started", "connection": None, "ref": row["id"][:64],
                         "detail": f"{row['flow']} v{row['version']} started"}
                        for row in fresh
                    )
            if signals:
                # Deduplicate within the batch: the unique key would reject the second anyway.
                unique = {(item["instance_id"], item["event_id"]): item for item in signals}
                conn.execute(insert_ignore(self.engine, flow_signals), list(unique.values()))
                self._wake_for_signals(conn, {item["instance_id"] for item in signals},
                                       {(item["instance_id"], item["name"]) for item in signals}, now)
            if history:
                conn.execute(timeline.insert(), history)
            conn.execute(
                update(flow_events).where(flow_events.c.id.in_([row.id for row in rows])).values(processed_at=now)
            )

    def _wake_for_signals(self, conn: Connection, ids: set[str], names: set[tuple[str, str]], now: float) -> None:
        rows = conn.execute(
            select(flow_instances.c.id, flow_instances.c.waiting_on)
            .where(flow_instances.c.id.in_(list(ids)), flow_instances.c.state.in_(WAITING_STATES))
            .with_for_update()
        ).all()
        woken = []
        for row in rows:
            waiting = orjson.loads(row.waiting_on) if row.waiting_on else {}
            if any((row.id, name) in names for name in waiting.get("signals", ())):
                woken.append({"b_id": row.id})
        if woken:
            conn.execute(
                update(flow_instances).where(flow_instances.c.id == bindparam("b_id"))
                .values(state="runnable", resume=_dumps({"kind": "signal"}), updated_at=now),
                woken,
            )

    # -- pass 2: delivery outcomes ---------------------------------------------------------------
    def settle(self, stats: TickStats, now: float) -> None:
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(flow_instances.c.id, flow_instances.c.waiting_on, flow_instances.c.updated_at)
                .where(flow_instances.c.state.in_(WAITING_STATES), flow_instances.c.check_at <= now)
                .order_by(flow_instances.c.check_at)
                .limit(self.settings.batch_size * 2)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return
            awaited = {row.id: dict(orjson.loads(row.waiting_on or "{}").get("deliveries") or {}) for row in rows}
            waited = {row.id: now - row.updated_at for row in rows}
            keys = [key for names in awaited.values() for key in names.values()]
            found: dict[str, Any] = {}
            for start in range(0, len(keys), _CHUNK):
                for settled in conn.execute(
                    select(deliveries.c.dedupe_key, deliveries.c.state, deliveries.c.external_id,
                           deliveries.c.error_class, deliveries.c.last_error)
                    .where(deliveries.c.dedupe_key.in_(keys[start:start + _CHUNK]))
                ):
                    found[settled.dedupe_key] = settled
            ready: list[dict[str, Any]] = []
            later: list[dict[str, Any]] = []
            for instance_id, names in awaited.items():
                outcomes = {}
                for name, key in names.items():
                    delivery = found.get(key)
                    if delivery is None or delivery.state not in _TERMINAL_DELIVERY:
                        break
                    outcomes[name] = {"state": delivery.state, "external_id": delivery.external_id,
                                      "error_class": delivery.error_class, "error": delivery.last_error}
                else:
                    ready.append({"b_id": instance_id,
                                  "b_resume": _dumps({"kind": "deliveries", "deliveries": outcomes})})
                    continue
                interval = min(_SETTLE_MAX_INTERVAL, max(_SETTLE_INTERVAL, waited[instance_id] / 4))
                later.append({"b_id": instance_id, "b_check": now + interval})
            if ready:
                conn.execute(
                    update(flow_instances).where(flow_instances.c.id == bindparam("b_id"))
                    .values(state="runnable", resume=bindparam("b_resume"), check_at=None, updated_at=now),
                    ready,
                )
                stats.settled = len(ready)
            if later:
                conn.execute(
                    update(flow_instances).where(flow_instances.c.id == bindparam("b_id"))
                    .values(check_at=bindparam("b_check")),
                    later,
                )

    # -- pass 3: task escalation -----------------------------------------------------------------
    def escalate(self, stats: TickStats, now: float) -> None:
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(flow_tasks.c.id, flow_tasks.c.escalation, flow_tasks.c.owner_role, flow_tasks.c.correlation_id,
                       flow_tasks.c.instance_id, flow_tasks.c.kind)
                .where(flow_tasks.c.state.in_(("open", "claimed")), flow_tasks.c.due_at <= now,
                       flow_tasks.c.escalated_at.is_(None))
                .limit(self.settings.batch_size)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return
            changes, history = [], []
            escalated: list[tuple[str, str, str]] = []
            for row in rows:
                rule = orjson.loads(row.escalation) if row.escalation else {}
                role = str(rule.get("to_role") or row.owner_role)
                changes.append({"b_id": row.id, "b_role": role})
                escalated.append((row.id, role, row.correlation_id))
                history.append({"at": now, "correlation_id": row.correlation_id, "canonical_id": None,
                                "stage": "task_escalated", "connection": None, "ref": row.id,
                                "detail": f"{row.kind} overdue: moved from {row.owner_role} to {role}"})
            conn.execute(
                update(flow_tasks).where(flow_tasks.c.id == bindparam("b_id"))
                .values(owner_role=bindparam("b_role"), escalated_at=now, updated_at=now),
                changes,
            )
            conn.execute(timeline.insert(), history)
            stats.escalated = len(rows)
        for task_id, role, correlation_id in escalated:
            log.warning("task overdue, escalated", task_id=task_id, to_role=role, correlation_id=correlation_id)

    # -- pass 4: steps ---------------------------------------------------------------------------
    def advance(self, stats: TickStats, now: float) -> None:
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(flow_instances)
                .where(or_(
                    flow_instances.c.state == "runnable",
                    and_(flow_instances.c.state.in_(WAITING_STATES), flow_instances.c.wake_at <= now),
                ))
                .order_by(flow_instances.c.updated_at)
                .limit(self.settings.batch_size)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return
            batch = _Batch(now)
            facts = _Facts(conn)
            for row in rows:
                self._run_instance(conn, row, batch, facts)
            batch.write(conn, self.engine)
            stats.advanced = len(rows)
            stats.deliveries = len(batch.deliveries)
            stats.finished = batch.finished
        for failure in batch.failures:
            log.error("flow step failed", **failure)

    def _run_instance(self, conn: Connection, row: Any, batch: _Batch, facts: _Facts) -> None:
        now = batch.now
        flow = self.registry.get(row.flow, row.version)
        if flow is None:
            # A version that is no longer deployed: leave the instance untouched for an operator.
            batch.failures.append({"instance_id": row.id, "correlation_id": row.correlation_id,
                                   "error": f"flow {row.flow} v{row.version} not registered"})
            return
        waiting = orjson.loads(row.waiting_on) if row.waiting_on else {}
        if row.state == "runnable":
            resume = _decode_resume(orjson.loads(row.resume) if row.resume else {"kind": "goto"})
        else:
            resume = Resume("timeout")
        carried: dict[str, str] = dict(waiting.get("deliveries") or {})
        consumed: list[int] = []
        if resume.kind == "signal":
            signal = _next_signal(conn, row.id, waiting.get("signals", ()), consumed)
            if signal is None:
                # Woken for a signal another run already consumed: wait again as before.
                batch.instances.append(_instance_values(row.id, row.state, row.step, row.seq, row.data,
                                                        row.waiting_on, row.wake_at, row.check_at, None, now, None))
                return
            resume = Resume("signal", signal=signal)
        elif resume.kind == "deliveries":
            carried = {}
        data: dict[str, Any] = orjson.loads(row.data)
        step, seq = row.step, row.seq
        effects: list[StepContext] = []
        pending: dict[str, str] = {}
        final: tuple[str, str | None] | None = None
        next_waiting: dict[str, Any] | None = None
        wake_at: float | None = None
        error: str | None = None
        for _ in range(_MAX_STEPS_PER_RUN):
            seq += 1
            ctx = StepContext(
                instance_id=row.id, flow=row.flow, version=row.version, key=row.key,
                correlation_id=row.correlation_id, step=step, seq=seq, data=data, resume=resume, now=now,
                settings=self.settings, facts=facts,
            )
            function = flow.steps.get(step)
            try:
                if function is None:
                    raise LookupError(f"flow {flow.name} v{flow.version} has no step {step!r}")
                transition = function(ctx)
            except Exception as exc:
                error = f"{step}: {type(exc).__name__}: {exc}"[:2000]
                break
            effects.append(ctx)
            pending.update({item.name: item.dedupe_key for item in ctx.deliveries})
            if isinstance(transition, Goto):
                step, resume = transition.step, Resume("goto")
                continue
            if isinstance(transition, Finish):
                final = (transition.state, transition.reason)
                break
            assert isinstance(transition, Wait)
            step = transition.next
            awaited: dict[str, str] = {}
            if transition.deliveries:
                awaited = pending or carried
                pending, carried = {}, awaited
                if not awaited:
                    resume = Resume("deliveries")
                    continue
            if transition.signals:
                signal = _next_signal(conn, row.id, transition.signals, consumed)
                if signal is not None:
                    resume = Resume("signal", signal=signal)
                    continue
            if transition.task:
                decision = _decided(conn, transition.task)
                if decision is not None:
                    resume = Resume("task", task=decision)
                    continue
            next_waiting = {"deliveries": awaited, "task": transition.task, "signals": list(transition.signals)}
            wake_at = now + transition.timeout if transition.timeout is not None else None
            break
        else:
            error = f"more than {_MAX_STEPS_PER_RUN} steps without waiting (loop in the flow?)"

        if error is not None:
            # Nothing of this run is applied: after a fix, retrying runs the same steps with the same keys.
            batch.failures.append({"instance_id": row.id, "flow": row.flow, "correlation_id": row.correlation_id,
                                   "error": error})
            batch.instances.append(_instance_values(row.id, "failed", row.step, row.seq, row.data, row.waiting_on,
                                                    None, None, error, now, now))
            batch.history.append(_history(now, row, "flow_failed", row.id, error))
            batch.finished += 1
            return
        for ctx in effects:
            batch.add_effects(row, ctx)
        batch.consumed.extend(consumed)
        if final is not None:
            state, reason = final
            batch.instances.append(_instance_values(row.id, state, step, seq, _dumps(data), None, None, None,
                                                    reason, now, now))
            batch.history.append(_history(now, row, f"flow_{state}", row.id,
                                          f"{row.flow} v{row.version} {state}" + (f": {reason}" if reason else "")))
            batch.finished += 1
            return
        assert next_waiting is not None
        state = "waiting_for_task" if next_waiting["task"] else "waiting"
        batch.instances.append(_instance_values(
            row.id, state, step, seq, _dumps(data), _dumps(next_waiting), wake_at,
            now if next_waiting["deliveries"] else None, None, now, None,
        ))


def _history(now: float, row: Any, stage: str, ref: str, detail: str) -> dict[str, Any]:
    return {"at": now, "correlation_id": row.correlation_id, "canonical_id": row.key, "stage": stage[:32],
            "connection": None, "ref": ref[:64], "detail": detail}


def _instance_values(
    instance_id: str, state: str, step: str, seq: int, data: str, waiting_on: str | None, wake_at: float | None,
    check_at: float | None, error: str | None, now: float, finished_at: float | None,
) -> dict[str, Any]:
    return {"b_id": instance_id, "b_state": state, "b_step": step, "b_seq": seq, "b_data": data,
            "b_waiting": waiting_on, "b_wake": wake_at, "b_check": check_at, "b_error": error, "b_now": now,
            "b_finished": finished_at}


def _decode_resume(raw: Mapping[str, Any]) -> Resume:
    kind = str(raw.get("kind", "goto"))
    outcomes = {name: DeliveryOutcome(**value) for name, value in (raw.get("deliveries") or {}).items()}
    task = TaskDecision(**raw["task"]) if raw.get("task") else None
    return Resume(kind, deliveries=outcomes, task=task)


def _next_signal(conn: Connection, instance_id: str, names: Sequence[str], consumed: list[int]) -> FlowEvent | None:
    if not names:
        return None
    query = (
        select(flow_signals)
        .where(flow_signals.c.instance_id == instance_id, flow_signals.c.consumed_at.is_(None),
               flow_signals.c.name.in_(list(names)))
        .order_by(flow_signals.c.id)
    )
    if consumed:
        query = query.where(flow_signals.c.id.not_in(consumed))
    row = conn.execute(query.limit(1)).first()
    if row is None:
        return None
    consumed.append(row.id)
    data = orjson.loads(row.data)
    return FlowEvent(row.event_id, row.name, row.source, data.get("id"), instance_id, row.sequence, data)


def _decided(conn: Connection, task_id: str) -> TaskDecision | None:
    row = conn.execute(select(flow_tasks).where(flow_tasks.c.id == task_id)).first()
    if row is None or row.state != "completed":
        return None
    return TaskDecision(row.id, row.kind, row.outcome, row.reason, row.completed_by)


class _Batch:
    """The writes of one advance pass, applied in one transaction."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.instances: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []
        self.tasks: list[dict[str, Any]] = []
        self.cancelled: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self.consumed: list[int] = []
        self.failures: list[dict[str, Any]] = []
        self.finished = 0

    def add_effects(self, row: Any, ctx: StepContext) -> None:
        now = self.now
        done = [f"{item.connection}.{item.operation}" for item in ctx.deliveries]
        detail = f"{row.flow} v{row.version} step {ctx.step} ({ctx.resume.kind})"
        if done:
            detail += " → " + ", ".join(done)
        self.history.append(_history(now, row, "flow_step", row.id, detail))
        for note in ctx.notes:
            self.history.append(_history(now, row, "flow_note", row.id, note))
        for item in ctx.deliveries:
            self.deliveries.append(_delivery_row(row, item, now))
        for task in ctx.tasks:
            self.tasks.append(_task_row(row, task, now))
            self.history.append(_history(now, row, "task_opened", task.id,
                                         f"{task.kind} for {task.owner_role}: {task.title}"))
        for task_id, reason in ctx.cancelled_tasks:
            self.cancelled.append({"b_id": task_id, "b_reason": reason})
            self.history.append(_history(now, row, "task_cancelled", task_id, reason))

    def write(self, conn: Connection, engine: Engine) -> None:
        now = self.now
        if self.deliveries:
            conn.execute(insert_ignore(engine, deliveries), self.deliveries)
        if self.tasks:
            conn.execute(insert_ignore(engine, flow_tasks), self.tasks)
        if self.cancelled:
            conn.execute(
                update(flow_tasks)
                .where(flow_tasks.c.id == bindparam("b_id"), flow_tasks.c.state.in_(("open", "claimed")))
                .values(state="cancelled", reason=bindparam("b_reason"), completed_at=now, updated_at=now),
                self.cancelled,
            )
        if self.consumed:
            conn.execute(update(flow_signals).where(flow_signals.c.id.in_(self.consumed)).values(consumed_at=now))
        if self.instances:
            conn.execute(
                update(flow_instances).where(flow_instances.c.id == bindparam("b_id")).values(
                    state=bindparam("b_state"), step=bindparam("b_step"), seq=bindparam("b_seq"),
                    data=bindparam("b_data"), waiting_on=bindparam("b_waiting"), resume=None,
                    wake_at=bindparam("b_wake"), check_at=bindparam("b_check"), error=bindparam("b_error"),
                    updated_at=bindparam("b_now"), finished_at=bindparam("b_finished"),
                ),
                self.instances,
            )
        if self.history:
            conn.execute(timeline.insert(), self.history)


def _delivery_row(row: Any, item: IssuedDelivery, now: float) -> dict[str, Any]:
    return {
        "connection": item.connection, "operation": item.operation,
        "ordering_key": f"{item.connection}:{item.canonical_id}",
        "after_key": f"{item.connection}:{item.after}" if item.after else None,
        "dedupe_key": item.dedupe_key, "idempotency_key": item.idempotency_key,
        "canonical_id": item.canonical_id, "event_type": f"flow.{row.flow}"[:64],
        "correlation_id": row.correlation_id, "source_inbox_id": None, "payload": _dumps(item.payload),
        "state": "pending", "attempts": 0, "next_attempt_at": now, "last_error": None,
        "created_at": now, "updated_at": now,
    }


def _task_row(row: Any, task: OpenedTask, now: float) -> dict[str, Any]:
    return {
        "id": task.id, "instance_id": row.id, "flow": row.flow, "correlation_id": row.correlation_id,
        "kind": task.kind, "title": task.title, "owner_role": task.owner_role, "state": "open",
        "due_at": now + task.due_in if task.due_in is not None else None,
        "escalation": _dumps({"to_role": task.escalate_to}) if task.escalate_to else None,
        "escalated_at": None, "data": _dumps(task.data), "outcomes": _dumps(list(task.outcomes)),
        "claimed_by": None, "claimed_at": None, "completed_by": None, "completed_at": None,
        "outcome": None, "reason": None, "created_at": now, "updated_at": now,
    }
