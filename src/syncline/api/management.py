"""The management API under ``/v1``: connections, events, deliveries, exceptions, replays, audit, keys.

Every endpoint names the role it needs (see :mod:`syncline.api.auth`); every error is RFC 9457
problem+json with a stable ``code``; payloads are PII-masked. ``/v1`` stays compatible: fields
and endpoints that are going away answer with ``Deprecation`` and ``Sunset`` headers first.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib
import importlib.util
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

import orjson
import structlog
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt
from sqlalchemy.exc import DataError, SQLAlchemyError
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from syncline.api import _actions, _queries
from syncline.api.auth import ApiProblem, Principal, Role, create_key, list_keys, require_role, revoke_key
from syncline.api.problems import problem
from syncline.observe import audit as audit_log
from syncline.observe.business import refresh_gauges
from syncline.observe.tracing import TraceMiddleware, configure_tracing
from syncline.pipeline import operations
from syncline.runtime import Syncline

__all__ = ["config_fingerprint", "mount", "record_config", "router"]

log = structlog.get_logger("syncline.api")


T = TypeVar("T")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str = Field(description="stable, machine-readable error code")


def _problem_response(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _problem_response("the body is not valid JSON"),
    401: _problem_response("no API key, or an unknown or revoked one"),
    403: _problem_response("the key's role does not allow this"),
    422: _problem_response("the request is invalid"),
    429: _problem_response("rate limit exceeded; see Retry-After"),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _problem_response("no such resource")}
CONFLICT: dict[int | str, dict[str, Any]] = {409: _problem_response("the resource is not in a state that allows this")}

router = APIRouter(prefix="/v1", responses=COMMON_RESPONSES)

Viewer = Annotated[Principal, Depends(require_role(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require_role(Role.OPERATOR))]
Admin = Annotated[Principal, Depends(require_role(Role.ADMIN))]
Limit = Annotated[int, Query(ge=1, le=_queries.PAGE_MAX, description="page size")]
AfterId = Annotated[int | None, Query(ge=0, le=2**62, description="return rows with a smaller id (next page)")]
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})$")


def _rfc3339(value: object) -> object:
    # pydantic's lax mode would take epoch numbers and naive times; the API promises RFC 3339 with an offset.
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("expected an RFC 3339 date-time with an offset, e.g. 2026-11-23T09:00:00Z")
    return value


Instant = Annotated[datetime, BeforeValidator(_rfc3339)]
Since = Annotated[Instant | None, Query(description="only rows at or after this time (RFC 3339)")]
Until = Annotated[Instant | None, Query(description="only rows before this time (RFC 3339)")]
Text = Annotated[str | None, Query(max_length=255)]


def _syncline(request: Request) -> Syncline:
    syncline: Syncline = request.app.state.syncline
    return syncline


def _pii(request: Request) -> list[str]:
    return list(_syncline(request).config.security.pii_fields)


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _refused(exc: _actions.ActionRefused) -> ApiProblem:
    titles = {404: "Not found", 409: "Conflict", 422: "Invalid request"}
    return ApiProblem(exc.status, titles.get(exc.status, "Refused"), exc.message, exc.code)


# --- models -----------------------------------------------------------------------------------


class ConnectionHealth(BaseModel):
    """One connection's health, budget use and backlog."""

    name: str
    vendor: str
    health: Literal["healthy", "degraded", "paused"]
    paused: bool
    paused_reason: str | None
    breaker: str
    budget_in_use: int
    budget_limit: int
    budget_ceiling: int
    rate_per_second: float | None
    pending: int
    inflight: int
    parked: int
    oldest_waiting_seconds: float | None
    open_exceptions: int
    delivered_last_hour: int


RowId = Annotated[StrictInt, Field(ge=0, le=2**62)]


class PauseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)


class Delivery(BaseModel):
    """One outbox row: a single operation against a target connection."""

    id: int
    connection: str
    operation: str
    ordering_key: str
    after_key: str | None
    dedupe_key: str
    idempotency_key: str
    canonical_id: str
    event_type: str
    correlation_id: str
    source_inbox_id: int | None
    state: str
    attempts: int
    next_attempt_at: float
    lease_until: float | None
    error_class: str | None
    last_error: str | None
    external_id: str | None
    created_at: float
    updated_at: float
    delivered_at: float | None


class DeliveryDetail(Delivery):
    payload: Any = Field(description="the canonical payload, PII fields masked")


class Event(BaseModel):
    """One inbox row: a vendor event as received."""

    id: int
    connection: str
    vendor_event_id: str
    vendor_event_type: str | None
    received_at: float
    state: str
    correlation_id: str | None
    error: str | None
    processed_at: float | None


class EventDetail(Event):
    body: Any = Field(description="the vendor payload, PII fields masked")


class ExceptionItem(BaseModel):
    """A parked delivery or event waiting for a person."""

    id: int
    source: Literal["delivery", "inbox"]
    ref_id: int
    connection: str
    error_class: str
    code: str
    reason: str
    correlation_id: str | None
    created_at: float
    resolved_at: float | None
    resolution: str | None
    operation: str | None = None
    event_type: str | None = None
    canonical_id: str | None = None
    delivery_state: str | None = None
    attempts: int | None = None


class ExceptionDetail(ExceptionItem):
    delivery: DeliveryDetail | None = None
    event: EventDetail | None = None


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_after_id: int | None = Field(description="pass as after_id for the next page; null on the last page")


class ActionResult(BaseModel):
    """What an action did: rows it matched, rows it changed, and its audit entry."""

    matched: int
    changed: int
    audit_seq: int


class RetryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=500)


class ResolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=1000, pattern=r"\S")


class EditRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payload: dict[str, Any] = Field(description="the corrected canonical payload; masked values are kept as stored")
    note: str | None = Field(default=None, max_length=500)


class ExceptionSelection(BaseModel):
    """Which open exceptions a bulk action covers."""

    model_config = ConfigDict(extra="forbid")

    ids: list[RowId] = Field(default_factory=list, max_length=10_000)
    connection: str | None = Field(default=None, max_length=64)
    error_class: str | None = Field(default=None, max_length=32)
    code: str | None = Field(default=None, max_length=64)
    source: Literal["delivery", "inbox"] | None = None
    correlation_id: str | None = Field(default=None, max_length=128)
    since: Instant | None = None
    until: Instant | None = None

    def to_filter(self) -> _queries.ExceptionFilter:
        return _queries.ExceptionFilter(
            ids=tuple(self.ids), state="open", connection=self.connection, error_class=self.error_class,
            code=self.code, source=self.source, correlation_id=self.correlation_id, since=_epoch(self.since),
            until=_epoch(self.until),
        )

    def is_empty(self) -> bool:
        return not any((self.ids, self.connection, self.error_class, self.code, self.source, self.correlation_id,
                        self.since, self.until))


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["retry", "resolve"]
    filter: ExceptionSelection
    reason: str | None = Field(default=None, max_length=1000, description="required to resolve")
    all_matching: StrictBool = Field(default=False, description="must be true when the filter is empty")


class ReplayRequest(BaseModel):
    """Which delivered rows to send again; at least one criterion."""

    model_config = ConfigDict(extra="forbid")

    ids: list[RowId] = Field(default_factory=list, max_length=10_000)
    connection: str | None = Field(default=None, max_length=64)
    correlation_id: str | None = Field(default=None, max_length=128)
    since: Instant | None = None
    until: Instant | None = None
    note: str | None = Field(default=None, max_length=500)


class TimelineEntry(BaseModel):
    id: int
    at: float
    correlation_id: str
    canonical_id: str | None
    stage: str
    connection: str | None
    ref: str | None
    detail: str | None


class Reference(BaseModel):
    system: str
    object_type: str
    external_id: str
    canonical_id: str
    created_at: float


class Transaction(BaseModel):
    """One business transaction across systems."""

    key: str
    canonical_ids: list[str]
    correlation_ids: list[str]
    timeline: list[TimelineEntry]
    deliveries: list[Delivery]
    references: list[Reference]


class AuditItem(BaseModel):
    seq: int
    at: float
    actor_id: str
    actor_name: str
    actor_role: str
    action: str
    target: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    items: list[AuditItem]
    next_before_seq: int | None


class AuditVerification(BaseModel):
    ok: bool
    rows_checked: int
    breaks: list[dict[str, Any]]


class KeyInfo(BaseModel):
    key_id: str
    name: str
    role: Role
    rate_per_minute: int | None
    created_at: float
    created_by: str
    revoked_at: float | None


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[\w .@-]+$")
    role: Role
    rate_per_minute: int | None = Field(default=None, ge=1, le=1_000_000)


class KeyCreated(BaseModel):
    key_id: str
    name: str
    role: Role
    key: str = Field(description="shown once; only its hash is stored")


# --- connections --------------------------------------------------------------------------------


@router.get("/connections", summary="List connections with health, budget use and backlog", tags=["connections"])
async def list_connections(request: Request, _p: Viewer) -> list[ConnectionHealth]:
    rows = await asyncio.to_thread(_queries.connection_health, _syncline(request))
    return [ConnectionHealth.model_validate(row) for row in rows]


def _connection(request: Request, name: str) -> dict[str, Any]:
    for row in _queries.connection_health(_syncline(request)):
        if row["name"] == name:
            return row
    raise ApiProblem(404, "Not found", f"no connection named {name!r}", "connection_unknown")


ConnectionName = Annotated[str, Path(max_length=64)]


@router.get("/connections/{name}", summary="One connection's health", tags=["connections"], responses=NOT_FOUND)
async def get_connection(request: Request, name: ConnectionName, _p: Viewer) -> ConnectionHealth:
    return ConnectionHealth.model_validate(await asyncio.to_thread(_connection, request, name))


@router.post("/connections/{name}/pause", summary="Stop deliveries to a connection", tags=["connections"],
             responses=NOT_FOUND)
async def pause_connection(request: Request, name: ConnectionName, body: PauseRequest,
                           principal: Admin) -> ConnectionHealth:
    """Rows keep waiting in the outbox until the connection is resumed."""
    await asyncio.to_thread(_connection, request, name)
    await asyncio.to_thread(_actions.set_paused, _syncline(request).engine, principal, name, True, body.reason)
    return ConnectionHealth.model_validate(await asyncio.to_thread(_connection, request, name))


@router.post("/connections/{name}/resume", summary="Resume deliveries to a connection", tags=["connections"],
             responses=NOT_FOUND)
async def resume_connection(request: Request, name: ConnectionName, principal: Admin) -> ConnectionHealth:
    await asyncio.to_thread(_connection, request, name)
    await asyncio.to_thread(_actions.set_paused, _syncline(request).engine, principal, name, False, None)
    return ConnectionHealth.model_validate(await asyncio.to_thread(_connection, request, name))


# --- events and deliveries ----------------------------------------------------------------------


def _page(rows: list[dict[str, Any]], limit: int) -> int | None:
    return int(rows[-1]["id"]) if len(rows) == limit and rows else None


@router.get("/events", summary="Search received vendor events", tags=["events"])
async def list_events(
    request: Request, _p: Viewer, connection: Text = None, vendor_event_id: Text = None,
    correlation_id: Text = None, state: Literal["received", "done", "ignored", "parked"] | None = None,
    since: Since = None, until: Until = None, limit: Limit = 50, after_id: AfterId = None,
) -> Page[Event]:
    search = _queries.EventSearch(connection, vendor_event_id, correlation_id, state, _epoch(since), _epoch(until))
    rows = await asyncio.to_thread(_queries.event_rows, _syncline(request).engine, search, limit=limit,
                                   after_id=after_id)
    return Page[Event](items=[Event.model_validate(row) for row in rows], next_after_id=_page(rows, limit))


@router.get("/events/{event_id:int}", summary="One received event with its (masked) body", tags=["events"],
            responses=NOT_FOUND)
async def get_event(request: Request, event_id: Annotated[int, Path(ge=0, le=2**62)], _p: Viewer) -> EventDetail:
    row = await asyncio.to_thread(_queries.event_detail, _syncline(request).engine, event_id, _pii(request))
    if row is None:
        raise ApiProblem(404, "Not found", f"no event {event_id}", "event_not_found")
    return EventDetail.model_validate(row)


@router.get("/deliveries", summary="Search deliveries", tags=["deliveries"])
async def list_deliveries(
    request: Request, _p: Viewer, correlation_id: Text = None, canonical_id: Text = None,
    vendor_id: Annotated[str | None, Query(max_length=255, description="an id in any system")] = None,
    connection: Text = None,
    state: Literal["pending", "inflight", "done", "parked", "skipped"] | None = None,
    event_type: Text = None, since: Since = None, until: Until = None, limit: Limit = 50, after_id: AfterId = None,
) -> Page[Delivery]:
    search = _queries.DeliverySearch(correlation_id, canonical_id, vendor_id, connection, state, event_type,
                                     _epoch(since), _epoch(until))
    rows = await asyncio.to_thread(_queries.delivery_rows, _syncline(request).engine, search, limit=limit,
                                   after_id=after_id)
    return Page[Delivery](items=[Delivery.model_validate(row) for row in rows], next_after_id=_page(rows, limit))


@router.get("/deliveries/{delivery_id:int}", summary="One delivery with its (masked) payload", tags=["deliveries"],
            responses=NOT_FOUND)
async def get_delivery(request: Request, delivery_id: Annotated[int, Path(ge=0, le=2**62)],
                       _p: Viewer) -> DeliveryDetail:
    row = await asyncio.to_thread(_queries.delivery_detail, _syncline(request).engine, delivery_id, _pii(request))
    if row is None:
        raise ApiProblem(404, "Not found", f"no delivery {delivery_id}", "delivery_not_found")
    return DeliveryDetail.model_validate(row)


@router.get("/transactions/{key}", summary="A business transaction's timeline across systems",
            tags=["deliveries"], responses=NOT_FOUND)
async def get_transaction(request: Request, key: Annotated[str, Path(min_length=1, max_length=255)],
                          _p: Viewer) -> Transaction:
    """``key`` is a correlation id, a canonical id or any system's id for the object."""
    found = await asyncio.to_thread(_queries.transaction, _syncline(request).engine, key)
    if not found["timeline"] and not found["deliveries"] and not found["references"]:
        raise ApiProblem(404, "Not found", f"nothing is known about {key!r}", "transaction_not_found")
    return Transaction.model_validate(found)


@router.post("/replays", summary="Deliver already-delivered rows again", tags=["deliveries"], status_code=202)
async def create_replay(request: Request, body: ReplayRequest, principal: Operator) -> ActionResult:
    """The rows keep their idempotency keys, so the target does not get a second record."""
    where = operations.Filter(ids=tuple(body.ids), connection=body.connection, correlation_id=body.correlation_id,
                              since=_epoch(body.since), until=_epoch(body.until))
    try:
        outcome = await asyncio.to_thread(_actions.replay, _syncline(request).engine, principal, where, body.note)
    except _actions.ActionRefused as exc:
        raise _refused(exc) from None
    return ActionResult(matched=outcome.matched, changed=outcome.changed, audit_seq=outcome.audit_seq)


# --- exceptions ---------------------------------------------------------------------------------

ExceptionId = Annotated[int, Path(ge=0, le=2**62)]


@router.get("/exceptions", summary="List exceptions (parked work waiting for a person)", tags=["exceptions"])
async def list_exceptions(
    request: Request, _p: Viewer, state: Literal["open", "resolved", "all"] = "open", connection: Text = None,
    error_class: Text = None, code: Text = None, source: Literal["delivery", "inbox"] | None = None,
    correlation_id: Text = None, since: Since = None, until: Until = None, limit: Limit = 50,
    after_id: AfterId = None,
) -> Page[ExceptionItem]:
    where = _queries.ExceptionFilter((), state, connection, error_class, code, source, correlation_id, _epoch(since),
                                     _epoch(until))
    rows = await asyncio.to_thread(_queries.exception_rows, _syncline(request).engine, where, limit=limit,
                                   after_id=after_id)
    return Page[ExceptionItem](items=[ExceptionItem.model_validate(row) for row in rows],
                               next_after_id=_page(rows, limit))


@router.get("/exceptions/{exception_id:int}", summary="One exception with its (masked) payload", tags=["exceptions"],
            responses=NOT_FOUND)
async def get_exception(request: Request, exception_id: ExceptionId, _p: Viewer) -> ExceptionDetail:
    row = await asyncio.to_thread(_queries.exception_detail, _syncline(request).engine, exception_id, _pii(request))
    if row is None:
        raise ApiProblem(404, "Not found", f"no exception {exception_id}", "exception_not_found")
    return ExceptionDetail.model_validate(row)


async def _one(request: Request, exception_id: ExceptionId) -> None:
    row = await asyncio.to_thread(_queries.exception_detail, _syncline(request).engine, exception_id, ())
    if row is None:
        raise ApiProblem(404, "Not found", f"no exception {exception_id}", "exception_not_found")
    if row["resolved_at"] is not None:
        raise ApiProblem(409, "Conflict", f"exception {exception_id} is already resolved", "exception_resolved")


@router.post("/exceptions/{exception_id:int}/retry", summary="Retry the parked work behind an exception",
             tags=["exceptions"], responses={**NOT_FOUND, **CONFLICT})
async def retry_exception(request: Request, exception_id: ExceptionId, principal: Operator,
                          body: RetryRequest | None = None) -> ActionResult:
    await _one(request, exception_id)
    outcome = await asyncio.to_thread(_actions.retry, _syncline(request).engine, principal,
                                      _queries.ExceptionFilter(ids=(exception_id,)), body.note if body else None)
    return ActionResult(matched=outcome.matched, changed=outcome.changed, audit_seq=outcome.audit_seq)


@router.put("/exceptions/{exception_id:int}/payload", summary="Correct a parked delivery's payload, then retry it",
            tags=["exceptions"], responses={**NOT_FOUND, **CONFLICT})
async def edit_exception_payload(request: Request, exception_id: ExceptionId, body: EditRequest,
                                 principal: Operator) -> ActionResult:
    """The payload is validated against the canonical model of the delivery's event type first."""
    try:
        outcome = await asyncio.to_thread(_actions.edit_and_retry, _syncline(request).engine, principal,
                                          exception_id, body.payload, body.note)
    except _actions.ActionRefused as exc:
        raise _refused(exc) from None
    return ActionResult(matched=outcome.matched, changed=outcome.changed, audit_seq=outcome.audit_seq)


@router.post("/exceptions/{exception_id:int}/resolve", summary="Close an exception without retrying",
             tags=["exceptions"], responses={**NOT_FOUND, **CONFLICT})
async def resolve_exception(request: Request, exception_id: ExceptionId, body: ResolveRequest,
                            principal: Operator) -> ActionResult:
    await _one(request, exception_id)
    try:
        outcome = await asyncio.to_thread(_actions.resolve, _syncline(request).engine, principal,
                                          _queries.ExceptionFilter(ids=(exception_id,)), body.reason)
    except _actions.ActionRefused as exc:
        raise _refused(exc) from None
    return ActionResult(matched=outcome.matched, changed=outcome.changed, audit_seq=outcome.audit_seq)


@router.post("/exceptions/bulk", summary="Retry or resolve every open exception matching a filter",
             tags=["exceptions"])
async def bulk_exceptions(request: Request, body: BulkRequest, principal: Operator) -> ActionResult:
    if body.filter.is_empty() and not body.all_matching:
        raise ApiProblem(422, "Invalid request", "an empty filter matches every open exception; "
                                                 "set all_matching to true to mean that", "filter_required")
    engine = _syncline(request).engine
    try:
        if body.action == "retry":
            outcome = await asyncio.to_thread(_actions.retry, engine, principal, body.filter.to_filter(), body.reason)
        else:
            outcome = await asyncio.to_thread(_actions.resolve, engine, principal, body.filter.to_filter(),
                                              body.reason or "")
    except _actions.ActionRefused as exc:
        raise _refused(exc) from None
    return ActionResult(matched=outcome.matched, changed=outcome.changed, audit_seq=outcome.audit_seq)


# --- audit and keys -----------------------------------------------------------------------------


@router.get("/audit", summary="Read the audit log, newest first", tags=["audit"])
async def list_audit(
    request: Request, _p: Viewer, action: Text = None, actor: Text = None, target: Text = None,
    before_seq: Annotated[int | None, Query(ge=0, le=2**62)] = None, limit: Limit = 50,
) -> AuditPage:
    rows = await asyncio.to_thread(audit_log.entries, _syncline(request).engine, action=action, actor=actor,
                                   target=target, before_seq=before_seq, limit=limit)
    items = [AuditItem.model_validate(row.__dict__) for row in rows]
    return AuditPage(items=items, next_before_seq=items[-1].seq if len(items) == limit and items else None)


@router.get("/audit/verify", summary="Verify the audit log's hash chain", tags=["audit"])
async def verify_audit(request: Request, _p: Admin) -> AuditVerification:
    checked, breaks = await asyncio.to_thread(audit_log.verify, _syncline(request).engine)
    return AuditVerification(ok=not breaks, rows_checked=checked,
                             breaks=[{"seq": b.seq, "problem": b.problem} for b in breaks])


@router.get("/keys", summary="List API keys (never the keys themselves)", tags=["keys"])
async def get_keys(request: Request, _p: Admin) -> list[KeyInfo]:
    rows = await asyncio.to_thread(list_keys, _syncline(request).engine)
    return [KeyInfo.model_validate(row) for row in rows]


@router.post("/keys", summary="Create an API key (shown once)", tags=["keys"], status_code=201)
async def post_key(request: Request, body: KeyRequest, principal: Admin) -> KeyCreated:
    engine = _syncline(request).engine
    key_id, key = await asyncio.to_thread(create_key, engine, body.name, body.role, created_by=principal.name,
                                          rate_per_minute=body.rate_per_minute)
    await asyncio.to_thread(audit_log.audit, engine, principal, "key.create", f"key:{key_id}",
                            {"name": body.name, "role": str(body.role), "rate_per_minute": body.rate_per_minute})
    return KeyCreated(key_id=key_id, name=body.name, role=body.role, key=key)


@router.delete("/keys/{key_id}", summary="Revoke an API key", tags=["keys"], status_code=204, responses=NOT_FOUND)
async def delete_key(request: Request, key_id: Annotated[str, Path(max_length=32)], principal: Admin) -> Response:
    engine = _syncline(request).engine
    if not await asyncio.to_thread(revoke_key, engine, key_id):
        raise ApiProblem(404, "Not found", f"no active key {key_id!r}", "key_not_found")
    await asyncio.to_thread(audit_log.audit, engine, principal, "key.revoke", f"key:{key_id}", {})
    return Response(status_code=204)


# --- deprecated ---------------------------------------------------------------------------------

STATUS_SUNSET = "Wed, 30 Jun 2027 00:00:00 GMT"


@router.get("/status", summary="Pipeline counts (deprecated: use /v1/connections)", tags=["connections"],
            deprecated=True)
async def legacy_status(request: Request, response: Response, _p: Viewer) -> dict[str, Any]:
    """Kept for clients of the first release; announces its end with ``Deprecation`` and ``Sunset``."""
    response.headers["Deprecation"] = "@1796083200"  # 2026-12-01T00:00:00Z, RFC 9745 form
    response.headers["Sunset"] = STATUS_SUNSET
    response.headers["Link"] = '</v1/connections>; rel="successor-version"'
    return await asyncio.to_thread(operations.status, _syncline(request).engine)


# --- mounting -----------------------------------------------------------------------------------


def mount(app: FastAPI, routers: Sequence[APIRouter] = ()) -> None:
    """Add the management API, the console, the flows API (when installed) and ``routers`` to ``app``."""

    @app.exception_handler(ApiProblem)
    async def _api_problem(_request: Request, exc: ApiProblem) -> JSONResponse:
        response = problem(exc.status_code, exc.title, str(exc.detail), exc.code)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(DataError)
    async def _unstorable(_request: Request, exc: DataError) -> JSONResponse:
        # Values the database cannot hold or compare (a NUL character in PostgreSQL text, a number out of range)
        # come from the request: answer 422, not 500.
        log.warning("request value refused by the store", error=type(exc.orig).__name__)
        return problem(422, "Invalid request", "a value in the request cannot be stored or searched "
                       "(control characters or out-of-range numbers)", "value_invalid")

    @app.exception_handler(405)
    async def _method_not_allowed(request: Request, _exc: Exception) -> JSONResponse:
        # Starlette's Allow names the first route that matched the path only; list every route's methods.
        allowed: set[str] = set()
        for route in app.router.routes:
            if isinstance(route, BaseRoute) and route.matches(request.scope)[0] != Match.NONE:
                allowed |= set(getattr(route, "methods", None) or ())
        response = problem(405, "Method not allowed", f"{request.method} is not allowed here", "method_not_allowed")
        response.headers["Allow"] = ", ".join(sorted(allowed))
        return response

    app.state.rate_limiter = _rate_limiter(app)
    record_config(app.state.syncline)
    app.add_middleware(_RefreshGauges, syncline=app.state.syncline)
    # Outermost, so the span and the log context cover every other middleware and route.
    app.add_middleware(TraceMiddleware)
    _configure_tracing_once()
    app.include_router(router)
    extra = list(routers)
    flows_router = _flows_router()
    if flows_router is not None and all(item is not flows_router for item in extra):
        extra.append(flows_router)
    for item in extra:
        # Their routes share the key check (401/403/429) and problem+json errors: document them alike.
        app.include_router(item, responses=COMMON_RESPONSES)
    from syncline.console import mount_console

    mount_console(app)


class _RefreshGauges:
    """ASGI middleware: read the store-derived gauges just before ``/metrics`` renders them."""

    def __init__(self, app: ASGIApp, syncline: Syncline) -> None:
        self.app = app
        self.syncline = syncline

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/metrics":
            try:
                await asyncio.to_thread(refresh_gauges, self.syncline)
            except Exception:
                # A scrape still answers with the counters when the store is unreachable.
                log.exception("metrics refresh failed")
        await self.app(scope, receive, send)


CONFIG_ACTOR = Principal("system", "syncline (configuration loaded)", Role.ADMIN)


def config_fingerprint(syncline: Syncline) -> dict[str, str]:
    """A hash per configuration section (each connection on its own); secrets appear only as ``**********``."""
    document = syncline.config.model_dump(mode="json")
    sections = {f"connections.{name}": value for name, value in document.pop("connections", {}).items()}
    sections.update(document)
    return {name: hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()
            for name, value in sections.items()}


def record_config(syncline: Syncline) -> int | None:
    """Audit the configuration if it differs from the last one recorded; return the entry's sequence number.

    The configuration is a file, not an API resource: its changes are seen when a process starts with it.
    """
    try:
        last = audit_log.entries(syncline.engine, action="config.change", limit=1)
    except SQLAlchemyError:
        return None  # the store is not migrated yet; `syncline run` migrates before serving
    current = config_fingerprint(syncline)
    previous: dict[str, str] = last[0].detail.get("sections", {}) if last else {}
    if current == previous:
        return None
    changed = sorted(name for name in current.keys() | previous.keys() if current.get(name) != previous.get(name))
    return audit_log.audit(syncline.engine, CONFIG_ACTOR, "config.change", "config",
                           {"changed": changed, "sections": current})


@functools.cache
def _configure_tracing_once() -> bool:
    return configure_tracing()


def _rate_limiter(app: FastAPI) -> Any:
    from syncline.api.auth import RateLimiter

    syncline: Syncline = app.state.syncline
    return RateLimiter(syncline.config.security.rate_per_minute)


def _flows_router() -> APIRouter | None:
    """The ``/v1/tasks`` router of ``syncline.flows.api``, when that part is installed."""
    try:
        found = importlib.util.find_spec("syncline.flows.api") is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        return None
    flows_router = getattr(importlib.import_module("syncline.flows.api"), "router", None)
    return flows_router if isinstance(flows_router, APIRouter) else None
