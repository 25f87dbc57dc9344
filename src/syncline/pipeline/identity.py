"""Identity across systems: ids that come back from a target system resolve to the ids Syncline wrote.

When Syncline creates a customer in Stripe for the Salesforce account ``account_5f1c…``, Stripe
answers ``cus_Q1…`` and later sends ``customer.updated`` and ``invoice.paid`` webhooks naming
``cus_Q1…``. Decoded naively those would mint ``canonical_id("stripe", "account", "cus_Q1…")``, a
second identity for the same customer, and the ERP would get a duplicate. So every successful
delivery records an *alias* (the canonical id the target's own id would decode to → the canonical
id Syncline delivered), and the normalizer rewrites aliased ids in decoded events — the subject
and every ``id`` / ``*_id`` field, nested lines included — before routing, in one query per batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, select

from syncline.canonical.events import CloudEvent, canonical_id
from syncline.store import aliases

_CHUNK = 500


def alias_row(
    system: str, object_type: str, external_id: str, delivered_id: str, now: float
) -> dict[str, Any] | None:
    """Return the alias row for a record delivered to ``system``, or None when there is nothing to alias."""
    alias = canonical_id(system, object_type, external_id)
    if alias == delivered_id:
        return None
    return {"alias_id": alias, "canonical_id": delivered_id, "system": system, "created_at": now}


def _collect(value: Any, into: set[str]) -> None:
    # Hot path (every decoded event): recurse only into containers.
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str):
                if key == "id" or key.endswith("_id"):
                    into.add(item)
            elif isinstance(item, (dict, list)):
                _collect(item, into)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)):
                _collect(item, into)


def _rewrite(value: Any, found: Mapping[str, str]) -> Any:
    if isinstance(value, Mapping):
        return {
            key: (found.get(item, item) if isinstance(item, str) and (key == "id" or key.endswith("_id"))
                  else _rewrite(item, found))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_rewrite(item, found) for item in value]
    return value


def lookup(conn: Connection, ids: Iterable[str]) -> dict[str, str]:
    """Return ``{alias: canonical id}`` for those of ``ids`` that are aliases."""
    wanted = sorted(set(ids))
    found: dict[str, str] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start:start + _CHUNK]
        rows = conn.execute(
            select(aliases.c.alias_id, aliases.c.canonical_id).where(aliases.c.alias_id.in_(chunk))
        ).all()
        found.update((row.alias_id, row.canonical_id) for row in rows)
    return found


def resolve(conn: Connection, events: Sequence[CloudEvent]) -> list[CloudEvent]:
    """Return ``events`` with aliased ids replaced by the canonical ids Syncline delivered."""
    ids: set[str] = set()
    for event in events:
        if event.subject:
            ids.add(event.subject)
        _collect(event.data, ids)
    found = lookup(conn, ids) if ids else {}
    if not found:
        return list(events)
    resolved = []
    for event in events:
        subject = found.get(event.subject, event.subject) if event.subject else event.subject
        data = _rewrite(event.data, found)
        if subject != event.subject or data != event.data:
            event = event.model_copy(update={"subject": subject, "data": data})
        resolved.append(event)
    return resolved
