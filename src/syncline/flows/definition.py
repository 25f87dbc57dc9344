"""How a flow is written: named steps, explicit waits, deliveries and tasks as step effects.

A flow is a :class:`Flow` with a name, a version, the events that start it, the events it
listens to, and step functions. A step receives a :class:`StepContext`, reads and changes
``ctx.data`` (JSON), may issue deliveries and open tasks through the context, and returns what
happens next: :meth:`StepContext.goto`, :meth:`StepContext.wait` or :meth:`StepContext.finish`.

Steps must be deterministic functions of ``ctx``: the engine commits a step's state change and
the deliveries it issued in one transaction, and after a crash runs the step again from the
last committed state with the same keys.

Example::

    greet = Flow("greet", version=1)
    greet.starts_on("account.created", key=lambda event, settings: event.subject)

    @greet.step("hello", initial=True)
    def hello(ctx: StepContext) -> Transition:
        ctx.deliver("welcome", "crm", "upsert_account", ctx.data["event"])
        return ctx.wait(next="done", deliveries=True, timeout=60)

    @greet.step("done")
    def done(ctx: StepContext) -> Transition:
        if ctx.resume.kind == "timeout":
            return ctx.finish("failed", "crm did not answer")
        return ctx.finish("completed")
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from syncline.flows.settings import FlowsSettings

_KEYS = uuid.UUID("b0f7a7c2-6a55-4c8e-8d1e-3b1f3c4a9e21")

FinalState = Literal["completed", "compensated", "cancelled", "failed"]
#: Instance states that will not change again.
FINAL_STATES: tuple[str, ...] = ("completed", "compensated", "cancelled", "failed")
WAITING_STATES: tuple[str, ...] = ("waiting", "waiting_for_task")


@dataclass(frozen=True)
class FlowEvent:
    """A canonical event as a flow sees it."""

    id: str
    type: str
    source: str
    subject: str | None
    correlation_id: str
    sequence: str | None
    data: Mapping[str, Any]


#: Maps an event (and the flow settings) to an instance key; None means "not for this flow".
KeyFn = Callable[[FlowEvent, FlowsSettings], str | None]


@dataclass(frozen=True)
class DeliveryOutcome:
    """How one delivery a flow issued ended."""

    state: str  # done | parked | skipped
    external_id: str | None = None
    error_class: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == "done"


@dataclass(frozen=True)
class TaskDecision:
    """A person's decision on a task."""

    task_id: str
    kind: str
    outcome: str
    reason: str | None
    decided_by: str


@dataclass(frozen=True)
class Resume:
    """Why a step runs: ``start``, ``goto``, ``deliveries``, ``timeout``, ``task`` or ``signal``."""

    kind: str
    deliveries: Mapping[str, DeliveryOutcome] = field(default_factory=dict)
    task: TaskDecision | None = None
    signal: FlowEvent | None = None

    @property
    def failed(self) -> dict[str, DeliveryOutcome]:
        """The awaited deliveries that did not succeed, by name."""
        return {name: outcome for name, outcome in self.deliveries.items() if not outcome.ok}


@dataclass(frozen=True)
class Goto:
    step: str


@dataclass(frozen=True)
class Wait:
    next: str
    deliveries: bool = False
    task: str | None = None
    signals: tuple[str, ...] = ()
    timeout: float | None = None


@dataclass(frozen=True)
class Finish:
    state: FinalState
    reason: str | None = None


Transition = Goto | Wait | Finish


@dataclass(frozen=True)
class IssuedDelivery:
    """An outbox row a step asked for."""

    name: str
    connection: str
    operation: str
    canonical_id: str
    payload: Mapping[str, Any]
    after: str | None
    dedupe_key: str
    idempotency_key: str


@dataclass(frozen=True)
class OpenedTask:
    """A human task a step opened."""

    id: str
    kind: str
    title: str
    owner_role: str
    due_in: float | None
    escalate_to: str | None
    data: Mapping[str, Any]
    outcomes: tuple[str, ...]


class FactSource(Protocol):
    """Read access to the latest known canonical objects (accounts, opportunities)."""

    def get(self, canonical_id: str) -> dict[str, Any] | None: ...

    def latest_for_account(self, object_type: str, account_id: str) -> dict[str, Any] | None: ...

    def similar_accounts(self, account: Mapping[str, Any]) -> list[dict[str, Any]]: ...


class StepContext:
    """What a step sees and the effects it asks for; the engine applies them atomically."""

    def __init__(
        self,
        *,
        instance_id: str,
        flow: str,
        version: int,
        key: str,
        correlation_id: str,
        step: str,
        seq: int,
        data: dict[str, Any],
        resume: Resume,
        now: float,
        settings: FlowsSettings,
        facts: FactSource,
    ) -> None:
        self.instance_id = instance_id
        self.flow = flow
        self.version = version
        self.key = key
        self.correlation_id = correlation_id
        self.step = step
        self.seq = seq
        self.data = data
        self.resume = resume
        self.now = now
        self.settings = settings
        self.facts = facts
        self.deliveries: list[IssuedDelivery] = []
        self.tasks: list[OpenedTask] = []
        self.cancelled_tasks: list[tuple[str, str]] = []
        self.notes: list[str] = []

    # -- effects ---------------------------------------------------------------------------
    def deliver(
        self,
        name: str,
        connection: str,
        operation: str,
        payload: BaseModel | Mapping[str, Any],
        *,
        after: str | None = None,
    ) -> None:
        """Issue ``operation`` on ``connection`` for ``payload`` (a canonical object) through the outbox.

        ``name`` identifies the delivery within the step (``ctx.resume.deliveries[name]``);
        ``after`` names a canonical id whose earlier deliveries on the same connection go first.
        """
        body = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else dict(payload)
        canonical_id = str(body["id"])
        dedupe = f"flow:{self.instance_id}:{self.seq}:{name}"
        self.deliveries.append(IssuedDelivery(
            name=name, connection=connection, operation=operation, canonical_id=canonical_id, payload=body,
            after=after, dedupe_key=dedupe, idempotency_key=str(uuid.uuid5(_KEYS, dedupe)),
        ))

    def open_task(
        self,
        kind: str,
        title: str,
        *,
        outcomes: Sequence[str],
        data: Mapping[str, Any] | None = None,
        owner_role: str = "operator",
        due_in: float | None = None,
        escalate_to: str | None = None,
    ) -> str:
        """Open a human task and return its id; wait for it with ``ctx.wait(task=...)``.

        ``due_in`` defaults to the configured ``task_due_seconds``; when it passes, the task
        moves to ``escalate_to`` (default: the configured escalation role).
        """
        if not outcomes:
            raise ValueError("a task needs at least one allowed outcome")
        task_id = "tsk_" + uuid.uuid5(_KEYS, f"{self.instance_id}/{self.seq}/{kind}").hex[:24]
        self.tasks.append(OpenedTask(
            id=task_id, kind=kind, title=title, owner_role=owner_role,
            due_in=self.settings.task_due_seconds if due_in is None else due_in,
            escalate_to=escalate_to or self.settings.escalate_to, data=dict(data or {}), outcomes=tuple(outcomes),
        ))
        return task_id

    def cancel_task(self, task_id: str, reason: str) -> None:
        """Close an open task that no longer needs a decision (the flow moved on)."""
        self.cancelled_tasks.append((task_id, reason))

    def note(self, text: str) -> None:
        """Add a line to the instance's timeline."""
        self.notes.append(text)

    # -- transitions -------------------------------------------------------------------------
    def goto(self, step: str) -> Goto:
        """Continue with ``step`` in the same transaction."""
        return Goto(step)

    def wait(
        self,
        *,
        next: str,
        deliveries: bool = False,
        task: str | None = None,
        signals: Iterable[str] = (),
        timeout: float | None = None,
    ) -> Wait:
        """Persist and wait for the first of: the awaited deliveries settled, the task decided,
        one of the ``signals`` (event types) arrived, or ``timeout`` seconds passed (durable timer).
        Then run ``next`` with ``ctx.resume`` saying which."""
        return Wait(next=next, deliveries=deliveries, task=task, signals=tuple(signals), timeout=timeout)

    def finish(self, state: FinalState, reason: str | None = None) -> Finish:
        """End the instance in ``state``."""
        return Finish(state, reason)


Step = Callable[[StepContext], Transition]


class Flow:
    """A named, versioned flow definition: start events, listened events, steps."""

    def __init__(self, name: str, *, version: int, description: str = "") -> None:
        if version < 1:
            raise ValueError("flow versions start at 1")
        self.name = name
        self.version = version
        self.description = description
        self.steps: dict[str, Step] = {}
        self.initial: str | None = None
        self.start_events: dict[str, KeyFn] = {}
        self.signal_events: dict[str, KeyFn] = {}
        #: Canonical object types whose latest state the engine keeps for this flow's steps.
        self.fact_types: set[str] = set()

    def step(self, name: str, *, initial: bool = False) -> Callable[[Step], Step]:
        """Register a step function under ``name`` (decorator)."""

        def register(function: Step) -> Step:
            if name in self.steps:
                raise ValueError(f"flow {self.name} v{self.version}: step {name!r} defined twice")
            if initial:
                if self.initial is not None:
                    raise ValueError(f"flow {self.name} v{self.version}: two initial steps")
                self.initial = name
            self.steps[name] = function
            return function

        return register

    def starts_on(self, event_type: str, *, key: KeyFn) -> None:
        """Start one instance per ``key(event)`` when ``event_type`` arrives (None: do not start)."""
        self.start_events[event_type] = key

    def listens_to(self, event_type: str, *, key: KeyFn) -> None:
        """Deliver ``event_type`` as a signal to the instance ``key(event)`` (queued until consumed)."""
        self.signal_events[event_type] = key

    def keeps_facts(self, *object_types: str) -> None:
        """Keep the latest state of these canonical object types for ``ctx.facts``."""
        self.fact_types.update(object_types)

    def instance_id(self, key: str) -> str:
        """Return the id of this flow's instance for ``key`` (stable across versions)."""
        candidate = f"{self.name}:{key}"
        if len(candidate) <= 128:
            return candidate
        return f"{self.name}:{uuid.uuid5(_KEYS, key).hex}"

    def check(self) -> None:
        """Raise ValueError unless the definition is complete."""
        if self.initial is None:
            raise ValueError(f"flow {self.name} v{self.version} has no initial step")
        if not self.start_events:
            raise ValueError(f"flow {self.name} v{self.version} starts on no event")


class FlowRegistry:
    """The explicit list of flow definitions; one (name, version) once. New instances start on
    the newest version; running instances finish on the version they started on."""

    def __init__(self, flows: Iterable[Flow] = ()) -> None:
        self._flows: dict[tuple[str, int], Flow] = {}
        for flow in flows:
            self.register(flow)

    def register(self, flow: Flow) -> None:
        flow.check()
        if (flow.name, flow.version) in self._flows:
            raise ValueError(f"flow {flow.name} v{flow.version} registered twice")
        self._flows[(flow.name, flow.version)] = flow

    def get(self, name: str, version: int) -> Flow | None:
        return self._flows.get((name, version))

    def latest(self) -> list[Flow]:
        """The newest version of each flow."""
        newest: dict[str, Flow] = {}
        for flow in self._flows.values():
            if flow.name not in newest or flow.version > newest[flow.name].version:
                newest[flow.name] = flow
        return list(newest.values())

    def all(self) -> list[Flow]:
        return list(self._flows.values())

    def event_types(self) -> set[str]:
        """Every event type some registered flow starts on, listens to or keeps as a fact."""
        types: set[str] = set()
        for flow in self._flows.values():
            types.update(flow.start_events, flow.signal_events)
            types.update(f"{kind}.*" for kind in flow.fact_types)
        return types

    def fact_types(self) -> set[str]:
        types: set[str] = set()
        for flow in self._flows.values():
            types.update(flow.fact_types)
        return types

    def __len__(self) -> int:
        return len(self._flows)
