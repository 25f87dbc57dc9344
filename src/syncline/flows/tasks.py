"""Human tasks: list, claim and complete the decisions flows wait for.

Completing a task records who decided what, when and why on the task row, writes the decision
to the instance's timeline and to the audit log, and — in the same transaction — makes the
waiting instance runnable with the decision as its resume reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection, Engine, select, update

from syncline.errors import SynclineError
from syncline.flows._tables import flow_instances, flow_tasks
from syncline.flows.definition import WAITING_STATES
from syncline.store import timeline

if TYPE_CHECKING:
    from syncline.api.auth import Principal


class TaskError(SynclineError):
    """A task action that cannot be applied; ``code`` says why."""

    default_code = "task_invalid"


class TaskNotFound(TaskError):
    default_code = "task_not_found"


class TaskConflict(TaskError):
    """The task is closed, or claimed by someone else."""

    default_code = "task_conflict"


@dataclass(frozen=True)
class Task:
    """One human task as read back."""

    id: str
    instance_id: str
    flow: str
    correlation_id: str
    kind: str
    title: str
    owner_role: str
    state: str
    due_at: float | None
    escalated_at: float | None
    data: dict[str, Any]
    outcomes: list[str]
    claimed_by: str | None
    claimed_at: float | None
    completed_by: str | None
    completed_at: float | None
    outcome: str | None
    reason: str | None
    created_at: float

    def as_dict(self) -> dict[str, Any]:
        """Return the task as JSON-ready data."""
        return dict(self.__dict__)


def _task(row: Any) -> Task:
    return Task(
        id=row.id, instance_id=row.instance_id, flow=row.flow, correlation_id=row.correlation_id, kind=row.kind,
        title=row.title, owner_role=row.owner_role, state=row.state, due_at=row.due_at,
        escalated_at=row.escalated_at, data=orjson.loads(row.data), outcomes=orjson.loads(row.outcomes),
        claimed_by=row.claimed_by, claimed_at=row.claimed_at, completed_by=row.completed_by,
        completed_at=row.completed_at, outcome=row.outcome, reason=row.reason, created_at=row.created_at,
    )


def list_tasks(
    engine: Engine,
    *,
    state: str | None = None,
    kind: str | None = None,
    owner_role: str | None = None,
    flow: str | None = None,
    instance_id: str | None = None,
    correlation_id: str | None = None,
    limit: int = 100,
) -> list[Task]:
    """Return tasks, oldest first, filtered by the given fields (``state="active"``: open or claimed)."""
    query = select(flow_tasks).order_by(flow_tasks.c.created_at, flow_tasks.c.id).limit(limit)
    if state == "active":
        query = query.where(flow_tasks.c.state.in_(("open", "claimed")))
    elif state:
        query = query.where(flow_tasks.c.state == state)
    for column, value in ((flow_tasks.c.kind, kind), (flow_tasks.c.owner_role, owner_role),
                          (flow_tasks.c.flow, flow), (flow_tasks.c.instance_id, instance_id),
                          (flow_tasks.c.correlation_id, correlation_id)):
        if value:
            query = query.where(column == value)
    with engine.connect() as conn:
        return [_task(row) for row in conn.execute(query)]


def get_task(engine: Engine, task_id: str) -> Task:
    """Return the task ``task_id`` or raise :class:`TaskNotFound`."""
    with engine.connect() as conn:
        row = conn.execute(select(flow_tasks).where(flow_tasks.c.id == task_id)).first()
    if row is None:
        raise TaskNotFound(f"no task {task_id!r}")
    return _task(row)


def _locked(conn: Connection, task_id: str) -> Any:
    row = conn.execute(select(flow_tasks).where(flow_tasks.c.id == task_id).with_for_update()).first()
    if row is None:
        raise TaskNotFound(f"no task {task_id!r}")
    if row.state not in ("open", "claimed"):
        raise TaskConflict(f"task {task_id} is {row.state}", code="task_closed")
    return row


def _record(conn: Connection, row: Any, stage: str, detail: str, now: float) -> None:
    conn.execute(timeline.insert().values(
        at=now, correlation_id=row.correlation_id, canonical_id=None, stage=stage, connection=None,
        ref=row.id, detail=detail,
    ))


def _audit(conn: Connection, principal: Principal | None, actor: str, action: str, task_id: str,
           detail: dict[str, Any]) -> None:
    from syncline.api.auth import Principal, Role
    from syncline.observe.audit import audit

    who = principal or Principal(key_id="cli", name=actor, role=Role.OPERATOR)
    audit(conn, who, action, f"task:{task_id}", detail)


def claim_task(engine: Engine, task_id: str, actor: str, *, principal: Principal | None = None,
               force: bool = False) -> Task:
    """Claim an open task for ``actor``; a task claimed by someone else needs ``force``."""
    now = time.time()
    with engine.begin() as conn:
        row = _locked(conn, task_id)
        if row.state == "claimed" and row.claimed_by != actor and not force:
            raise TaskConflict(f"task {task_id} is claimed by {row.claimed_by}", code="task_claimed")
        conn.execute(update(flow_tasks).where(flow_tasks.c.id == task_id).values(
            state="claimed", claimed_by=actor, claimed_at=now, updated_at=now,
        ))
        _record(conn, row, "task_claimed", f"{row.kind} claimed by {actor}", now)
        _audit(conn, principal, actor, "task.claim", task_id, {"kind": row.kind, "previous": row.claimed_by})
    return get_task(engine, task_id)


def complete_task(
    engine: Engine,
    task_id: str,
    outcome: str,
    actor: str,
    *,
    reason: str | None = None,
    principal: Principal | None = None,
) -> Task:
    """Record ``actor``'s decision and resume the instance waiting for it, in one transaction.

    A task claimed by someone else cannot be completed until it is claimed again (with force).
    """
    now = time.time()
    with engine.begin() as conn:
        row = _locked(conn, task_id)
        outcomes = orjson.loads(row.outcomes)
        if outcome not in outcomes:
            raise TaskError(f"outcome {outcome!r} is not allowed for {row.kind}; allowed: {', '.join(outcomes)}",
                            code="task_outcome_invalid")
        if row.state == "claimed" and row.claimed_by != actor:
            raise TaskConflict(f"task {task_id} is claimed by {row.claimed_by}", code="task_claimed")
        conn.execute(update(flow_tasks).where(flow_tasks.c.id == task_id).values(
            state="completed", completed_by=actor, completed_at=now, outcome=outcome, reason=reason,
            updated_at=now,
        ))
        _record(conn, row, "task_completed", f"{row.kind}: {outcome} by {actor}" + (f" — {reason}" if reason else ""),
                now)
        _audit(conn, principal, actor, "task.complete", task_id,
               {"kind": row.kind, "outcome": outcome, "reason": reason, "instance": row.instance_id})
        instance = conn.execute(
            select(flow_instances.c.state, flow_instances.c.waiting_on)
            .where(flow_instances.c.id == row.instance_id).with_for_update()
        ).first()
        if instance is not None and instance.state in WAITING_STATES and instance.waiting_on:
            waiting = orjson.loads(instance.waiting_on)
            if waiting.get("task") == task_id:
                decision = {"task_id": task_id, "kind": row.kind, "outcome": outcome, "reason": reason,
                            "decided_by": actor}
                conn.execute(update(flow_instances).where(flow_instances.c.id == row.instance_id).values(
                    state="runnable", resume=orjson.dumps({"kind": "task", "task": decision}).decode(),
                    updated_at=now,
                ))
    return get_task(engine, task_id)
