"""``/v1/tasks``: list, read, claim and complete the human tasks flows wait for.

Reading needs the ``viewer`` role, claiming and completing ``operator``. Every claim and
decision is written to the audit log with the caller's key, and the decision to the task row
and the flow's timeline.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from syncline.api.auth import ApiProblem, Principal, Role, require_role
from syncline.flows.tasks import TaskConflict, TaskError, TaskNotFound, claim_task, complete_task, get_task, list_tasks

__all__ = ["router"]

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])

Viewer = Annotated[Principal, Depends(require_role(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require_role(Role.OPERATOR))]


class Completion(BaseModel):
    """A decision on a task: one of its allowed outcomes, and why."""

    outcome: str = Field(min_length=1, max_length=64)
    reason: str | None = Field(default=None, max_length=2000)


class Claim(BaseModel):
    """Take over a task someone else claimed (``force``)."""

    force: bool = False


def _problem(exc: TaskError) -> ApiProblem:
    if isinstance(exc, TaskNotFound):
        return ApiProblem(404, "Task not found", exc.message, exc.code)
    if isinstance(exc, TaskConflict):
        return ApiProblem(409, "Task not open to you", exc.message, exc.code)
    return ApiProblem(422, "Decision not allowed", exc.message, exc.code)


@router.get("", summary="List tasks")
async def tasks_index(
    request: Request,
    _principal: Viewer,
    state: Annotated[str | None, Query(description="open, claimed, completed, cancelled, or active")] = "active",
    kind: str | None = None,
    owner_role: str | None = None,
    flow: str | None = None,
    instance_id: str | None = None,
    correlation_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Tasks oldest first (default: the open and claimed ones)."""
    found = await asyncio.to_thread(
        list_tasks, request.app.state.syncline.engine, state=state, kind=kind, owner_role=owner_role, flow=flow,
        instance_id=instance_id, correlation_id=correlation_id, limit=limit,
    )
    return {"items": [task.as_dict() for task in found], "count": len(found)}


@router.get("/{task_id}", summary="One task with the data needed to decide", responses={404: {}})
async def task_detail(request: Request, task_id: str, _principal: Viewer) -> dict[str, Any]:
    try:
        task = await asyncio.to_thread(get_task, request.app.state.syncline.engine, task_id)
    except TaskError as exc:
        raise _problem(exc) from None
    return task.as_dict()


@router.post("/{task_id}/claim", summary="Claim a task", responses={404: {}, 409: {}})
async def task_claim(request: Request, task_id: str, principal: Operator, body: Claim | None = None) -> dict[str, Any]:
    try:
        task = await asyncio.to_thread(
            claim_task, request.app.state.syncline.engine, task_id, principal.name, principal=principal,
            force=bool(body and body.force),
        )
    except TaskError as exc:
        raise _problem(exc) from None
    return task.as_dict()


@router.post("/{task_id}/complete", summary="Decide a task; the waiting flow resumes",
             responses={404: {}, 409: {}, 422: {}})
async def task_complete(request: Request, task_id: str, body: Completion, principal: Operator) -> dict[str, Any]:
    try:
        task = await asyncio.to_thread(
            complete_task, request.app.state.syncline.engine, task_id, body.outcome, principal.name,
            reason=body.reason, principal=principal,
        )
    except TaskError as exc:
        raise _problem(exc) from None
    return task.as_dict()
