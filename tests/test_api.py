"""Webhook ingest over real HTTP: authentication, size limit, durability before the 2xx."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest
from sqlalchemy import func, select

from syncline.api import create_app
from syncline.pipeline.normalize import normalize_batch
from syncline.runtime import Syncline
from syncline.sandbox import ServerThread
from syncline.store import deliveries, exceptions, inbox
from syncline.testing import FakeVendor, sign
from tests._fake import SECRET, account_event, make_syncline


@pytest.fixture
def served(store_url: str) -> Iterator[tuple[Syncline, str]]:
    syncline = make_syncline(store_url, FakeVendor("api"))
    syncline.config.connections["src"].webhook.max_body_bytes = 4096
    server = ServerThread(create_app(syncline)).start()
    yield syncline, server.url
    server.stop()
    syncline.close()


def post(url: str, body: bytes, signature: str | None = None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["x-fake-signature"] = signature
    return httpx.post(f"{url}/v1/webhooks/src", content=body, headers=headers)


def rows(syncline: Syncline, table) -> int:  # type: ignore[no-untyped-def]
    with syncline.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_valid_event_is_stored_before_the_ack_and_duplicates_are_flagged(served: tuple[Syncline, str]) -> None:
    syncline, url = served
    body = account_event("evt_1", "account_1")
    first = post(url, body, sign(SECRET, body))
    assert first.status_code == 200
    assert first.json() == {"received": True, "duplicate": False, "parked": False}
    assert rows(syncline, inbox) == 1  # durable by the time the 200 arrived
    again = post(url, body, sign(SECRET, body))
    assert again.json()["duplicate"] is True
    assert rows(syncline, inbox) == 1


@pytest.mark.parametrize("signature", [None, "0" * 64, "not-hex"])
def test_forged_or_missing_signature_is_a_problem_and_stores_nothing(
    served: tuple[Syncline, str], signature: str | None
) -> None:
    syncline, url = served
    response = post(url, account_event("evt_2", "account_2"), signature)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 400 and problem["code"].startswith("signature_")
    assert problem["type"].endswith(problem["code"])
    assert rows(syncline, inbox) == 0


def test_malformed_json_with_valid_signature_is_kept_raw_and_parked(served: tuple[Syncline, str]) -> None:
    syncline, url = served
    body = b'{"id": "evt_3", "type": "account.created", '
    response = post(url, body, sign(SECRET, body))
    assert response.status_code == 200 and response.json()["parked"] is True
    with syncline.engine.connect() as conn:
        stored = conn.execute(select(inbox.c.state, inbox.c.body, inbox.c.error)).one()
        problem = conn.execute(select(exceptions.c.error_class, exceptions.c.reason)).one()
    assert stored.state == "parked" and stored.body == body
    assert "not valid JSON" in stored.error
    assert problem.error_class == "data_quality" and "not valid JSON" in problem.reason


def test_oversized_body_is_refused_with_413(served: tuple[Syncline, str]) -> None:
    syncline, url = served
    body = orjson.dumps({"id": "evt_big", "type": "account.created", "pad": "x" * 5000})
    response = post(url, body, sign(SECRET, body))
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert rows(syncline, inbox) == 0


def test_unknown_event_type_is_accepted_and_recorded_as_ignored(served: tuple[Syncline, str]) -> None:
    syncline, url = served
    body = orjson.dumps({"id": "evt_4", "type": "plan.created", "data": {}})
    assert post(url, body, sign(SECRET, body)).status_code == 200
    normalize_batch(syncline.engine, syncline.connectors, syncline.router)
    with syncline.engine.connect() as conn:
        assert conn.execute(select(inbox.c.state)).scalar_one() == "ignored"
    assert rows(syncline, deliveries) == 0


def test_unknown_connection_is_a_404_problem(served: tuple[Syncline, str]) -> None:
    _, url = served
    response = httpx.post(f"{url}/v1/webhooks/nope", content=b"{}")
    assert response.status_code == 404
    assert response.json()["code"] == "connection_unknown"
