"""A full demo run leaks no secret: not in logs, metrics, problem bodies, API answers or console pages."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx
import pytest

from syncline.api import create_app
from syncline.api.auth import Role, create_key, create_user
from syncline.demo import DemoEnvironment, drive_stripe, sandbox_json
from syncline.runtime import Syncline
from syncline.sandbox import Faults, ServerThread
from tests.api._stack import captured_logs

PASSWORD = "demo operator password 1"


def _console_pages(url: str, transactions: list[str]) -> list[str]:
    pages: list[str] = []
    with httpx.Client(base_url=url, timeout=10, follow_redirects=True) as client:
        login = client.get("/console/login").text
        token = re.search(r'name="csrf" value="([^"]+)"', login)
        assert token
        pages.append(client.post("/console/login", data={"csrf": token.group(1), "username": "finance",
                                                         "password": PASSWORD}).text)
        for path in ("/console/exceptions?state=all", "/console/connections", "/console/tasks", "/console/audit",
                     "/console/audit?verify=1"):
            pages.append(client.get(path).text)
        for exception_id in re.findall(r'href="/console/exceptions/(\d+)"', pages[1])[:5]:
            pages.append(client.get(f"/console/exceptions/{exception_id}").text)
        for key in transactions:
            pages.append(client.get(f"/console/transactions/{key}").text)
    return pages


def _api_answers(url: str, key: str) -> list[str]:
    bodies: list[str] = []
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, timeout=10) as client:
        # Problems: no key, unknown key, unknown connection, forged signature, invalid request.
        bodies.append(client.get("/v1/exceptions").text)
        bodies.append(client.get("/v1/exceptions", headers={"X-API-Key": key[:-4] + "AAAA"}).text)
        bodies.append(client.post("/v1/webhooks/nope", content=b"{}").text)
        bodies.append(client.post("/v1/webhooks/stripe", content=b'{"id": "evt_x"}',
                                  headers={"Stripe-Signature": "t=1,v1=00"}).text)
        bodies.append(client.get("/v1/deliveries", params={"limit": 0}, headers=auth).text)
        for path in ("/v1/connections", "/v1/events", "/v1/deliveries?limit=20", "/v1/exceptions?state=all",
                     "/v1/audit", "/v1/keys", "/v1/status", "/openapi.json", "/health", "/metrics"):
            bodies.append(client.get(path, headers=auth).text)
        events = client.get("/v1/events", params={"limit": 5}, headers=auth).json()["items"]
        for event in events:
            bodies.append(client.get(f"/v1/events/{event['id']}", headers=auth).text)
        rows = client.get("/v1/deliveries", params={"limit": 5}, headers=auth).json()["items"]
        for row in rows:
            bodies.append(client.get(f"/v1/deliveries/{row['id']}", headers=auth).text)
            bodies.append(client.get(f"/v1/transactions/{row['canonical_id']}", headers=auth).text)
    return bodies


def test_no_configured_secret_appears_anywhere_after_a_demo_run(tmp_path: Path,
                                                                capfd: pytest.CaptureFixture[str]) -> None:
    env = DemoEnvironment(
        tmp_path, netsuite_faults=Faults(server_error_rate=0.05, rate_limited_rate=0.05, seed=3),
        stripe_webhooks={"duplicate_rate": 0.1},
    ).start()
    syncline = Syncline(env.config())
    syncline.migrate()
    admin_key = create_key(syncline.engine, "demo-admin", Role.ADMIN, rate_per_minute=100_000)[1]
    create_user(syncline.engine, "finance", PASSWORD, Role.OPERATOR)
    with captured_logs("DEBUG") as written:
        server = ServerThread(create_app(syncline, run_workers=True)).start()
        try:
            env.subscribe(server.url)
            result = asyncio.run(drive_stripe(env.stripe_server.url, env.env["SYNCLINE_DEMO_STRIPE_KEY"],
                                              invoices=6))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                idle = sandbox_json(env.stripe_server.url, "/_sandbox/webhooks/idle").get("idle")
                if idle and not any(syncline.backlog().values()):
                    break
                time.sleep(0.2)
            answers = _api_answers(server.url, admin_key)
            transactions = re.findall(r'"canonical_id":"([^"]+)"', answers[7])[:3]
            assert transactions
            produced = answers + _console_pages(server.url, transactions)
        finally:
            server.stop()
            syncline.close()
            env.stop()
    captured = capfd.readouterr()
    logs = "".join(written)
    produced += [captured.out, captured.err, logs]
    secrets = dict(env.env) | {"admin key": admin_key, "console password": PASSWORD}
    assert len(result.invoices) == 6
    assert '"event": "webhook rejected"' in logs  # the structured logs were captured (the forged webhook)
    assert any("syncline_webhooks_total" in text for text in produced)  # the metrics were read
    assert any("Needs attention" in text for text in produced)  # the console was read
    assert sum(len(text) for text in produced) > 50_000
    for name, value in secrets.items():
        leaks = [text[max(0, text.find(value) - 80):text.find(value) + 80] for text in produced if value in text]
        assert not leaks, f"{name} leaked: {leaks[:2]}"
