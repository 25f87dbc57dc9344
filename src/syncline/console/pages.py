"""The console's pages and form actions (server-rendered HTML, no JavaScript needed)."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Engine

from syncline.api import _actions, _queries
from syncline.api.auth import RateLimiter, Role, authenticate_key, authenticate_password
from syncline.canonical.money import exponent
from syncline.console._session import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Session,
    SessionSigner,
    csrf_ok,
    current_session,
)
from syncline.observe import audit as audit_log
from syncline.observe.business import business_health
from syncline.observe.redaction import MASK
from syncline.runtime import Syncline

HERE = Path(__file__).parent
FORM_LIMIT = 1_048_576

_ERROR_HELP = {
    "data_quality": "The data is wrong or incomplete. Correct it below, then save and retry.",
    "business_rule": "The target system refused it by its own rules (for example a closed period or an unknown "
                     "tax code). Fix the cause there, or correct the data below, then retry.",
    "dependency": "Something this record refers to is missing in the target (for example its customer). "
                  "Retry once that record is there.",
    "auth_config": "The connection's credentials or settings are wrong. An admin must fix the configuration; "
                   "the connection is paused until then.",
    "transient": "The target system kept failing or timing out. Retry when it is healthy again.",
    "rate_limited": "The target system kept asking us to slow down. Retry later.",
}

_STAGES = {
    "received": "Received", "normalized": "Understood", "delivered": "Sent", "parked": "Needs attention",
    "retried": "Retried", "replayed": "Replayed", "edited": "Corrected", "failed": "Failed", "skipped": "Skipped",
}


def _when(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(float(epoch), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _money(value: Any) -> str:
    if not isinstance(value, Mapping) or "amount" not in value or "currency" not in value:
        return ""
    amount, currency = value["amount"], str(value["currency"]).upper()
    if not isinstance(amount, int):
        return f"{amount} {currency}"
    digits = exponent(currency)
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), 10**digits) if digits else (abs(amount), 0)
    text = f"{whole:,}" + (f".{fraction:0{digits}d}" if digits else "")
    return f"{sign}{text} {currency}"


def _event_label(event_type: str | None) -> str:
    if not event_type:
        return ""
    thing, _, what = event_type.partition(".")
    return f"{thing.replace('_', ' ').capitalize()} {what.replace('_', ' ')}".strip()


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=_when, ago=_ago, money=_money, event_label=_event_label,
                       stage=lambda stage: _STAGES.get(stage, str(stage).replace("_", " ").capitalize()),
                       pretty=lambda value: orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())
    env.globals.update(Role=Role, MASK=MASK)
    return env


class Console:
    """The console bound to one running Syncline."""

    def __init__(self, syncline: Syncline) -> None:
        self.syncline = syncline
        security = syncline.config.security
        secret = security.session_secret.get_secret_value() if security.session_secret else None
        self.signer = SessionSigner(secret, security.session_hours * 3600)
        self.env = _environment()
        self.login_limiter = RateLimiter(default_per_minute=10)

    @property
    def engine(self) -> Engine:
        return self.syncline.engine

    @property
    def pii(self) -> list[str]:
        return list(self.syncline.config.security.pii_fields)

    def render(self, template: str, request: Request, session: Session | None, status: int = 200,
               **context: Any) -> HTMLResponse:
        flash = request.query_params.get("done")
        problem = request.query_params.get("problem")
        html = self.env.get_template(template).render(
            session=session, path=request.url.path, flash=flash, problem=problem, **context)
        return HTMLResponse(html, status_code=status, headers=_SECURITY_HEADERS)


_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


async def _form(request: Request) -> dict[str, list[str]]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_LIMIT:
            return {}
    return urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


def _one(form: Mapping[str, list[str]], name: str, default: str = "") -> str:
    values = form.get(name)
    return values[0] if values else default


def _redirect(path: str, **params: str) -> RedirectResponse:
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v})
    return RedirectResponse(f"{path}?{query}" if query else path, status_code=303)


def _local(path: str) -> str:
    # Only same-site relative paths after login: no open redirect.
    return path if path.startswith("/console") and not path.startswith("//") else "/console/"


def _filters_from(params: Mapping[str, str]) -> _queries.ExceptionFilter:
    state = params.get("state") or "open"
    return _queries.ExceptionFilter(
        state=state if state in ("open", "resolved", "all") else "open",
        connection=params.get("connection") or None, error_class=params.get("error_class") or None,
        correlation_id=params.get("correlation_id") or None, source=params.get("source") or None,
    )


def build_router(console: Console) -> APIRouter:
    """Return the ``/console`` routes."""
    router = APIRouter(prefix="/console", include_in_schema=False)

    async def session_or_login(request: Request) -> Session | RedirectResponse:
        session = await asyncio.to_thread(current_session, request, console.signer, console.engine)
        if session is None:
            return _redirect("/console/login", next=request.url.path)
        return session

    def forbidden(request: Request, session: Session, role: Role) -> HTMLResponse:
        return console.render("forbidden.html", request, session, status=403, needed=str(role))

    async def guarded_post(request: Request, role: Role) -> tuple[Session, dict[str, list[str]]] | Response:
        session = await asyncio.to_thread(current_session, request, console.signer, console.engine)
        if session is None:
            return _redirect("/console/login")
        form = await _form(request)
        if not csrf_ok(session.csrf, _one(form, "csrf")):
            return console.render("forbidden.html", request, session, status=403, needed="a valid form token")
        if not session.can(role):
            return forbidden(request, session, role)
        return session, form

    # --- sign in / out ------------------------------------------------------------------------

    @router.get("/login")
    async def login_page(request: Request) -> HTMLResponse:
        token = request.cookies.get(LOGIN_CSRF_COOKIE) or _new_token()
        response = console.render("login.html", request, None, csrf=token,
                                  next=_local(request.query_params.get("next", "/console/")),
                                  error=request.query_params.get("error"))
        response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/console",
                            secure=request.url.scheme == "https")
        return response

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await _form(request)
        expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not expected or not csrf_ok(expected, _one(form, "csrf")):
            return _redirect("/console/login", error="Your sign-in form expired; please try again.")
        client = request.client.host if request.client else "unknown"
        if console.login_limiter.check(f"login:{client}") > 0:
            return _redirect("/console/login", error="Too many sign-in attempts; wait a minute.")
        key = _one(form, "api_key").strip()
        kind, ident = "", ""
        if key:
            found = await asyncio.to_thread(authenticate_key, console.engine, key)
            if found is not None:
                kind, ident = "key", found[0].key_id
        else:
            principal = await asyncio.to_thread(authenticate_password, console.engine, _one(form, "username").strip(),
                                                _one(form, "password"))
            if principal is not None:
                kind, ident = "user", principal.name
        if not kind:
            return _redirect("/console/login", error="Those credentials are not valid.")
        value, _csrf = console.signer.issue(kind, ident)
        response = RedirectResponse(_local(_one(form, "next", "/console/")), status_code=303)
        response.set_cookie(SESSION_COOKIE, value, max_age=console.signer.max_age, httponly=True, samesite="strict",
                            path="/console", secure=request.url.scheme == "https")
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/console")
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        guarded = await guarded_post(request, Role.VIEWER)
        response = _redirect("/console/login")
        if isinstance(guarded, tuple):
            response.delete_cookie(SESSION_COOKIE, path="/console")
        return response

    @router.get("/static/console.css")
    async def stylesheet() -> Response:
        return Response((HERE / "static" / "console.css").read_bytes(), media_type="text/css",
                        headers={"Cache-Control": "max-age=3600"})

    # --- home ---------------------------------------------------------------------------------

    @router.get("/")
    async def home(request: Request) -> Response:
        session = await session_or_login(request)
        if not isinstance(session, Session):
            return session

        def gather() -> dict[str, Any]:
            connections = _queries.connection_health(console.syncline)
            vendors = {name: c.vendor for name, c in console.syncline.connectors.items()}
            business = business_health(console.engine, vendors, console.syncline.config.console)
            recent = _queries.exception_rows(console.engine, _queries.ExceptionFilter(), limit=5)
            return {"connections": connections, "business": business, "recent": recent,
                    "totals": {key: sum(int(row[key]) for row in connections)
                               for key in ("pending", "inflight", "parked", "open_exceptions", "delivered_last_hour")},
                    "oldest": max((row["oldest_waiting_seconds"] or 0.0 for row in connections), default=0.0)}

        data = await asyncio.to_thread(gather)
        return console.render("home.html", request, session, config=console.syncline.config.console, **data)

    # --- exceptions ---------------------------------------------------------------------------

    @router.get("/exceptions")
    async def exceptions_page(request: Request) -> Response:
        session = await session_or_login(request)
        if not isinstance(session, Session):
            return session
        params = dict(request.query_params)
        where = _filters_from(params)

        def gather() -> dict[str, Any]:
            rows = _queries.exception_rows(console.engine, where, limit=200)
            amounts = _queries.delivery_amounts(
                console.engine, [row["ref_id"] for row in rows if row["source"] == "delivery"])
            return {"rows": rows, "amounts": amounts}

        data = await asyncio.to_thread(gather)
        return console.render("exceptions.html", request, session, params=params,
                              connections=sorted(console.syncline.connectors), error_classes=sorted(_ERROR_HELP),
                              **data)

    @router.get("/exceptions/{exception_id}")
    async def exception_page(request: Request, exception_id: int) -> Response:
        session = await session_or_login(request)
        if not isinstance(session, Session):
            return session
        detail = await asyncio.to_thread(_queries.exception_detail, console.engine, exception_id, console.pii)
        if detail is None:
            return console.render("missing.html", request, session, status=404, what=f"exception {exception_id}")
        payload = (detail.get("delivery") or {}).get("payload")
        fields = [(key, value) for key, value in payload.items()
                  if value is None or isinstance(value, str | int | float | bool)] if isinstance(payload, dict) else []
        money_fields = [(key, value) for key, value in payload.items()
                        if _money(value)] if isinstance(payload, dict) else []
        return console.render("exception.html", request, session, item=detail, payload=payload, fields=fields,
                              money_fields=money_fields, help=_ERROR_HELP.get(detail["error_class"], ""))

    async def run_action(request: Request, exception_id: int | None,
                         action: Callable[[Session, dict[str, list[str]]], _actions.Outcome | int], back: str,
                         done: Callable[[_actions.Outcome | int], str]) -> Response:
        guarded = await guarded_post(request, Role.OPERATOR)
        if not isinstance(guarded, tuple):
            return guarded
        session, form = guarded
        try:
            outcome = await asyncio.to_thread(action, session, form)
        except _actions.ActionRefused as exc:
            return _redirect(back, problem=exc.message)
        return _redirect(back, done=done(outcome))

    @router.post("/exceptions/{exception_id}/retry")
    async def retry_one(request: Request, exception_id: int) -> Response:
        def act(session: Session, form: dict[str, list[str]]) -> _actions.Outcome:
            return _actions.retry(console.engine, session.principal, _queries.ExceptionFilter(ids=(exception_id,)),
                                  _one(form, "note") or None)

        return await run_action(request, exception_id, act, f"/console/exceptions/{exception_id}",
                                lambda o: "Sent again: it goes out within the connection's limits."
                                if _changed(o) else "Nothing to retry: it was already handled.")

    @router.post("/exceptions/{exception_id}/edit")
    async def edit_one(request: Request, exception_id: int) -> Response:
        def act(session: Session, form: dict[str, list[str]]) -> _actions.Outcome:
            return _actions.edit_and_retry(console.engine, session.principal, exception_id,
                                           _edited_payload(form), _one(form, "note") or None)

        return await run_action(request, exception_id, act, f"/console/exceptions/{exception_id}",
                                lambda _o: "Saved and sent again.")

    @router.post("/exceptions/{exception_id}/resolve")
    async def resolve_one(request: Request, exception_id: int) -> Response:
        def act(session: Session, form: dict[str, list[str]]) -> _actions.Outcome:
            return _actions.resolve(console.engine, session.principal, _queries.ExceptionFilter(ids=(exception_id,)),
                                    _one(form, "reason"))

        return await run_action(request, exception_id, act, f"/console/exceptions/{exception_id}",
                                lambda _o: "Marked as resolved.")

    @router.post("/exceptions/bulk")
    async def bulk(request: Request) -> Response:
        def act(session: Session, form: dict[str, list[str]]) -> _actions.Outcome:
            ids = tuple(int(value) for value in form.get("ids", []) if value.isdigit())
            if not ids:
                raise _actions.ActionRefused(422, "selection_empty", "Select at least one row first.")
            where = _queries.ExceptionFilter(ids=ids)
            if _one(form, "action") == "resolve":
                return _actions.resolve(console.engine, session.principal, where, _one(form, "reason"))
            return _actions.retry(console.engine, session.principal, where, None)

        return await run_action(request, None, act, "/console/exceptions",
                                lambda o: f"{_changed(o)} of {_matched(o)} selected rows handled.")

    # --- transactions -------------------------------------------------------------------------

    @router.get("/transactions")
    async def transaction_search(request: Request) -> Response:
        session = await session_or_login(request)
        if not isinstance(session, Session):
            return session
        key = request.query_params.get("q", "").strip()
        if key:
            return _redirect(f"/console/transactions/{urllib.parse.quote(key, safe='')}")
        return console.render("transaction.html", request, session, found=None, key="")

    @router.get("/transactions/{key:path}")
    async def transaction_page(request: Request, key: str) -> Response:
        session = await session_or_login(request)
        if not isinstance(session, Session):
            return session
        found = await asyncio.to_thread(_queries.transaction, console.engine, key)
        empty = not (found["timeline"] or found["deliveries"] or found["references"])
        return console.render("transaction.html", request, session, found=None if empty else found, key=key,
                              status=404 if empty else 200)

    # --- connections --------------------------------------------------------------------------

    @router.get("/connections")
    async def connections_page(request: Request) -> Response:
        session = await session_or_login(request)
        if not isinstance(session, Session):
            return session
        rows = await asyncio.to_thread(_queries.connection_health, console.syncline)
        return console.render("connections.html", request, session, rows=rows)

    @router.post("/connections/{name}/{verb}")
    async def pause_resume(request: Request, name: str, verb: str) -> Response:
        guarded = await guarded_post(request, Role.ADMIN)
        if not isinstance(guarded, tuple):
            return guarded
        session, form = guarded
        if name not in console.syncline.connectors or verb not in ("pause", "resume"):
            return console.render("missing.html", request, session, status=404, what=f"connection {name}")
        reason = _one(form, "reason").strip() or f"paused by {session.principal.name}"
        await asyncio.to_thread(_actions.set_paused, console.engine, session.principal, name, verb == "pause",
                                reason if verb == "pause" else None)
        return _redirect("/console/connections", done=f"{name} {'paused' if verb == 'pause' else 'resumed'}.")

    # --- tasks --------------------------------------------------------------------------------

    @router.get("/tasks")
    async def tasks_page(request: Request) -> Response:
        session = await session_or_login(request)
        if not isinstance(session, Session):
            return session
        tasks = await asyncio.to_thread(_active_tasks, console.engine)
        return console.render("tasks.html", request, session, tasks=tasks, now=time.time())

    @router.post("/tasks/{task_id}/complete")
    async def complete(request: Request, task_id: str) -> Response:
        guarded = await guarded_post(request, Role.OPERATOR)
        if not isinstance(guarded, tuple):
            return guarded
        session, form = guarded
        try:
            from syncline.flows.tasks import TaskError, complete_task
        except ImportError:
            return _redirect("/console/tasks", problem="Flows are not installed.")
        try:
            await asyncio.to_thread(complete_task, console.engine, task_id, _one(form, "outcome"),
                                    session.principal.name, reason=_one(form, "reason") or None,
                                    principal=session.principal)
        except TaskError as exc:
            return _redirect("/console/tasks", problem=exc.message)
        return _redirect("/console/tasks", done="Decision recorded.")

    # --- audit --------------------------------------------------------------------------------

    @router.get("/audit")
    async def audit_page(request: Request) -> Response:
        session = await session_or_login(request)
        if not isinstance(session, Session):
            return session
        action = request.query_params.get("action") or None
        rows = await asyncio.to_thread(audit_log.entries, console.engine, action=action, limit=200)
        verified = None
        if session.can(Role.ADMIN) and request.query_params.get("verify"):
            verified = await asyncio.to_thread(audit_log.verify, console.engine)
        return console.render("audit.html", request, session, rows=rows, action=action or "", verified=verified)

    return router


def _changed(outcome: _actions.Outcome | int) -> int:
    return outcome.changed if isinstance(outcome, _actions.Outcome) else int(outcome)


def _matched(outcome: _actions.Outcome | int) -> int:
    return outcome.matched if isinstance(outcome, _actions.Outcome) else int(outcome)


def _new_token() -> str:
    import secrets

    return secrets.token_urlsafe(24)


def _edited_payload(form: Mapping[str, list[str]]) -> Any:
    """Build the corrected payload: the JSON text, with changed simple fields applied on top."""
    try:
        payload = orjson.loads(_one(form, "payload"))
    except orjson.JSONDecodeError as exc:
        raise _actions.ActionRefused(422, "payload_invalid", f"The JSON is not valid: {exc}") from None
    if not isinstance(payload, dict):
        raise _actions.ActionRefused(422, "payload_invalid", "The payload must be a JSON object.")
    for name, values in form.items():
        if not name.startswith("f:"):
            continue
        field = name[2:]
        new, old = values[0], _one(form, f"o:{field}")
        if new == old:
            continue
        payload[field] = _typed(new, payload.get(field))
    return payload


def _typed(text: str, current: Any) -> Any:
    if text == "":
        return None
    if isinstance(current, bool):
        return text.lower() in ("true", "yes", "1")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            return text
    return text


def _active_tasks(engine: Engine) -> list[dict[str, Any]] | None:
    try:
        from syncline.flows.tasks import list_tasks
    except ImportError:
        return None
    from sqlalchemy import inspect

    if not inspect(engine).has_table("flow_tasks"):
        return None
    return [task.as_dict() for task in list_tasks(engine, state="active", limit=200)]


def mount(app: FastAPI) -> None:
    """Add the console to ``app``."""
    console = Console(app.state.syncline)
    app.state.console = console
    app.include_router(build_router(console))

    @app.get("/console", include_in_schema=False)
    async def console_root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=307)
