from datetime import UTC, datetime

import jsonschema
import pytest

from syncline.canonical import (
    Account,
    Invoice,
    InvoiceLine,
    Money,
    SourceRef,
    canonical_id,
    event_types,
    json_schemas,
    make_event,
)


def _invoice() -> Invoice:
    usd = "USD"
    return Invoice(
        id=canonical_id("stripe", "invoice", "in_1"),
        source=SourceRef(system="stripe", object_type="invoice", external_id="in_1"),
        account_id=canonical_id("stripe", "account", "cus_1"),
        status="open",
        currency=usd,
        subtotal=Money(amount=1000, currency=usd),
        tax=Money(amount=190, currency=usd),
        total=Money(amount=1190, currency=usd),
        amount_paid=Money.zero(usd),
        amount_due=Money(amount=1190, currency=usd),
        lines=[InvoiceLine(id="il_1", amount=Money(amount=1000, currency=usd))],
    )


def test_event_ids_are_deterministic_per_vendor_event() -> None:
    time = datetime(2026, 11, 1, tzinfo=UTC)
    first = make_event("invoice.issued", _invoice(), connection="stripe", vendor_event_id="evt_1", time=time)
    again = make_event("invoice.issued", _invoice(), connection="stripe", vendor_event_id="evt_1", time=time)
    other = make_event("invoice.issued", _invoice(), connection="stripe", vendor_event_id="evt_2", time=time)
    assert first.id == again.id != other.id
    assert first.specversion == "1.0"
    assert first.subject == _invoice().id
    assert first.dataschema == "urn:syncline:schema:invoice.issued:v1"


def test_event_refuses_the_wrong_data_model() -> None:
    account = Account(id="account_1", source=SourceRef(system="s", object_type="customer", external_id="c"))
    with pytest.raises(TypeError, match="carries Invoice"):
        make_event("invoice.issued", account, connection="s", vendor_event_id="e", time=datetime.now(UTC))


def test_every_event_type_exports_a_schema_that_validates_its_events() -> None:
    schemas = json_schemas()
    assert set(schemas) == {f"{name}.v{kind.version}" for name, kind in event_types().items()}
    event = make_event(
        "invoice.paid", _invoice(), connection="stripe", vendor_event_id="evt_9", time=datetime(2026, 1, 1, tzinfo=UTC)
    )
    document = event.model_dump(mode="json")
    jsonschema.validate(document, schemas["invoice.paid.v1"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, schemas["invoice.issued.v1"])  # type is a const
    document["data"]["total"]["amount"] = "11.90"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, schemas["invoice.paid.v1"])


def test_canonical_ids_are_stable_and_typed() -> None:
    assert canonical_id("stripe", "invoice", "in_1") == canonical_id("stripe", "invoice", "in_1")
    assert canonical_id("stripe", "invoice", "in_1") != canonical_id("stripe-eu", "invoice", "in_1")
    assert canonical_id("stripe", "invoice", "in_1").startswith("invoice_")
