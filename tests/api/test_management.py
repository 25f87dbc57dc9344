"""The management API over real HTTP: roles, problem+json, exception actions, audit, keys."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from sqlalchemy import select

from syncline.api.auth import Role
from syncline.api.management import record_config
from syncline.observe.audit import entries, verify
from syncline.observe.redaction import MASK
from syncline.store import deliveries
from syncline.testing import FakeVendor
from tests._fake import SECRET, make_syncline
from tests.api._stack import Stack, running_stack


@pytest.fixture
def stack(store_url: str) -> Iterator[Stack]:
    with running_stack(store_url) as running:
        yield running


def _delivery_state(stack: Stack, canonical_id: str) -> str:
    with stack.syncline.engine.connect() as conn:
        return str(conn.execute(select(deliveries.c.state).where(deliveries.c.canonical_id == canonical_id)).scalar())


def test_missing_unknown_and_insufficient_keys_get_problem_json(stack: Stack) -> None:
    with stack.client(None) as anonymous:
        response = anonymous.get("/v1/exceptions")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "auth_required"
    with stack.client(None) as forged:
        response = forged.get("/v1/exceptions", headers={"X-API-Key": "slk_000000000000_guess"})
    assert (response.status_code, response.json()["code"]) == (401, "auth_invalid")
    exception_id = stack.park_invoice("inv_1")
    with stack.client(Role.VIEWER) as viewer:
        assert viewer.get("/v1/exceptions").status_code == 200
        refused = viewer.post(f"/v1/exceptions/{exception_id}/retry")
        assert (refused.status_code, refused.json()["code"]) == (403, "role_insufficient")
    with stack.client(Role.OPERATOR) as operator:
        refused = operator.post("/v1/keys", json={"name": "x", "role": "admin"})
        assert (refused.status_code, refused.json()["code"]) == (403, "role_insufficient")
    assert _delivery_state(stack, "inv_1") == "parked"  # the refused retry changed nothing
    assert [entry.action for entry in entries(stack.syncline.engine)] == ["config.change"]


def test_operator_finds_a_parked_invoice_by_vendor_id_and_retries_it(stack: Stack) -> None:
    exception_id = stack.park_invoice("inv_2")
    with stack.client(Role.OPERATOR) as operator:
        listed = operator.get("/v1/exceptions", params={"connection": "erp", "error_class": "data_quality"}).json()
        assert [item["id"] for item in listed["items"]] == [exception_id]
        assert listed["items"][0]["canonical_id"] == "inv_2"
        found = operator.get("/v1/deliveries", params={"vendor_id": "inv_2", "state": "parked"}).json()["items"]
        assert [row["canonical_id"] for row in found] == ["inv_2"]
        result = operator.post(f"/v1/exceptions/{exception_id}/retry", json={"note": "tax code added in ERP"})
        assert result.status_code == 200, result.text
        assert result.json()["changed"] == 1
        stack.wait_for(lambda: _delivery_state(stack, "inv_2") == "done")
        again = operator.post(f"/v1/exceptions/{exception_id}/retry")
        assert (again.status_code, again.json()["code"]) == (409, "exception_resolved")
        timeline = operator.get("/v1/transactions/inv_2").json()
    assert [entry["stage"] for entry in timeline["timeline"]][-2:] == ["retried", "delivered"]
    (entry,) = entries(stack.syncline.engine, action="exceptions.retry")
    assert entry.actor_name == "operator-key" and entry.detail["exception_ids"] == [exception_id]


def test_edit_payload_validates_keeps_masked_values_and_delivers_the_correction(stack: Stack) -> None:
    exception_id = stack.park_invoice("inv_3")
    with stack.client(Role.OPERATOR) as operator:
        detail = operator.get(f"/v1/exceptions/{exception_id}").json()
        payload = detail["delivery"]["payload"]
        bad = dict(payload, total={"amount": "lots", "currency": "USD"})
        refused = operator.put(f"/v1/exceptions/{exception_id}/payload", json={"payload": bad})
        assert (refused.status_code, refused.json()["code"]) == (422, "payload_invalid")
        assert _delivery_state(stack, "inv_3") == "parked"
        fixed = dict(payload, number="INV-0003-R1")
        accepted = operator.put(f"/v1/exceptions/{exception_id}/payload", json={"payload": fixed})
        assert accepted.status_code == 200, accepted.text
    stack.wait_for(lambda: _delivery_state(stack, "inv_3") == "done")
    delivered = [call for call in stack.vendor.calls if call[1] == "inv_3"]
    assert delivered[-1][2]["number"] == "INV-0003-R1"
    (edit,) = entries(stack.syncline.engine, action="delivery.edit")
    assert edit.detail["before_sha256"] != edit.detail["after_sha256"]
    assert "payload" not in edit.detail


def test_payloads_shown_to_operators_are_masked_and_masks_survive_an_edit(stack: Stack) -> None:
    stack.syncline.config.security.pii_fields = ["number"]
    exception_id = stack.park_invoice("inv_4")
    with stack.syncline.engine.begin() as conn:
        row = conn.execute(select(deliveries.c.id, deliveries.c.payload)
                           .where(deliveries.c.canonical_id == "inv_4")).one()
        conn.execute(deliveries.update().where(deliveries.c.id == row.id)
                     .values(payload=row.payload.replace('"number":null', '"number":"ceo@acme.test"')))
    with stack.client(Role.OPERATOR) as operator:
        payload = operator.get(f"/v1/exceptions/{exception_id}").json()["delivery"]["payload"]
        assert payload["number"] == MASK
        assert "ceo@acme.test" not in operator.get(f"/v1/deliveries/{row.id}").text
        edited = dict(payload, due_date="2026-12-31")
        assert operator.put(f"/v1/exceptions/{exception_id}/payload", json={"payload": edited}).status_code == 200
    stack.wait_for(lambda: _delivery_state(stack, "inv_4") == "done")
    delivered = [call for call in stack.vendor.calls if call[1] == "inv_4"][-1][2]
    assert delivered["number"] == "ceo@acme.test"
    assert delivered["due_date"] == "2026-12-31"


def test_resolve_needs_a_reason_and_bulk_needs_a_filter(stack: Stack) -> None:
    first = stack.park_invoice("inv_5")
    second = stack.park_invoice("inv_6", account="acct_2")
    with stack.client(Role.OPERATOR) as operator:
        empty = operator.post(f"/v1/exceptions/{first}/resolve", json={"reason": "   "})
        assert empty.status_code == 422 and empty.headers["content-type"] == "application/problem+json"
        resolved = operator.post(f"/v1/exceptions/{first}/resolve", json={"reason": "posted by hand in the ERP"})
        assert resolved.json()["changed"] == 1
        unfiltered = operator.post("/v1/exceptions/bulk", json={"action": "retry", "filter": {}})
        assert (unfiltered.status_code, unfiltered.json()["code"]) == (422, "filter_required")
        bulk = operator.post("/v1/exceptions/bulk", json={"action": "retry",
                                                          "filter": {"error_class": "data_quality"}})
        assert bulk.json()["matched"] == 1  # the resolved one is not retried
        listed = operator.get("/v1/exceptions", params={"state": "resolved"}).json()["items"]
    assert {item["id"] for item in listed} == {first, second}
    stack.wait_for(lambda: _delivery_state(stack, "inv_6") == "done")
    assert _delivery_state(stack, "inv_5") == "parked"


def test_admin_pauses_and_resumes_a_connection_and_manages_keys(stack: Stack) -> None:
    with stack.client(Role.ADMIN) as admin:
        paused = admin.post("/v1/connections/erp/pause", json={"reason": "ERP maintenance window"}).json()
        assert (paused["paused"], paused["health"], paused["paused_reason"]) == (True, "paused",
                                                                                  "ERP maintenance window")
        assert admin.post("/v1/connections/nope/pause", json={"reason": "x"}).json()["code"] == "connection_unknown"
        assert admin.post("/v1/connections/erp/resume").json()["paused"] is False
        created = admin.post("/v1/keys", json={"name": "bob", "role": "viewer"})
        assert created.status_code == 201
        key = created.json()["key"]
        listed = admin.get("/v1/keys")
        assert key not in listed.text and "key_hash" not in listed.text
        with stack.client(None) as bob:
            assert bob.get("/v1/connections", headers={"X-API-Key": key}).status_code == 200
            assert admin.delete(f"/v1/keys/{created.json()['key_id']}").status_code == 204
            assert bob.get("/v1/connections", headers={"X-API-Key": key}).status_code == 401
        verified = admin.get("/v1/audit/verify").json()
    assert verified == {"ok": True, "rows_checked": 5, "breaks": []}
    actions = [entry.action for entry in reversed(entries(stack.syncline.engine))]
    assert actions == ["config.change", "connection.pause", "connection.resume", "key.create", "key.revoke"]
    assert verify(stack.syncline.engine)[1] == []


def test_rate_limit_answers_429_with_retry_after(store_url: str) -> None:
    with running_stack(store_url, rate_per_minute=3) as stack, stack.client(Role.VIEWER) as viewer:
        statuses = [viewer.get("/v1/connections").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = viewer.get("/v1/connections")
        assert limited.json()["code"] == "rate_limited"
        assert 1 <= int(limited.headers["Retry-After"]) <= 20


def test_deprecated_endpoint_announces_deprecation_and_sunset(stack: Stack) -> None:
    with stack.client(Role.VIEWER) as viewer:
        response = viewer.get("/v1/status")
        schema = viewer.get("/openapi.json").json()
    assert response.status_code == 200
    assert response.headers["Deprecation"].startswith("@")
    assert response.headers["Sunset"].endswith("GMT")
    assert schema["paths"]["/v1/status"]["get"]["deprecated"] is True


def test_a_changed_configuration_is_audited_once_per_change_without_secrets(store_url: str) -> None:
    vendor = FakeVendor("erp-config")
    syncline = make_syncline(store_url, vendor)
    try:
        assert record_config(syncline) is not None
        assert record_config(syncline) is None  # same configuration: nothing new
        syncline.config.connections["erp"].budget.concurrency = 2
        syncline.config.retry.max_attempts = 5
        assert record_config(syncline) is not None
        latest = entries(syncline.engine, action="config.change", limit=1)[0]
        assert latest.detail["changed"] == ["connections.erp", "retry"]
        assert SECRET not in orjson.dumps(latest.detail).decode()
    finally:
        syncline.close()


def test_values_the_store_cannot_hold_are_client_errors_not_server_errors(stack: Stack) -> None:
    with stack.client(Role.VIEWER) as viewer:
        nul = viewer.get("/v1/audit", params={"actor": "a\x00b"})
        huge = viewer.get("/v1/audit", params={"before_seq": 2**62})
        epoch = viewer.get("/v1/exceptions", params={"since": "1700000000"})
    assert nul.status_code in (200, 422)  # PostgreSQL cannot compare text with NUL; SQLite can
    assert huge.status_code == 200
    assert (epoch.status_code, epoch.json()["code"]) == (422, "request_invalid")
