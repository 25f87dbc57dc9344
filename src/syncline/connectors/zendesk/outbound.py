"""Zendesk outbound operations: organizations, users, entitlements and tickets.

=====================  ==============  ====================================================
operation              accepts         Zendesk requests
=====================  ==============  ====================================================
upsert_organization    account         ``POST /organizations/create_or_update`` by external_id
upsert_user            contact         ``GET /organizations/search?external_id=`` (its account),
                                       ``POST /users/create_or_update`` by external_id;
                                       batches: ``POST /users/create_or_update_many`` + job polling
set_entitlement        entitlement     ``GET /organizations/search?external_id=`` (the account),
                                       ``PUT /organizations/{id}`` (fields + level tag)
open_ticket            support_ticket  ``GET /tickets?external_id=``, then ``PUT /tickets/{id}`` or
                                       ``POST /tickets``
=====================  ==============  ====================================================

Exactly once. Organizations and users are upserts keyed by ``external_id`` = canonical id, so a
retry after a timeout or crash updates the record the first attempt made. Zendesk has no ticket
upsert: ``open_ticket`` looks the ticket up by ``external_id`` first and creates it only when
absent. Two deliveries of the same ticket racing between look-up and create would make two
tickets. They do not race in Syncline: the delivery worker claims only the head row of each
ordering key (the canonical id), so the next attempt starts after the previous one ended, and
the row's lease (60 s by default) outlasts the request timeout (30 s), so a hung attempt is
given up before its row can be claimed again. The retry of a create whose answer was lost finds
the ticket and updates it instead. The look-up is a filtered ticket list, not the search API
(whose index lags). Should two tickets with one external id exist anyway (created outside
Syncline), updates go to the older one.

A referenced organization that does not exist (a contact's or an entitlement's account not
upserted yet) is a :class:`~syncline.errors.DataQualityError` with code ``not_found``: it is
parked with the account id in its message, and re-driven once the account is synced. The router
delivers a contact after its account (``after_key``), so contacts meet this only when the
account itself failed; a ticket opens without an organization instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from syncline.canonical import objects as o
from syncline.connectors.base import DeliveryResult, Operation
from syncline.connectors.zendesk import mapping
from syncline.connectors.zendesk.client import API, MAX_BATCH, dumps
from syncline.connectors.zendesk.errors import error_from_response, job_result_error, transport_errors
from syncline.errors import DataQualityError, DeliveryError, SynclineError, TransientError

log = structlog.get_logger("syncline.connectors.zendesk")

#: Outbound operations by name, as routes refer to them.
OPERATIONS: Mapping[str, Operation] = {
    op.name: op
    for op in [
        Operation("upsert_organization", "account", "organization by external_id (create_or_update)"),
        Operation("upsert_user", "contact", "end user by external_id, in its account's organization",
                  batchable=True),
        Operation("set_entitlement", "entitlement", "support level organization fields and level tag"),
        Operation("open_ticket", "support_ticket", "ticket by external_id: looked up, then updated or created"),
    ]
}
_MODELS: dict[str, type[Any]] = {
    "account": o.Account, "contact": o.Contact, "entitlement": o.Entitlement, "support_ticket": o.SupportTicket,
}
_JOB_DONE = frozenset({"completed", "failed", "killed"})


@dataclass(frozen=True)
class OutboundOptions:
    """How the connector writes: field keys, and how it waits for bulk jobs."""

    mapping: mapping.MappingOptions
    job_poll_seconds: float = 1.0
    #: Below the delivery lease (60 s by default), so a slow job is given up before its rows
    #: can be claimed again; the retry is an upsert by external_id either way.
    job_timeout_seconds: float = 40.0


async def deliver(
    http: httpx.AsyncClient, operation: str, payload: Mapping[str, Any], options: OutboundOptions
) -> DeliveryResult:
    """Apply one operation to its canonical payload; raise a DeliveryError subclass on failure."""
    op = _operation(operation, payload)
    record = mapping.parse(_MODELS[op.accepts], payload)
    if isinstance(record, o.Account):
        return await _upsert_organization(http, record)
    if isinstance(record, o.Contact):
        return await _upsert_user(http, record)
    if isinstance(record, o.Entitlement):
        return await _set_entitlement(http, record, options.mapping)
    assert isinstance(record, o.SupportTicket)
    return await _open_ticket(http, record)


async def deliver_users(
    http: httpx.AsyncClient, items: Sequence[tuple[str, Mapping[str, Any]]], options: OutboundOptions
) -> list[DeliveryResult | DeliveryError]:
    """Upsert contacts 100 at a time with ``create_or_update_many``; one result per item, in order."""
    results: list[DeliveryResult | DeliveryError] = []
    for start in range(0, len(items), MAX_BATCH):
        results.extend(await _deliver_user_chunk(http, items[start:start + MAX_BATCH], options))
    return results


# -- one record at a time ------------------------------------------------------------------------
async def _upsert_organization(http: httpx.AsyncClient, account: o.Account) -> DeliveryResult:
    what = f"upsert_organization {account.id}"
    body = await _send(http, "POST", f"{API}/organizations/create_or_update", what,
                       {"organization": mapping.organization_record(account)}, ok=(200, 201))
    return DeliveryResult(_id_of(body.json, "organization", what), "account", created=body.status == 201)


async def _upsert_user(http: httpx.AsyncClient, contact: o.Contact) -> DeliveryResult:
    what = f"upsert_user {contact.id}"
    organization_id: int | None = None
    if contact.account_id:
        organization_id = _zendesk_id(await find_organization(http, contact.account_id, what), what)
    body = await _send(http, "POST", f"{API}/users/create_or_update", what,
                       {"user": mapping.user_record(contact, organization_id)}, ok=(200, 201))
    return DeliveryResult(_id_of(body.json, "user", what), "contact", created=body.status == 201)


async def _set_entitlement(
    http: httpx.AsyncClient, entitlement: o.Entitlement, options: mapping.MappingOptions
) -> DeliveryResult:
    what = f"set_entitlement {entitlement.id}"
    organization = await find_organization(http, entitlement.account_id, what)
    tags = organization.get("tags")
    update = mapping.entitlement_update(entitlement, tags if isinstance(tags, list) else [], options)
    # Zendesk has no compare-and-set on organizations: an agent's tag edit landing between the
    # look-up above and this PUT is overwritten (the look-up is milliseconds old).
    body = await _send(http, "PUT", f"{API}/organizations/{_zendesk_id(organization, what)}", what,
                       {"organization": update}, ok=(200,))
    return DeliveryResult(_id_of(body.json, "organization", what), "entitlement", created=False)


async def _open_ticket(http: httpx.AsyncClient, ticket: o.SupportTicket) -> DeliveryResult:
    what = f"open_ticket {ticket.id}"
    found = await _send(http, "GET", f"{API}/tickets", what, params={"external_id": ticket.id}, ok=(200,))
    existing = [t for t in _list(found.json, "tickets", what) if str(t.get("external_id")) == ticket.id]
    if existing:
        ticket_id = min(_zendesk_id(t, what) for t in existing)  # the first one opened, should a stray twin exist
        body = await _send(http, "PUT", f"{API}/tickets/{ticket_id}", what,
                           {"ticket": mapping.ticket_update(ticket)}, ok=(200,))
        return DeliveryResult(_id_of(body.json, "ticket", what), "support_ticket", created=False)
    organization_id: int | None = None
    if ticket.account_id:
        # A ticket about an exception must open even when its account never reached Zendesk.
        matches = await _organizations_by_external_id(http, ticket.account_id, what)
        organization_id = _zendesk_id(matches[0], what) if len(matches) == 1 else None
    body = await _send(http, "POST", f"{API}/tickets", what,
                       {"ticket": mapping.ticket_create(ticket, organization_id)}, ok=(201,))
    return DeliveryResult(_id_of(body.json, "ticket", what), "support_ticket", created=True)


async def find_organization(http: httpx.AsyncClient, external_id: str, what: str) -> dict[str, Any]:
    """Return the organization whose external_id is ``external_id``, or raise DataQualityError."""
    matches = await _organizations_by_external_id(http, external_id, what)
    if not matches:
        raise DataQualityError(
            f"{what}: Zendesk has no organization with external_id {external_id}; sync the account first",
            code="not_found", field="account_id", external_id=external_id)
    if len(matches) > 1:
        # external_id is case-insensitive in Zendesk: two accounts differing in case collide
        ids = ", ".join(str(m.get("id")) for m in matches)
        raise DataQualityError(f"{what}: several Zendesk organizations ({ids}) have external_id {external_id}",
                               code="ambiguous", field="account_id")
    return matches[0]


async def _organizations_by_external_id(http: httpx.AsyncClient, external_id: str, what: str) -> list[dict[str, Any]]:
    found = await _send(http, "GET", f"{API}/organizations/search", what, params={"external_id": external_id},
                        ok=(200,))
    return [org for org in _list(found.json, "organizations", what)
            if str(org.get("external_id", "")).lower() == external_id.lower()]


# -- batches of users ----------------------------------------------------------------------------
async def _deliver_user_chunk(
    http: httpx.AsyncClient, items: Sequence[tuple[str, Mapping[str, Any]]], options: OutboundOptions
) -> list[DeliveryResult | DeliveryError]:
    results: list[DeliveryResult | DeliveryError | None] = [None] * len(items)
    contacts: dict[int, o.Contact] = {}
    for index, (_key, payload) in enumerate(items):
        try:
            _operation("upsert_user", payload)
            contacts[index] = mapping.parse(o.Contact, payload)
        except DeliveryError as exc:
            results[index] = exc
    what = f"upsert_user batch of {len(items)}"
    try:
        organizations = await _organizations_by_external_ids(
            http, sorted({c.account_id for c in contacts.values() if c.account_id}), what)
        users: list[dict[str, Any]] = []
        sent: list[int] = []
        for index, contact in contacts.items():
            try:
                org_id = None
                if contact.account_id:
                    if contact.account_id.lower() not in organizations:
                        raise DataQualityError(
                            f"upsert_user {contact.id}: Zendesk has no organization with external_id "
                            f"{contact.account_id}; sync the account first",
                            code="not_found", field="account_id", external_id=contact.account_id)
                    org_id = organizations[contact.account_id.lower()]
                users.append(mapping.user_record(contact, org_id))
                sent.append(index)
            except DeliveryError as exc:
                results[index] = exc
        if users:
            for index, answer in zip(sent, await _run_user_job(http, users, options, what), strict=True):
                results[index] = answer
    except DeliveryError as exc:
        # the whole request failed (rate limit, outage, credentials): every unanswered item shares it
        results = [exc if result is None else result for result in results]
    return [result if result is not None else TransientError(f"{what}: no answer for item {index}")
            for index, result in enumerate(results)]


async def _organizations_by_external_ids(
    http: httpx.AsyncClient, external_ids: Sequence[str], what: str
) -> dict[str, int]:
    """Return Zendesk ids by lower-cased external_id, 100 per ``show_many`` request."""
    found: dict[str, int] = {}
    for start in range(0, len(external_ids), MAX_BATCH):
        chunk = external_ids[start:start + MAX_BATCH]
        answer = await _send(http, "GET", f"{API}/organizations/show_many", what,
                             params={"external_ids": ",".join(chunk)}, ok=(200,))
        for org in _list(answer.json, "organizations", what):
            if org.get("external_id"):
                found[str(org["external_id"]).lower()] = _zendesk_id(org, what)
    return found


async def _run_user_job(
    http: httpx.AsyncClient, users: list[dict[str, Any]], options: OutboundOptions, what: str
) -> list[DeliveryResult | DeliveryError]:
    """Start ``create_or_update_many`` and poll its job; one answer per user, in request order.

    ``{"job_status": {"id": "8b72...", "status": "completed", "total": 3, "results": [
    {"index": 0, "id": 1900233268488, "status": "Created"}, {"index": 1, "id": 902860577023,
    "status": "Updated"}, {"index": 2, "error": "UserUpdateError", "details": "Email: ...",
    "status": "Failed"}]}}``
    """
    answer = await _send(http, "POST", f"{API}/users/create_or_update_many", what, {"users": users}, ok=(200,))
    job = _job(answer.json, what)
    deadline = time.monotonic() + options.job_timeout_seconds
    while str(job.get("status")) not in _JOB_DONE:
        if time.monotonic() > deadline:
            # the job may still run; the retry is an upsert by external_id, so it is safe
            raise TransientError(f"{what}: job {job.get('id')} not done after {options.job_timeout_seconds} s",
                                 code="job_timeout")
        await asyncio.sleep(options.job_poll_seconds)
        polled = await _send(http, "GET", f"{API}/job_statuses/{job['id']}", what, ok=(200,))
        job = _job(polled.json, what)
    raw = job.get("results")
    if job.get("status") != "completed" or not isinstance(raw, list):
        raise TransientError(f"{what}: job {job.get('id')} ended {job.get('status')}: {job.get('message')}",
                             code="job_failed")
    answers: list[DeliveryResult | DeliveryError] = [
        TransientError(f"{what}: job {job.get('id')} has no result for item {index}", code="job_incomplete")
        for index in range(len(users))
    ]
    for position, result in enumerate(raw):
        if not isinstance(result, Mapping):
            continue
        index = result.get("index", position)
        if not isinstance(index, int) or not 0 <= index < len(users):
            continue
        label = f"upsert_user {users[index].get('external_id')}"
        if result.get("error") or str(result.get("status")) == "Failed" or result.get("id") is None:
            answers[index] = job_result_error(result, label)
        else:
            answers[index] = DeliveryResult(str(result["id"]), "contact", created=result.get("status") == "Created")
    return answers


# -- the wire ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Answer:
    status: int
    json: Any


async def _send(
    http: httpx.AsyncClient, method: str, path: str, what: str, body: Any = None, *,
    params: Mapping[str, Any] | None = None, ok: tuple[int, ...],
) -> _Answer:
    headers = {"Content-Type": "application/json"} if body is not None else None
    log.debug("zendesk request", method=method, path=path, what=what)
    with transport_errors(what):
        response = await http.request(method, path, content=None if body is None else dumps(body),
                                      params=params, headers=headers)
    if response.status_code not in ok:
        raise error_from_response(response, what)
    try:
        return _Answer(response.status_code, response.json())
    except ValueError:
        raise TransientError(f"{what}: Zendesk answered {response.status_code} with a body that is not JSON",
                             code="bad_answer", status=response.status_code) from None


def _operation(operation: str, payload: Mapping[str, Any]) -> Operation:
    op = OPERATIONS.get(operation)
    if op is None:
        raise SynclineError(f"zendesk has no operation {operation!r}", code="operation_unknown")
    kind = payload.get("object_type", op.accepts)
    if kind != op.accepts:
        raise DataQualityError(f"{operation} takes {op.accepts}, not {kind}", field="object_type")
    return op


def _id_of(body: Any, key: str, what: str) -> str:
    record = body.get(key) if isinstance(body, Mapping) else None
    if not isinstance(record, Mapping) or record.get("id") is None:
        # The write went through; the retry finds the record by external_id and answers again.
        raise TransientError(f"{what}: Zendesk answered without a {key} id", code="bad_answer")
    return str(record["id"])


def _zendesk_id(record: Mapping[str, Any], what: str) -> int:
    value = record.get("id")
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise TransientError(f"{what}: Zendesk answered a record without a numeric id", code="bad_answer")
    return int(value)


def _list(body: Any, key: str, what: str) -> list[dict[str, Any]]:
    items = body.get(key) if isinstance(body, Mapping) else None
    if not isinstance(items, list):
        raise TransientError(f"{what}: Zendesk answered without a {key} list", code="bad_answer")
    return [item for item in items if isinstance(item, dict)]


def _job(body: Any, what: str) -> dict[str, Any]:
    job = body.get("job_status") if isinstance(body, Mapping) else None
    if not isinstance(job, dict) or not job.get("id"):
        raise TransientError(f"{what}: Zendesk answered without a job_status", code="bad_answer")
    return job
