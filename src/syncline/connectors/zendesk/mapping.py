"""Canonical objects ⇄ Zendesk Support records.

Outbound, every record carries its canonical id as Zendesk ``external_id``; Zendesk upserts
organizations and users by it (``create_or_update``) and Syncline looks tickets up by it.

Entitlements live on the organization, in two organization fields and one tag:

* ``organization_fields.support_level`` = the level (``"none"``, ``"basic"``, ``"standard"``,
  ``"premium"``) — a dropdown field whose option tags are those values;
* ``organization_fields.entitlement_active`` = ``true`` / ``false`` (a checkbox field);
* tag ``syncline_<level>`` while the entitlement is active and its level is not ``none``.

Setting an entitlement *replaces* the level tag: every ``syncline_basic`` / ``syncline_standard``
/ ``syncline_premium`` / ``syncline_none`` tag is removed from the organization's tags and the new
one (if any) added; tags that are not level tags (an agent's ``vip``, say) are kept as they were.
The field keys are options (``support_level_field``, ``entitlement_active_field``) because an
account may already have its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from syncline.canonical import objects as o
from syncline.canonical.events import canonical_id
from syncline.errors import ConfigError, DataQualityError

LEVEL_TAG_PREFIX = "syncline_"
LEVEL_TAGS = frozenset(f"{LEVEL_TAG_PREFIX}{level.value}" for level in o.EntitlementLevel)

_Model = TypeVar("_Model", bound=BaseModel)


@dataclass(frozen=True)
class MappingOptions:
    """Connection options that shape the records (keys of the account's organization fields)."""

    support_level_field: str = "support_level"
    entitlement_active_field: str = "entitlement_active"
    #: The support level field's Zendesk id, for webhooks that name the field by id and title only.
    support_level_field_id: str | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> MappingOptions:
        """Read the options of a connection; unknown keys are left to other parts."""
        keys: dict[str, str] = {}
        for name in ("support_level_field", "entitlement_active_field"):
            value = options.get(name, getattr(cls, name))
            if not isinstance(value, str) or not value:
                raise ConfigError(f"options.{name} must be a non-empty organization field key")
            keys[name] = value
        field_id = options.get("support_level_field_id")
        if field_id is not None and (isinstance(field_id, bool) or not isinstance(field_id, int | str)):
            raise ConfigError("options.support_level_field_id must be the field's Zendesk id")
        return cls(**keys, support_level_field_id=None if field_id is None else str(field_id))


def parse(model: type[_Model], payload: Mapping[str, Any]) -> _Model:
    """Validate a canonical payload; a bad one is a DataQualityError naming the first field."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise DataQualityError(f"invalid {model.__name__} payload: {field}: {first['msg']}",
                               code="payload_invalid", field=field) from None


# -- outbound ------------------------------------------------------------------------------------
def organization_record(account: o.Account) -> dict[str, Any]:
    """Return the ``organization`` of ``POST /organizations/create_or_update`` for an account.

    Tags and organization fields are left out on purpose: an upsert would overwrite the
    entitlement that :func:`entitlement_update` keeps there. A deleted account is upserted like
    any other; Syncline never deletes Zendesk organizations.
    """
    if not account.name:
        # Zendesk requires a unique organization name; inventing one would mislead agents.
        raise DataQualityError(f"account {account.id} has no name; Zendesk organizations need one",
                               code="payload_invalid", field="name")
    record: dict[str, Any] = {"name": account.name, "external_id": account.id}
    if account.address is not None:
        lines = [account.address.line1, account.address.line2, account.address.city,
                 account.address.region, account.address.postal_code, account.address.country]
        record["details"] = ", ".join(part for part in lines if part)
    return record


def user_record(contact: o.Contact, organization_id: int | None) -> dict[str, Any]:
    """Return the ``user`` of ``POST /users/create_or_update`` for a contact (an end user)."""
    name = " ".join(part for part in (contact.first_name, contact.last_name) if part) or contact.email
    if not name:
        raise DataQualityError(f"contact {contact.id} has neither a name nor an email; Zendesk users need a name",
                               code="payload_invalid", field="first_name")
    record: dict[str, Any] = {"name": name, "external_id": contact.id, "role": "end-user"}
    if contact.email:
        record["email"] = contact.email
    if organization_id is not None:
        record["organization_id"] = organization_id
    return record


def entitlement_update(
    entitlement: o.Entitlement, current_tags: Iterable[str], options: MappingOptions
) -> dict[str, Any]:
    """Return the ``organization`` of ``PUT /organizations/{id}`` that sets the entitlement.

    ``tags`` replaces the organization's whole tag list in Zendesk, so it is built from the
    current tags: level tags out, the new level tag in, every other tag kept in its order.
    """
    tags = [tag for tag in current_tags if tag not in LEVEL_TAGS]
    if entitlement.active and entitlement.level is not o.EntitlementLevel.NONE:
        tags.append(f"{LEVEL_TAG_PREFIX}{entitlement.level.value}")
    return {
        "organization_fields": {
            options.support_level_field: entitlement.level.value,
            options.entitlement_active_field: entitlement.active,
        },
        "tags": tags,
    }


def ticket_create(ticket: o.SupportTicket, organization_id: int | None) -> dict[str, Any]:
    """Return the ``ticket`` of ``POST /tickets``: the description becomes the first comment."""
    record: dict[str, Any] = {
        "external_id": ticket.id,
        "subject": ticket.subject,
        "comment": {"body": ticket.description, "public": False},
        "priority": ticket.priority.value,
        "tags": list(ticket.tags),
    }
    if organization_id is not None:
        record["organization_id"] = organization_id
    return record


def ticket_update(ticket: o.SupportTicket) -> dict[str, Any]:
    """Return the ``ticket`` of ``PUT /tickets/{id}`` for a ticket Syncline opened before.

    The description is not resent (it is the first comment, and comments cannot be edited);
    tags are added with ``additional_tags`` so that agents' tags survive.
    """
    return {"subject": ticket.subject, "priority": ticket.priority.value, "additional_tags": list(ticket.tags)}


# -- inbound -------------------------------------------------------------------------------------
def parse_time(value: Any, what: str) -> datetime:
    """Parse Zendesk's ISO 8601 time (``2099-07-07T05:10:01Z``, sometimes with nanoseconds)."""
    if not isinstance(value, str) or not value:
        raise DataQualityError(f"{what} has no time", code="field_missing", field="time")
    text = value.strip().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        # Python parses at most 6 fractional digits; Zendesk sends up to 9.
        digits = "".join(ch for ch in rest if ch.isdigit())
        text = f"{head}.{digits[:6]}{rest[len(digits):]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise DataQualityError(f"{what}: {value!r} is not an ISO 8601 time", code="field_invalid",
                               field="time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def account_id_of(connection: str, organization: Mapping[str, Any]) -> str:
    """Return the canonical account id of a Zendesk organization.

    Organizations Syncline created carry the canonical id as ``external_id``; any other gets the
    deterministic id of (connection, ``account``, Zendesk id).
    """
    external_id = organization.get("external_id")
    if isinstance(external_id, str) and external_id:
        return external_id
    return canonical_id(connection, "account", str(organization.get("id")))


def to_entitlement(connection: str, organization: Mapping[str, Any], level: Any, active: Any) -> o.Entitlement:
    """Return the Entitlement an organization's support level field now holds."""
    org_id = str(organization.get("id") or "")
    if not org_id:
        raise DataQualityError("Zendesk organization without an id", code="field_missing", field="id")
    try:
        parsed_level = o.EntitlementLevel(str(level).strip().lower())
    except ValueError:
        known = ", ".join(item.value for item in o.EntitlementLevel)
        raise DataQualityError(f"organization {org_id}: support level {level!r} is not one of {known}",
                               code="field_invalid", field="support_level") from None
    return o.Entitlement(
        id=canonical_id(connection, "entitlement", org_id),
        source=o.SourceRef(system=connection, object_type="organization", external_id=org_id),
        account_id=account_id_of(connection, organization),
        level=parsed_level,
        active=parsed_level is not o.EntitlementLevel.NONE if active is None else _truthy(active),
    )


def to_support_ticket(connection: str, ticket: Mapping[str, Any]) -> o.SupportTicket:
    """Return the SupportTicket of a webhook ``detail`` (ids as strings, enums upper case)."""
    ticket_id = str(ticket.get("id") or "")
    if not ticket_id:
        raise DataQualityError("Zendesk ticket without an id", code="field_missing", field="id")
    external_id = ticket.get("external_id")
    canonical = (external_id if isinstance(external_id, str) and external_id
                 else canonical_id(connection, "support_ticket", ticket_id))
    priority_text = str(ticket.get("priority") or "normal").lower()
    try:
        priority = o.TicketPriority(priority_text)
    except ValueError:
        priority = o.TicketPriority.NORMAL
    tags = ticket.get("tags")
    return o.SupportTicket(
        id=canonical,
        source=o.SourceRef(system=connection, object_type="ticket", external_id=ticket_id),
        # the webhook names the organization by Zendesk id only; the cross-reference resolves it
        account_id=None,
        subject=str(ticket.get("subject") or ""),
        description=str(ticket.get("description") or ""),
        priority=priority,
        tags=[str(tag) for tag in tags] if isinstance(tags, list) else [],
    )


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)
