"""The console over real HTTP (no browser): sign-in, CSRF, roles, pages and actions."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import select

from syncline.api.auth import Role, revoke_key
from syncline.observe.audit import entries
from syncline.store import deliveries
from tests.api._stack import PASSWORD, Stack, running_stack


@pytest.fixture
def stack(store_url: str) -> Iterator[Stack]:
    with running_stack(store_url) as running:
        yield running


def _token(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


@contextmanager
def sign_in(stack: Stack, role: Role, *, with_key: bool = False) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=10, follow_redirects=True) as client:
        token = _token(client.get("/console/login").text)
        form = {"csrf": token, "next": "/console/"}
        if with_key:
            form["api_key"] = stack.keys[role]
        else:
            form |= {"username": f"{role}-user", "password": PASSWORD}
        response = client.post("/console/login", data=form)
        assert response.url.path == "/console/", response.text
        yield client


def test_pages_need_a_session_and_wrong_credentials_are_refused(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        assert client.get("/console/exceptions").headers["location"].startswith("/console/login")
        token = _token(client.get("/console/login").text)
        wrong = client.post("/console/login", data={"csrf": token, "username": "viewer-user", "password": "nope"})
        assert "error=" in wrong.headers["location"]
        forged = client.post("/console/login", data={"csrf": "forged", "api_key": stack.keys[Role.ADMIN]})
        assert "error=" in forged.headers["location"]
        assert "syncline_session" not in client.cookies


def test_viewer_sees_no_action_buttons_and_posts_are_refused(stack: Stack) -> None:
    exception_id = stack.park_invoice("inv_v")
    with sign_in(stack, Role.VIEWER) as viewer:
        page = viewer.get(f"/console/exceptions/{exception_id}").text
        assert "tax code TX-99 is unknown" in page
        assert 'id="retry"' not in page and 'id="save-retry"' not in page
        assert 'type="checkbox"' not in viewer.get("/console/exceptions").text
        refused = viewer.post(f"/console/exceptions/{exception_id}/retry", data={"csrf": _token(page)})
        assert refused.status_code == 403
    with stack.syncline.engine.connect() as conn:
        assert conn.execute(select(deliveries.c.state).where(deliveries.c.canonical_id == "inv_v")).scalar() == "parked"


def test_operator_retries_from_the_console_with_csrf_and_the_action_is_audited(stack: Stack) -> None:
    exception_id = stack.park_invoice("inv_o")
    with sign_in(stack, Role.OPERATOR, with_key=True) as operator:
        page = operator.get(f"/console/exceptions/{exception_id}").text
        assert 'id="retry"' in page
        assert "125.00 USD" in page  # money shown in major units
        no_token = operator.post(f"/console/exceptions/{exception_id}/retry", data={})
        assert no_token.status_code == 403
        done = operator.post(f"/console/exceptions/{exception_id}/retry", data={"csrf": _token(page)})
        assert "Sent again" in done.text
    stack.wait_for(lambda: _state(stack, "inv_o") == "done")
    (entry,) = entries(stack.syncline.engine, action="exceptions.retry")
    assert entry.actor_name == "operator-key"


def test_revoking_a_key_ends_its_console_session(stack: Stack) -> None:
    with sign_in(stack, Role.OPERATOR, with_key=True) as operator:
        assert operator.get("/console/connections").url.path == "/console/connections"
        key_id = stack.keys[Role.OPERATOR].split("_")[1]
        assert revoke_key(stack.syncline.engine, key_id)
        assert operator.get("/console/connections").url.path == "/console/login"


def test_every_page_renders_for_an_admin(stack: Stack) -> None:
    exception_id = stack.park_invoice("inv_a")
    with sign_in(stack, Role.ADMIN) as admin:
        for path in ("/console/", "/console/exceptions", f"/console/exceptions/{exception_id}",
                     "/console/transactions/inv_a", "/console/connections", "/console/tasks", "/console/audit",
                     "/console/audit?verify=1", "/console/exceptions?state=all&error_class=data_quality"):
            response = admin.get(path)
            assert response.status_code == 200, (path, response.text[:500])
            assert "Content-Security-Policy" in response.headers
        assert admin.get("/console/transactions/nothing-here").status_code == 404
        connections = admin.get("/console/connections").text
        paused = admin.post("/console/connections/erp/pause",
                            data={"csrf": _token(connections), "reason": "ERP upgrade"})
        assert "ERP upgrade" in paused.text and "erp paused" in paused.text
        timeline = admin.get("/console/transactions/inv_a").text
        assert "Needs attention" in timeline and "tax code TX-99 is unknown" in timeline


def _state(stack: Stack, canonical_id: str) -> str:
    with stack.syncline.engine.connect() as conn:
        return str(conn.execute(select(deliveries.c.state).where(deliveries.c.canonical_id == canonical_id)).scalar())


def test_an_operator_decides_an_open_task_from_the_console(stack: Stack) -> None:
    from syncline.flows._tables import flow_tasks

    now = time.time()
    with stack.syncline.engine.begin() as conn:
        conn.execute(flow_tasks.insert().values(
            id="task_1", instance_id="onboarding:opp_1", flow="onboarding", correlation_id="opp_1",
            kind="approve_discount", title="Approve a 30 % discount for Acme", owner_role="operator", state="open",
            due_at=now - 60, data="{}", outcomes='["approved", "rejected"]', created_at=now - 3600, updated_at=now,
        ))
    with sign_in(stack, Role.VIEWER) as viewer:
        page = viewer.get("/console/tasks").text
        assert "Approve a 30 % discount for Acme" in page and 'value="approved"' not in page
    with sign_in(stack, Role.OPERATOR) as operator:
        page = operator.get("/console/tasks").text
        assert 'value="approved"' in page
        done = operator.post("/console/tasks/task_1/complete",
                             data={"csrf": _token(page), "outcome": "approved", "reason": "within policy"})
        assert "Decision recorded" in done.text
        assert "Approve a 30 % discount" not in done.text  # no longer open
    with stack.syncline.engine.connect() as conn:
        row = conn.execute(select(flow_tasks.c.state, flow_tasks.c.outcome, flow_tasks.c.completed_by)).one()
    assert tuple(row) == ("completed", "approved", "operator-user")
    (entry,) = entries(stack.syncline.engine, action="task.complete")
    assert entry.actor_name == "operator-user" and entry.detail["reason"] == "within policy"
