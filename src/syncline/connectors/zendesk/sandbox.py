"""A stateful, in-memory emulator of the Zendesk Support API, for tests and the demo.

It speaks Zendesk's wire format where Syncline relies on it:

* ``POST /api/v2/organizations/create_or_update`` (201 created / 200 updated, by external_id),
  ``GET /api/v2/organizations/search?external_id=``, ``GET /api/v2/organizations/show_many``,
  ``GET|PUT /api/v2/organizations/{id}``;
* ``POST /api/v2/users/create_or_update`` and ``POST /api/v2/users/create_or_update_many`` (a
  ``job_status`` to poll at ``GET /api/v2/job_statuses/{id}``; the job runs on the
  ``job_polls``-th poll, so callers must really poll);
* ``POST /api/v2/tickets``, ``GET /api/v2/tickets?external_id=``, ``GET|PUT /api/v2/tickets/{id}``;
* ``GET /api/v2/incremental/organizations?start_time=`` (time-based export, ``page_size`` per
  page; a page never ends in the middle of one second's changes);
* errors as ``{"error": "RecordInvalid", "description": ..., "details": {...}}``, API token or
  OAuth authentication, and the per-minute rate limit: every answer carries ``X-Rate-Limit`` and
  ``X-Rate-Limit-Remaining``; beyond the limit, ``429`` with ``Retry-After`` (seconds to the next
  minute).

Changes fire signed webhooks (``X-Zendesk-Webhook-Signature``) in Zendesk's event format to
``webhook_url``: ``ticket.created``, ``ticket.status_changed`` and
``organization.custom_field_changed``. Agents' work is emulated by :meth:`set_ticket_status`,
:meth:`set_organization_field` and :meth:`seed_organizations`.

Use it as ``with ZendeskSandbox() as sandbox: sandbox.url`` (it serves itself on a localhost
port), or serve ``sandbox.app`` with :class:`~syncline.sandbox.ServerThread`. Every request runs
on the server's event loop, so plain dicts and counters need no lock.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import math
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import orjson
from fastapi import FastAPI, Request, Response

from syncline.connectors.zendesk.client import (
    MAX_BATCH,
    RATE_LIMIT_HEADER,
    RATE_LIMIT_REMAINING_HEADER,
    basic_token_authorization,
)
from syncline.connectors.zendesk.inbound import (
    ORGANIZATION_FIELD_CHANGED,
    TICKET_CREATED,
    TICKET_STATUS_CHANGED,
    WebhookSignature,
)
from syncline.sandbox import Fault, Faults, ServerThread

JSON = dict[str, Any]
OneShotFault = Literal["rate_limit", "server_error", "auth"]
_ONE_SHOT_FAULTS = frozenset({"rate_limit", "server_error", "auth"})
SANDBOX_EMAIL = "syncline@example.com"
SANDBOX_API_TOKEN = "sandbox-api-token"  # noqa: S105 - a fake account's credential
SANDBOX_WEBHOOK_SECRET = "c2FuZGJveC13ZWJob29rLXNlY3JldA=="  # noqa: S105
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PRIORITIES = ("low", "normal", "high", "urgent")
_STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
#: Organization fields of the emulated account: key → (title, type, allowed values or None).
ORGANIZATION_FIELDS: dict[str, tuple[str, str, tuple[str, ...] | None]] = {
    "support_level": ("Support level", "dropdown", ("none", "basic", "standard", "premium")),
    "entitlement_active": ("Entitlement active", "checkbox", None),
}
_FIELD_IDS = {key: 360_000_100_001 + index for index, key in enumerate(ORGANIZATION_FIELDS)}


class ZendeskError(Exception):
    """A Zendesk error answer raised inside a handler."""

    def __init__(self, status: int, error: str, description: str | None = None,
                 details: Mapping[str, Any] | None = None) -> None:
        super().__init__(description or error)
        self.status = status
        self.body: JSON = {"error": error}
        if description is not None:
            self.body["description"] = description
        if details is not None:
            self.body["details"] = dict(details)


def _invalid(field: str, error: str, description: str) -> ZendeskError:
    return ZendeskError(422, "RecordInvalid", "Record validation errors",
                        {field: [{"description": description, "error": error}]})


def _not_found() -> ZendeskError:
    return ZendeskError(404, "RecordNotFound", "Not found")


class ZendeskSandbox:
    """Emulate one Zendesk Support account in memory.

    ``credentials`` is ``{"email", "api_token"}`` or ``{"oauth_token"}`` (default: the sandbox
    API token); ``requests_per_minute`` the account's rate limit; ``page_size`` the incremental
    export's page size (Zendesk: 1000); ``webhook_url`` where change events are POSTed, signed
    with ``webhook_secret``; ``job_polls`` how many polls a bulk job takes to finish.
    """

    def __init__(
        self,
        *,
        credentials: Mapping[str, str] | None = None,
        requests_per_minute: int = 700,
        page_size: int = 1000,
        webhook_url: str | None = None,
        webhook_secret: str = SANDBOX_WEBHOOK_SECRET,
        job_polls: int = 1,
        faults: Faults | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.credentials = dict(credentials or {"email": SANDBOX_EMAIL, "api_token": SANDBOX_API_TOKEN})
        self.requests_per_minute = requests_per_minute
        self.page_size = page_size
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.job_polls = job_polls
        self.faults = faults or Faults()
        self._clock = clock
        self._server: ServerThread | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.reset()
        self.app = self._build_app()

    # -- state ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every record, job, webhook and counter (fault settings stay)."""
        self.organizations: dict[int, JSON] = {}
        self.users: dict[int, JSON] = {}
        self.tickets: dict[int, JSON] = {}
        self.jobs: dict[str, JSON] = {}
        self._ids = itertools.count(360_000_000_001)
        self._one_shot: deque[tuple[OneShotFault, float | None]] = deque()
        self._lost_answers: deque[tuple[str, float]] = deque()
        self._window = -1
        self._window_used = 0
        self.requests = 0
        self.rate_limited = 0
        self.creates = 0
        self.updates = 0
        #: Every webhook body emitted, oldest first; ``webhook_failures`` counts failed POSTs.
        self.webhooks_sent: list[JSON] = []
        self.webhook_failures = 0

    def fail_next(self, fault: OneShotFault, *, retry_after: float | None = None) -> None:
        """Make the next API request fail without applying it: ``rate_limit`` (429 +
        ``Retry-After``), ``server_error`` (500) or ``auth`` (401), the way Zendesk answers them."""
        if fault not in _ONE_SHOT_FAULTS:
            raise ValueError(f"unknown fault {fault!r} (one of {sorted(_ONE_SHOT_FAULTS)})")
        self._one_shot.append((fault, retry_after))

    def lose_next_answer(self, method: str = "POST", *, hang_seconds: float = 5.0) -> None:
        """Apply the next ``method`` request, then hold its answer for ``hang_seconds``: the
        caller times out without learning that the write happened."""
        self._lost_answers.append((method.upper(), hang_seconds))

    def organizations_with_external_id(self, external_id: str) -> list[JSON]:
        """Return every organization carrying ``external_id`` (a scan: more than one is a bug)."""
        return [org for org in self.organizations.values() if _same_id(org.get("external_id"), external_id)]

    def users_with_external_id(self, external_id: str) -> list[JSON]:
        """Return every user carrying ``external_id``."""
        return [user for user in self.users.values() if _same_id(user.get("external_id"), external_id)]

    def tickets_with_external_id(self, external_id: str) -> list[JSON]:
        """Return every ticket carrying ``external_id``."""
        return [ticket for ticket in self.tickets.values() if _same_id(ticket.get("external_id"), external_id)]

    def stats(self) -> JSON:
        """Return record counts and request, rate-limit and webhook counters."""
        return {
            "records": {"organizations": len(self.organizations), "users": len(self.users),
                        "tickets": len(self.tickets), "jobs": len(self.jobs)},
            "requests": self.requests, "rate_limited": self.rate_limited,
            "creates": self.creates, "updates": self.updates,
            "webhooks": {"sent": len(self.webhooks_sent), "failures": self.webhook_failures},
        }

    # -- an agent's work -----------------------------------------------------------------------
    def seed_organizations(self, count: int, *, start: float | None = None) -> list[JSON]:
        """Create ``count`` organizations, one second apart from ``start`` (default: ``count``
        seconds ago), as if agents had made them; return them oldest first."""
        first = int(self._clock() - count if start is None else start)
        made = []
        for index in range(count):
            org = self._new_organization({"name": f"Seeded organization {next(self._ids)}"}, first + index)
            made.append(org)
        return made

    def set_organization_field(self, organization_id: int, key: str, value: Any) -> JSON:
        """Change one organization field as an agent would (and fire its webhook)."""
        org = self.organizations[organization_id]
        self._apply_organization(org, {"organization_fields": {key: value}}, self._now())
        return org

    def set_ticket_status(self, ticket_id: int, status: str) -> JSON:
        """Change a ticket's status as an agent would (and fire ``ticket.status_changed``)."""
        ticket = self.tickets[ticket_id]
        self._apply_ticket(ticket, {"status": status}, self._now())
        return ticket

    # -- serving -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The base URL while serving (``with ZendeskSandbox() as sandbox``)."""
        if self._server is None:
            raise RuntimeError("the sandbox is not serving; use it as a context manager")
        return self._server.url

    def __enter__(self) -> ZendeskSandbox:
        self._server = ServerThread(self.app).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @asynccontextmanager
    async def _lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(12.0))  # Zendesk's webhook timeout
        self._loop = asyncio.get_running_loop()
        try:
            yield
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._http.aclose()
            self._http = None
            self._loop = None

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="Zendesk sandbox", lifespan=self._lifespan, openapi_url=None, docs_url=None,
                      redoc_url=None)
        routes: list[tuple[str, str, Callable[[Request, Any], JSON | tuple[int, JSON]]]] = [
            ("POST", "/api/v2/organizations/create_or_update", self._upsert_organization),
            ("GET", "/api/v2/organizations/search", self._search_organizations),
            ("GET", "/api/v2/organizations/show_many", self._show_many_organizations),
            ("GET", "/api/v2/organizations/{organization_id}", self._show_organization),
            ("PUT", "/api/v2/organizations/{organization_id}", self._update_organization),
            ("POST", "/api/v2/users/create_or_update", self._upsert_user),
            ("POST", "/api/v2/users/create_or_update_many", self._upsert_users_job),
            ("GET", "/api/v2/job_statuses/{job_id}", self._show_job),
            ("POST", "/api/v2/tickets", self._create_ticket),
            ("GET", "/api/v2/tickets", self._list_tickets),
            ("GET", "/api/v2/tickets/{ticket_id}", self._show_ticket),
            ("PUT", "/api/v2/tickets/{ticket_id}", self._update_ticket),
            ("GET", "/api/v2/incremental/organizations", self._export_organizations),
        ]
        for method, path, handler in routes:
            app.add_api_route(path, self._endpoint(handler), methods=[method])

        @app.get("/_sandbox/stats")
        async def admin_stats() -> JSON:
            return self.stats()

        return app

    def _endpoint(
        self, handler: Callable[[Request, Any], JSON | tuple[int, JSON]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self._serve(request, handler)
        return endpoint

    async def _serve(self, request: Request, handler: Callable[[Request, Any], JSON | tuple[int, JSON]]) -> Response:
        """Govern one API request: rate limit, faults, authentication, then the handler."""
        self.requests += 1
        now = self._clock()
        window = int(now // 60)
        if window != self._window:
            self._window, self._window_used = window, 0
        if self._window_used >= self.requests_per_minute:
            self.rate_limited += 1
            wait = max(1, math.ceil((window + 1) * 60 - now))
            return self._answer(429, {"error": "APIRateLimitExceeded",
                                      "description": "Number of allowed API requests per minute exceeded"},
                                {"Retry-After": str(wait)})
        self._window_used += 1
        if self._one_shot:
            return self._one_shot_response()
        if not self._authenticated(request):
            return self._answer(401, {"error": "Couldn't authenticate you"})
        if self.faults.latency_seconds:
            await asyncio.sleep(self.faults.latency_seconds)
        fault = self.faults.draw()
        if fault is Fault.SERVER_ERROR:
            return self._answer(500, {"error": "InternalError", "description": "Something went wrong (sandbox fault)"})
        if fault is Fault.RATE_LIMITED:
            self.rate_limited += 1
            return self._answer(429, {"error": "APIRateLimitExceeded", "description": "sandbox fault"},
                                {"Retry-After": str(self.faults.retry_after_seconds)})
        try:
            raw = await request.body()
            body = orjson.loads(raw) if raw else None
            if raw and not isinstance(body, dict):
                raise ZendeskError(400, "InvalidJSON", "The request body must be a JSON object")
            answer = handler(request, body)
        except orjson.JSONDecodeError:
            answer = (400, {"error": "Unprocessable Entity", "description": "The request body is not JSON"})
        except ZendeskError as exc:
            answer = (exc.status, exc.body)
        status, payload = answer if isinstance(answer, tuple) else (200, answer)
        hang = self.faults.hang_seconds if fault is Fault.TIMEOUT else 0.0
        if self._lost_answers and self._lost_answers[0][0] == request.method:
            hang = self._lost_answers.popleft()[1]
        if hang:
            # applied, then the answer is lost: the worst case for exactly-once
            await asyncio.sleep(hang)
        return self._answer(status, payload)

    def _answer(self, status: int, body: JSON, headers: Mapping[str, str] | None = None) -> Response:
        remaining = max(0, self.requests_per_minute - self._window_used)
        return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers={
            RATE_LIMIT_HEADER: str(self.requests_per_minute), RATE_LIMIT_REMAINING_HEADER: str(remaining),
            **(headers or {}),
        })

    def _one_shot_response(self) -> Response:
        fault, retry_after = self._one_shot.popleft()
        if fault == "rate_limit":
            self.rate_limited += 1
            wait = self.faults.retry_after_seconds if retry_after is None else retry_after
            return self._answer(429, {"error": "APIRateLimitExceeded",
                                      "description": "Number of allowed API requests per minute exceeded"},
                                {"Retry-After": f"{wait:g}"})
        if fault == "auth":
            return self._answer(401, {"error": "Couldn't authenticate you"})
        return self._answer(500, {"error": "InternalError", "description": "Something went wrong"})

    def _authenticated(self, request: Request) -> bool:
        supplied = request.headers.get("authorization", "")
        if "oauth_token" in self.credentials:
            expected = f"Bearer {self.credentials['oauth_token']}"
        else:
            expected = basic_token_authorization(self.credentials["email"], self.credentials["api_token"])
        return hmac.compare_digest(supplied.encode(), expected.encode())

    # -- organizations -------------------------------------------------------------------------
    def _upsert_organization(self, _request: Request, body: Any) -> tuple[int, JSON]:
        fields = _record(body, "organization")
        external_id = fields.get("external_id")
        existing = None
        if fields.get("id") is not None:
            existing = self.organizations.get(_int(fields["id"]))
        elif external_id:
            matches = self.organizations_with_external_id(str(external_id))
            existing = matches[0] if matches else None
        if existing is None:
            return 201, {"organization": self._new_organization(fields, self._now())}
        self._apply_organization(existing, fields, self._now())
        return 200, {"organization": existing}

    def _new_organization(self, fields: JSON, at: int) -> JSON:
        self._check_organization_name(fields.get("name"), None)
        self._check_organization_fields(fields.get("organization_fields"))
        org_id = next(self._ids)
        org: JSON = {
            "id": org_id, "url": f"https://sandbox.zendesk.com/api/v2/organizations/{org_id}.json",
            "name": fields["name"], "external_id": fields.get("external_id"), "details": fields.get("details"),
            "notes": fields.get("notes"), "tags": list(fields.get("tags") or []),
            "organization_fields": {key: None for key in ORGANIZATION_FIELDS},
            "shared_tickets": False, "shared_comments": False, "group_id": None, "domain_names": [],
            "created_at": _iso(at), "updated_at": _iso(at),
        }
        org["organization_fields"].update(fields.get("organization_fields") or {})
        self.organizations[org_id] = org
        self.creates += 1
        return org

    def _apply_organization(self, org: JSON, fields: JSON, at: int) -> None:
        if "name" in fields:
            self._check_organization_name(fields["name"], org["id"])
        changes = fields.get("organization_fields")
        self._check_organization_fields(changes)
        before = dict(org["organization_fields"])
        for key in ("name", "external_id", "details", "notes"):
            if key in fields:
                org[key] = fields[key]
        if "tags" in fields:
            org["tags"] = [str(tag) for tag in fields["tags"] or []]
        org["organization_fields"].update(changes or {})
        org["updated_at"] = _iso(at)
        self.updates += 1
        for key, value in org["organization_fields"].items():
            if before.get(key) != value:
                title, kind, _ = ORGANIZATION_FIELDS[key]
                self._emit(ORGANIZATION_FIELD_CHANGED, f"zen:organization:{org['id']}", _org_detail(org),
                           {"current": value, "previous": before.get(key),
                            "field": {"id": str(_FIELD_IDS[key]), "key": key, "title": title, "type": kind}})

    def _check_organization_name(self, name: Any, own_id: int | None) -> None:
        if not isinstance(name, str) or not name.strip():
            raise _invalid("name", "BlankValue", "Name: cannot be blank")
        for org in self.organizations.values():
            if org["id"] != own_id and org["name"].lower() == name.lower():
                raise _invalid("name", "DuplicateValue", f"Name: {name} has already been taken")

    @staticmethod
    def _check_organization_fields(changes: Any) -> None:
        if changes is None:
            return
        if not isinstance(changes, dict):
            raise _invalid("organization_fields", "InvalidValue", "Organization fields: must be an object")
        for key, value in changes.items():
            if key not in ORGANIZATION_FIELDS:
                # Zendesk drops unknown keys silently; refusing them here catches typos in tests
                raise _invalid(key, "InvalidValue", f"{key}: is not an organization field of this account")
            title, kind, allowed = ORGANIZATION_FIELDS[key]
            if kind == "checkbox" and not isinstance(value, bool):
                raise _invalid(key, "InvalidValue", f"{title}: must be true or false")
            if allowed is not None and value is not None and value not in allowed:
                raise _invalid(key, "InvalidValue", f"{title}: {value} is not a valid option")

    def _search_organizations(self, request: Request, _body: Any) -> JSON:
        external_id = request.query_params.get("external_id")
        if not external_id:
            raise ZendeskError(400, "InvalidValue", "external_id is required")
        found = self.organizations_with_external_id(external_id)
        return {"organizations": found, "count": len(found), "next_page": None, "previous_page": None}

    def _show_many_organizations(self, request: Request, _body: Any) -> JSON:
        wanted = [part for part in request.query_params.get("external_ids", "").split(",") if part]
        if len(wanted) > MAX_BATCH:
            raise ZendeskError(400, "InvalidValue", f"At most {MAX_BATCH} external_ids")
        found = [org for org in self.organizations.values()
                 if any(_same_id(org.get("external_id"), eid) for eid in wanted)]
        return {"organizations": found, "count": len(found), "next_page": None, "previous_page": None}

    def _show_organization(self, request: Request, _body: Any) -> JSON:
        org = self.organizations.get(_int(request.path_params["organization_id"]))
        if org is None:
            raise _not_found()
        return {"organization": org}

    def _update_organization(self, request: Request, body: Any) -> JSON:
        org = self.organizations.get(_int(request.path_params["organization_id"]))
        if org is None:
            raise _not_found()
        self._apply_organization(org, _record(body, "organization"), self._now())
        return {"organization": org}

    def _export_organizations(self, request: Request, _body: Any) -> JSON:
        try:
            start = int(request.query_params.get("start_time", ""))
        except ValueError:
            raise ZendeskError(400, "InvalidValue", "start_time must be a unix time in seconds") from None
        changed = sorted((org for org in self.organizations.values() if _epoch(org["updated_at"]) >= start),
                         key=lambda org: (_epoch(org["updated_at"]), org["id"]))
        page = changed[:self.page_size]
        if page:
            last = _epoch(page[-1]["updated_at"])
            # never end a page inside one second: the next page starts at that second again
            page += [org for org in changed[self.page_size:] if _epoch(org["updated_at"]) == last]
        end_time = _epoch(page[-1]["updated_at"]) if page else start
        end_of_stream = len(page) < self.page_size
        host = str(request.base_url).rstrip("/")
        return {
            "organizations": page, "count": len(page), "end_time": end_time, "end_of_stream": end_of_stream,
            "next_page": None if end_of_stream else f"{host}/api/v2/incremental/organizations?start_time={end_time}",
        }

    # -- users ---------------------------------------------------------------------------------
    def _upsert_user(self, _request: Request, body: Any) -> tuple[int, JSON]:
        user, created = self._save_user(_record(body, "user"))
        return (201 if created else 200), {"user": user}

    def _save_user(self, fields: JSON) -> tuple[JSON, bool]:
        name, email = fields.get("name"), fields.get("email")
        if email is not None and (not isinstance(email, str) or not _EMAIL.match(email)):
            raise _invalid("email", "InvalidFormat", f"Email: {email} is not properly formatted")
        org_id = fields.get("organization_id")
        if org_id is not None and _int(org_id) not in self.organizations:
            raise _invalid("organization_id", "InvalidValue", "Organization: is invalid")
        existing = None
        if fields.get("external_id"):
            matches = self.users_with_external_id(str(fields["external_id"]))
            existing = matches[0] if matches else None
        if existing is None and email:
            existing = next((u for u in self.users.values() if str(u.get("email", "")).lower() == email.lower()),
                            None)
        now = _iso(self._now())
        if existing is None:
            if not isinstance(name, str) or not name.strip():
                raise _invalid("name", "BlankValue", "Name: is too short (minimum is 1 character)")
            user_id = next(self._ids)
            existing = {"id": user_id, "url": f"https://sandbox.zendesk.com/api/v2/users/{user_id}.json",
                        "name": name, "email": email, "external_id": fields.get("external_id"),
                        "role": fields.get("role", "end-user"), "organization_id": org_id,
                        "created_at": now, "updated_at": now, "active": True, "verified": False}
            self.users[user_id] = existing
            self.creates += 1
            return existing, True
        for key in ("name", "email", "external_id", "role", "organization_id"):
            if key in fields:
                existing[key] = fields[key]
        existing["updated_at"] = now
        self.updates += 1
        return existing, False

    def _upsert_users_job(self, request: Request, body: Any) -> JSON:
        users = body.get("users") if isinstance(body, dict) else None
        if not isinstance(users, list) or not users:
            raise ZendeskError(400, "InvalidValue", "users must be a non-empty list")
        if len(users) > MAX_BATCH:
            raise ZendeskError(400, "TooManyItems", f"At most {MAX_BATCH} users per request")
        job_id = uuid.uuid4().hex
        host = str(request.base_url).rstrip("/")
        job: JSON = {"id": job_id, "url": f"{host}/api/v2/job_statuses/{job_id}.json", "total": len(users),
                     "progress": None, "status": "queued", "message": None, "results": None}
        self.jobs[job_id] = {"job": job, "users": users, "polls": 0}
        return {"job_status": job}

    def _show_job(self, request: Request, _body: Any) -> JSON:
        entry = self.jobs.get(request.path_params["job_id"].removesuffix(".json"))
        if entry is None:
            raise _not_found()
        job = entry["job"]
        entry["polls"] += 1
        if job["status"] != "completed" and entry["polls"] >= self.job_polls:
            job["results"] = [self._job_result(index, fields) for index, fields in enumerate(entry["users"])]
            job.update(status="completed", progress=job["total"], message=f"Completed at {_iso(self._now())}")
        elif job["status"] == "queued":
            job["status"] = "working"
        return {"job_status": job}

    def _job_result(self, index: int, fields: Any) -> JSON:
        try:
            user, created = self._save_user(fields if isinstance(fields, dict) else {})
        except ZendeskError as exc:
            details = exc.body.get("details") or {}
            problems: list[JSON] = next(iter(details.values()), [{}]) if details else [{}]
            first = problems[0]
            return {"index": index, "status": "Failed", "error": "UserUpdateError" if fields else "InvalidValue",
                    "details": first.get("description", exc.body.get("description", ""))}
        return {"index": index, "id": user["id"], "status": "Created" if created else "Updated",
                "email": user.get("email"), "external_id": user.get("external_id")}

    # -- tickets -------------------------------------------------------------------------------
    def _create_ticket(self, _request: Request, body: Any) -> tuple[int, JSON]:
        fields = _record(body, "ticket")
        comment = fields.get("comment")
        text = comment.get("body") if isinstance(comment, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise _invalid("description", "BlankValue", "Description: cannot be blank")
        priority = fields.get("priority")
        if priority is not None and priority not in _PRIORITIES:
            raise _invalid("priority", "InvalidValue", f"Priority: {priority} is not valid")
        org_id = fields.get("organization_id")
        if org_id is not None and _int(org_id) not in self.organizations:
            raise _invalid("organization_id", "InvalidValue", "Organization: is invalid")
        now = self._now()
        ticket_id = next(self._ids)
        ticket: JSON = {
            "id": ticket_id, "url": f"https://sandbox.zendesk.com/api/v2/tickets/{ticket_id}.json",
            "external_id": fields.get("external_id"), "subject": fields.get("subject"), "description": text,
            "priority": priority, "status": "new", "type": fields.get("type"), "tags": list(fields.get("tags") or []),
            "organization_id": org_id, "requester_id": None, "created_at": _iso(now), "updated_at": _iso(now),
        }
        self.tickets[ticket_id] = ticket
        self.creates += 1
        self._emit(TICKET_CREATED, f"zen:ticket:{ticket_id}", _ticket_detail(ticket), {})
        return 201, {"ticket": ticket}

    def _list_tickets(self, request: Request, _body: Any) -> JSON:
        external_id = request.query_params.get("external_id")
        found = (list(self.tickets.values()) if external_id is None
                 else self.tickets_with_external_id(external_id))
        return {"tickets": found, "count": len(found), "next_page": None, "previous_page": None}

    def _show_ticket(self, request: Request, _body: Any) -> JSON:
        ticket = self.tickets.get(_int(request.path_params["ticket_id"]))
        if ticket is None:
            raise _not_found()
        return {"ticket": ticket}

    def _update_ticket(self, request: Request, body: Any) -> JSON:
        ticket = self.tickets.get(_int(request.path_params["ticket_id"]))
        if ticket is None:
            raise _not_found()
        self._apply_ticket(ticket, _record(body, "ticket"), self._now())
        return {"ticket": ticket}

    def _apply_ticket(self, ticket: JSON, fields: JSON, at: int) -> None:
        priority, status = fields.get("priority"), fields.get("status")
        if priority is not None and priority not in _PRIORITIES:
            raise _invalid("priority", "InvalidValue", f"Priority: {priority} is not valid")
        if status is not None and status not in _STATUSES:
            raise _invalid("status", "InvalidValue", f"Status: {status} is not valid")
        before = ticket["status"]
        for key in ("subject", "priority", "status", "type"):
            if key in fields:
                ticket[key] = fields[key]
        if "tags" in fields:
            ticket["tags"] = list(fields["tags"] or [])
        for tag in fields.get("additional_tags") or []:
            if tag not in ticket["tags"]:
                ticket["tags"].append(tag)
        ticket["tags"] = [tag for tag in ticket["tags"] if tag not in set(fields.get("remove_tags") or [])]
        ticket["updated_at"] = _iso(at)
        self.updates += 1
        if ticket["status"] != before:
            self._emit(TICKET_STATUS_CHANGED, f"zen:ticket:{ticket['id']}", _ticket_detail(ticket),
                       {"current": ticket["status"].upper(), "previous": before.upper()})

    # -- webhooks ------------------------------------------------------------------------------
    def _emit(self, kind: str, subject: str, detail: JSON, event: JSON) -> None:
        """Record one Zendesk event and POST it, signed, to ``webhook_url`` after the answer."""
        body: JSON = {
            "type": kind, "account_id": 10_973_248, "id": str(uuid.uuid4()), "time": _iso(self._now()),
            "zendesk_event_version": "2022-11-06", "subject": subject, "detail": detail,
            "event": event,
        }
        self.webhooks_sent.append(body)
        url, loop = self.webhook_url, self._loop
        if url is None or loop is None:
            return

        def start() -> None:
            task = loop.create_task(self._post_webhook(url, body))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            start()
        else:
            # an agent helper called from the test's thread: hand the POST to the server's loop
            loop.call_soon_threadsafe(start)

    async def _post_webhook(self, url: str, event: JSON) -> None:
        assert self._http is not None
        raw = orjson.dumps(event)
        for attempt in range(3):
            # Zendesk signs each attempt afresh, so a retry is never stale
            headers = {"Content-Type": "application/json",
                       "x-zendesk-webhook-id": "01F1KRFQ6BG29CNWFR60NK5FNY",
                       "x-zendesk-webhook-invocation-id": str(next(self._ids)),
                       **WebhookSignature(self.webhook_secret).sign(raw, self._clock())}
            try:
                response = await self._http.post(url, content=raw, headers=headers)
                if response.is_success:
                    return
            except httpx.HTTPError:
                pass
            self.webhook_failures += 1
            await asyncio.sleep(0.05 * 2 ** attempt)

    def _now(self) -> int:
        return int(self._clock())


def _record(body: Any, key: str) -> JSON:
    record = body.get(key) if isinstance(body, dict) else None
    if not isinstance(record, dict):
        raise ZendeskError(400, "InvalidValue", f"The request body needs a {key!r} object")
    return record


def _same_id(value: Any, external_id: str) -> bool:
    # Zendesk compares external ids without regard to case
    return isinstance(value, str) and value.lower() == external_id.lower()


def _int(value: Any) -> int:
    try:
        return int(str(value).removesuffix(".json"))
    except ValueError:
        raise _not_found() from None


def _iso(at: int) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(stamp: str) -> int:
    return int(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


def _org_detail(org: JSON) -> JSON:
    """The ``detail`` of organization events: ids as strings, the resource's core fields."""
    return {"id": str(org["id"]), "external_id": org.get("external_id"), "name": org["name"],
            "group_id": None, "shared_comments": org["shared_comments"], "shared_tickets": org["shared_tickets"],
            "created_at": org["created_at"], "updated_at": org["updated_at"]}


def _ticket_detail(ticket: JSON) -> JSON:
    """The ``detail`` of ticket events: ids as strings, enums upper case."""
    return {
        "id": str(ticket["id"]), "external_id": ticket.get("external_id"), "subject": ticket.get("subject"),
        "description": ticket.get("description"), "status": str(ticket["status"]).upper(),
        "priority": str(ticket["priority"]).upper() if ticket.get("priority") else None,
        "type": str(ticket["type"]).upper() if ticket.get("type") else None, "tags": list(ticket["tags"]),
        "organization_id": None if ticket.get("organization_id") is None else str(ticket["organization_id"]),
        "requester_id": None, "is_public": False, "via": {"channel": "api"},
        "created_at": ticket["created_at"], "updated_at": ticket["updated_at"],
    }
