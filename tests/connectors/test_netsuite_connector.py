"""The NetSuite connector against the NetSuite sandbox, over real HTTP on localhost."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, SecretStr

from syncline.canonical import (
    Account,
    CreditMemo,
    CreditMemoLine,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    Money,
    Payment,
    PaymentStatus,
    Refund,
    SourceRef,
    TaxLine,
)
from syncline.connectors.base import ConnectionSettings, DeliveryResult, Limits
from syncline.connectors.netsuite import NetSuiteConnector, NetSuiteSandbox
from syncline.errors import (
    AuthConfigError,
    BusinessRuleError,
    ConfigError,
    DataQualityError,
    DependencyMissingError,
    RateLimitedError,
    SynclineError,
    TransientError,
)
from syncline.sandbox import Faults, ServerThread, free_port

SECRETS = {"consumer_key": "ck_test", "consumer_secret": "cs_test", "token_id": "tk_test", "token_secret": "ts_test"}
WHEN = datetime(2024, 3, 5, 12, 30, tzinfo=UTC)
FAST = Limits(concurrency=5, timeout_seconds=5)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[NetSuiteSandbox, str]]:
    sandbox = NetSuiteSandbox(account_id="TSTDRV1", closed_periods={"2023-12"}, credentials=SECRETS)
    with ServerThread(sandbox.app) as server:
        yield sandbox, server.url


@pytest.fixture
def sandbox(served: tuple[NetSuiteSandbox, str]) -> NetSuiteSandbox:
    sandbox, _ = served
    sandbox.reset()
    sandbox.faults = None
    sandbox.concurrency_limit = 15
    return sandbox


@pytest.fixture
def url(served: tuple[NetSuiteSandbox, str]) -> str:
    return served[1]


def connector(url: str, secrets: Mapping[str, str] = SECRETS, **options: Any) -> NetSuiteConnector:
    return NetSuiteConnector(ConnectionSettings(
        name="netsuite", vendor="netsuite", base_url=url,
        secrets={key: SecretStr(value) for key, value in secrets.items()},
        options={"account_id": "TSTDRV1", "subsidiary_id": "1", **options},
    ))


# -- canonical objects ------------------------------------------------------------------------
def source(kind: str, ext: str) -> SourceRef:
    return SourceRef(system="stripe", object_type=kind, external_id=ext)


def account(id: str = "account_a1", name: str = "Acme GmbH") -> Account:
    return Account(id=id, source=source("customer", "cus_1"), name=name, email="ap@acme.test", currency="USD")


def invoice(id: str = "invoice_i1", account_id: str = "account_a1", *, amount: int = 1999, currency: str = "USD",
            tax: int = 0, issued_at: datetime = WHEN) -> Invoice:
    def money(value: int) -> Money:
        return Money(amount=value, currency=currency)

    taxes = [TaxLine(amount=money(tax), jurisdiction="DE", rate_basis_points=1900)] if tax else []
    return Invoice(
        id=id, source=source("invoice", "in_1"), account_id=account_id, number="INV-0001",
        status=InvoiceStatus.OPEN, currency=currency, subtotal=money(amount), tax=money(tax),
        total=money(amount + tax), amount_paid=money(0), amount_due=money(amount + tax), issued_at=issued_at,
        lines=[InvoiceLine(id="il_1", description="Pro plan", amount=money(amount), quantity=1, taxes=taxes)],
    )


def payment(id: str = "payment_p1", invoice_id: str | None = "invoice_i1", amount: int = 1999) -> Payment:
    return Payment(
        id=id, source=source("charge", "ch_1"), account_id="account_a1", invoice_id=invoice_id,
        amount=Money(amount=amount, currency="USD"), amount_refunded=Money.zero("USD"),
        status=PaymentStatus.SUCCEEDED, paid_at=WHEN, method="card",
    )


def credit_memo(id: str = "credit_memo_c1", invoice_id: str | None = "invoice_i1") -> CreditMemo:
    return CreditMemo(
        id=id, source=source("credit_note", "cn_1"), account_id="account_a1", invoice_id=invoice_id,
        currency="USD", total=Money(amount=500, currency="USD"), reason="goodwill", issued_at=WHEN,
        lines=[CreditMemoLine(id="cnl_1", description="Goodwill", amount=Money(amount=500, currency="USD"))],
    )


def refund(id: str = "refund_r1", payment_id: str = "payment_p1") -> Refund:
    return Refund(id=id, source=source("refund", "re_1"), payment_id=payment_id, account_id="account_a1",
                  amount=Money(amount=1000, currency="USD"), refunded_at=WHEN)


OPERATION = {"account": "upsert_customer", "invoice": "upsert_invoice", "payment": "upsert_customer_payment",
             "credit_memo": "upsert_credit_memo", "refund": "upsert_customer_refund"}


async def deliver(ns: NetSuiteConnector, *objects: BaseModel, limits: Limits = FAST) -> list[DeliveryResult]:
    """Deliver each object in turn with the connector's own (signed) client."""
    results = []
    async with ns.http_client(limits) as http:
        for obj in objects:
            payload = obj.model_dump(mode="json")
            op = OPERATION[payload["object_type"]]
            results.append(await ns.deliver(http, op, payload, idempotency_key=f"{op}:{payload['id']}"))
    return results


# -- each operation ---------------------------------------------------------------------------
@pytest.mark.anyio
async def test_each_operation_creates_its_record(sandbox: NetSuiteSandbox, url: str) -> None:
    results = await deliver(connector(url), account(), invoice(), payment(), credit_memo(), refund())

    kinds = ["customer", "invoice", "customerPayment", "creditMemo", "customerRefund"]
    ids = ["account_a1", "invoice_i1", "payment_p1", "credit_memo_c1", "refund_r1"]
    for result, kind, eid in zip(results, kinds, ids, strict=True):
        (record,) = sandbox.records_with_external_id(kind, eid)
        assert result.external_id == record["id"]
        assert result.created is True
    assert [r.object_type for r in results] == ["account", "invoice", "payment", "credit_memo", "refund"]

    customer_id, invoice_id, payment_id = (r.external_id for r in results[:3])
    inv = sandbox.find("invoice", "invoice_i1")
    assert inv is not None
    fields = inv["fields"]
    assert fields["entity"] == {"externalId": "account_a1", "id": customer_id}
    assert fields["tranDate"] == "2024-03-05"
    assert fields["currency"] == {"refName": "USD"} and fields["subsidiary"] == {"id": "1"}
    assert fields["memo"] == "stripe in_1 (INV-0001)"
    assert fields["item"]["items"] == [
        {"item": {"id": "1"}, "description": "Pro plan", "quantity": 1, "amount": Decimal("19.99")}
    ]
    pay = sandbox.find("customerPayment", "payment_p1")
    assert pay is not None
    assert pay["fields"]["customer"]["id"] == customer_id
    assert pay["fields"]["apply"]["items"][0]["doc"] == {"externalId": "invoice_i1", "id": invoice_id}
    assert pay["fields"]["payment"] == Decimal("19.99")
    memo = sandbox.find("creditMemo", "credit_memo_c1")
    assert memo is not None and memo["fields"]["createdFrom"]["id"] == invoice_id
    ref = sandbox.find("customerRefund", "refund_r1")
    assert ref is not None and ref["fields"]["apply"]["items"][0]["doc"]["id"] == payment_id


@pytest.mark.anyio
async def test_tax_lines_travel_on_the_tax_item(sandbox: NetSuiteSandbox, url: str) -> None:
    await deliver(connector(url, tax_item_id="77"), account(), invoice(amount=10000, tax=1900))
    record = sandbox.find("invoice", "invoice_i1")
    assert record is not None
    lines = record["fields"]["item"]["items"]
    assert [(line["item"]["id"], line["amount"]) for line in lines] == [("1", Decimal("100.00")),
                                                                        ("77", Decimal("19.00"))]


@pytest.mark.anyio
async def test_upsert_twice_is_one_record_updated(sandbox: NetSuiteSandbox, url: str) -> None:
    ns = connector(url)
    (first,) = await deliver(ns, account(name="Acme"))
    (second,) = await deliver(ns, account(name="Acme Renamed"))

    assert first.created is True and second.created is False
    assert first.external_id == second.external_id
    (record,) = sandbox.records_with_external_id("customer", "account_a1")
    assert record["fields"]["companyName"] == "Acme Renamed"
    stats = sandbox.stats()
    assert (stats["creates"], stats["updates"], stats["records"]["customer"]) == (1, 1, 1)
    async with httpx.AsyncClient(base_url=url) as admin:
        answer = (await admin.get("/_sandbox/records", params={"type": "customer", "externalId": "account_a1"})).json()
    assert answer["count"] == 1 and answer["records"][0]["id"] == first.external_id


@pytest.mark.anyio
async def test_read_back_by_external_and_internal_id(sandbox: NetSuiteSandbox, url: str) -> None:
    ns = connector(url)
    (result,) = await deliver(ns, account())
    async with ns.http_client(FAST) as http:
        by_eid = await http.get("/services/rest/record/v1/customer/eid:account_a1")
        by_id = await http.get(f"/services/rest/record/v1/customer/{result.external_id}")
        missing = await http.get("/services/rest/record/v1/customer/eid:nobody")
    assert by_eid.status_code == 200 and by_eid.json() == by_id.json()
    assert by_eid.json()["id"] == result.external_id and by_eid.json()["companyName"] == "Acme GmbH"
    assert by_eid.json()["links"][0]["rel"] == "self"
    assert missing.status_code == 404
    assert missing.json()["o:errorDetails"][0]["o:errorCode"] == "NONEXISTENT_ID"


# -- error translation end to end -------------------------------------------------------------
@pytest.mark.anyio
async def test_missing_references_are_dependency_missing(sandbox: NetSuiteSandbox, url: str) -> None:
    """Out-of-order webhooks: the customer or invoice may not be synced yet, so retry (then park)."""
    ns = connector(url)
    with pytest.raises(DependencyMissingError) as caught:
        await deliver(ns, invoice())
    assert caught.value.details["referenced_field"] == "entity"
    assert caught.value.details["error_path"] == "entity"

    await deliver(ns, account())
    with pytest.raises(DependencyMissingError) as caught:
        await deliver(ns, payment(invoice_id="invoice_not_yet"))
    assert caught.value.details["error_path"] == "apply.items[0].doc"
    assert caught.value.retryable
    with pytest.raises(DependencyMissingError) as caught:
        await deliver(ns, credit_memo(invoice_id="invoice_not_yet"))
    assert caught.value.details["referenced_field"] == "createdFrom"
    with pytest.raises(DependencyMissingError):
        await deliver(ns, refund(payment_id="payment_not_yet"))
    records = sandbox.stats()["records"]
    assert records["customer"] == 1
    assert sum(records.values()) == 1


@pytest.mark.anyio
async def test_server_error_is_transient_and_writes_nothing(sandbox: NetSuiteSandbox, url: str) -> None:
    sandbox.faults = Faults(server_error_rate=1.0)
    with pytest.raises(TransientError) as caught:
        await deliver(connector(url), account())
    assert type(caught.value) is TransientError and caught.value.details["status"] == 500
    assert sandbox.records("customer") == []
    assert sandbox.stats()["faults"] == {"server_error": 1}


@pytest.mark.anyio
async def test_rate_limited_fault_carries_retry_after(sandbox: NetSuiteSandbox, url: str) -> None:
    sandbox.faults = Faults(rate_limited_rate=1.0, retry_after_seconds=2)
    with pytest.raises(RateLimitedError) as caught:
        await deliver(connector(url), account())
    assert caught.value.retry_after == 2.0
    assert caught.value.details["vendor_code"] == "SSS_REQUEST_LIMIT_EXCEEDED"


@pytest.mark.anyio
async def test_request_limit_answer_with_400_is_rate_limited() -> None:
    """RESTlet-style governance: 400 SSS_REQUEST_LIMIT_EXCEEDED; also checks the headers sent."""
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(400, headers={"Retry-After": "7"}, json={"o:errorDetails": [
            {"detail": "Concurrent request limit exceeded.", "o:errorCode": "SSS_REQUEST_LIMIT_EXCEEDED"}]})

    ns = connector("https://tstdrv1.suitetalk.api.netsuite.com")
    async with httpx.AsyncClient(base_url=ns.settings.base_url, transport=httpx.MockTransport(handler),
                                 auth=ns.auth()) as http:
        with pytest.raises(RateLimitedError) as caught:
            await ns.deliver(http, "upsert_customer", account().model_dump(mode="json"), idempotency_key="k-1")
    assert caught.value.retry_after == 7.0
    (request,) = sent
    assert request.method == "PUT"
    assert request.url.path == "/services/rest/record/v1/customer/eid:account_a1"
    assert request.headers["X-Syncline-Idempotency-Key"] == "k-1"
    assert request.headers["Authorization"].startswith('OAuth realm="TSTDRV1", ')


@pytest.mark.anyio
async def test_answer_without_location_is_transient() -> None:
    ns = connector("https://tstdrv1.suitetalk.api.netsuite.com")
    async with httpx.AsyncClient(base_url=ns.settings.base_url,
                                 transport=httpx.MockTransport(lambda _: httpx.Response(204))) as http:
        with pytest.raises(TransientError) as caught:
            await ns.deliver(http, "upsert_customer", account().model_dump(mode="json"), idempotency_key="k")
    assert caught.value.code == "netsuite_no_location"


@pytest.mark.anyio
@pytest.mark.parametrize("wrong", [{"consumer_secret": "leaked-consumer-secret"}, {"token_id": "tk_other"}])
async def test_bad_credentials_are_auth_config(sandbox: NetSuiteSandbox, url: str, wrong: dict[str, str]) -> None:
    with pytest.raises(AuthConfigError) as caught:
        await deliver(connector(url, {**SECRETS, **wrong}), account())
    assert caught.value.details["vendor_code"] == "INVALID_LOGIN"
    assert "leaked-consumer-secret" not in str(caught.value) and "cs_test" not in str(caught.value)
    assert sandbox.records("customer") == []


@pytest.mark.anyio
async def test_wrong_realm_and_missing_header_are_refused(sandbox: NetSuiteSandbox, url: str) -> None:
    ns = NetSuiteConnector(ConnectionSettings(
        name="netsuite", vendor="netsuite", base_url=url,
        secrets={key: SecretStr(value) for key, value in SECRETS.items()}, options={"account_id": "OTHER"},
    ))
    with pytest.raises(AuthConfigError):
        await deliver(ns, account())
    async with httpx.AsyncClient(base_url=url) as anonymous:
        answer = await anonymous.put("/services/rest/record/v1/customer/eid:x", json={})
    assert answer.status_code == 401
    assert answer.json()["o:errorDetails"][0]["o:errorCode"] == "INVALID_LOGIN"


@pytest.mark.anyio
async def test_timeout_applies_the_write_once_and_the_retry_updates_it(sandbox: NetSuiteSandbox, url: str) -> None:
    ns = connector(url)
    sandbox.faults = Faults(timeout_rate=1.0, hang_seconds=0.6)
    with pytest.raises(TransientError) as caught:
        await deliver(ns, account(), limits=Limits(concurrency=2, timeout_seconds=0.25))
    assert caught.value.code == "timeout"
    assert len(sandbox.records_with_external_id("customer", "account_a1")) == 1

    sandbox.faults = None
    (retry,) = await deliver(ns, account())
    assert retry.created is False
    (record,) = sandbox.records_with_external_id("customer", "account_a1")
    assert record["id"] == retry.external_id
    assert sandbox.stats()["faults"] == {"timeout": 1}


@pytest.mark.anyio
async def test_unreachable_netsuite_is_transient() -> None:
    ns = connector(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TransientError):
        await deliver(ns, account())


@pytest.mark.anyio
async def test_closed_period_is_a_business_rule(sandbox: NetSuiteSandbox, url: str) -> None:
    """Known closed from the calendar: refused before the write is sent."""
    ns = connector(url)
    await deliver(ns, account())
    requests = sandbox.stats()["requests"]
    with pytest.raises(BusinessRuleError) as caught:
        await deliver(ns, invoice(issued_at=datetime(2023, 12, 31, 23, 0, tzinfo=UTC)))
    assert caught.value.code == "period_closed"
    assert caught.value.details["period_name"] == "Dec 2023"
    assert caught.value.details["tran_date"] == "2023-12-31"
    # one SuiteQL read of the calendar, no write
    assert sandbox.stats()["requests"] == requests + 1
    assert sandbox.records("invoice") == []


@pytest.mark.anyio
async def test_closed_period_refused_by_netsuite_is_a_business_rule(sandbox: NetSuiteSandbox, url: str) -> None:
    """Without period resolution NetSuite itself refuses the closed period."""
    ns = connector(url, resolve_posting_periods=False)
    await deliver(ns, account())
    with pytest.raises(BusinessRuleError) as caught:
        await deliver(ns, invoice(issued_at=datetime(2023, 12, 31, 23, 0, tzinfo=UTC)))
    assert caught.value.code == "period_closed"
    assert caught.value.details["error_path"] == "tranDate"
    assert sandbox.records("invoice") == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("operation", "mutate", "field"),
    [
        ("upsert_invoice", lambda p: p.pop("total"), "total"),
        ("upsert_invoice", lambda p: p["lines"][0]["amount"].update(amount=19.99), "lines.0.amount.amount"),
        ("upsert_invoice", lambda p: p.update(id="invoice/../1"), "id"),
        ("upsert_invoice", lambda p: p.update(issued_at=None), "issued_at"),
        ("upsert_customer", lambda p: p, "object_type"),
    ],
)
async def test_invalid_payload_is_data_quality(
    sandbox: NetSuiteSandbox, url: str, operation: str, mutate: Any, field: str
) -> None:
    payload = invoice().model_dump(mode="json")
    mutate(payload)
    ns = connector(url)
    async with ns.http_client(FAST) as http:
        with pytest.raises(DataQualityError) as caught:
            await ns.deliver(http, operation, payload, idempotency_key="k")
    assert caught.value.details["field"] == field
    assert sandbox.stats()["requests"] == 0


@pytest.mark.anyio
async def test_vendor_side_validation_is_data_quality(sandbox: NetSuiteSandbox, url: str) -> None:
    """A body NetSuite refuses (here a missing customer) parks with NetSuite's detail and path."""
    ns = connector(url)
    async with ns.http_client(FAST) as http:
        answer = await http.post("/services/rest/record/v1/invoice", content=b'{"externalId": "x"}')
    assert answer.status_code == 400
    assert answer.json()["o:errorDetails"][0]["o:errorPath"] == "entity"


@pytest.mark.anyio
async def test_plain_create_refuses_a_duplicate_external_id(sandbox: NetSuiteSandbox, url: str) -> None:
    ns = connector(url)
    async with ns.http_client(FAST) as http:
        first = await http.post("/services/rest/record/v1/customer", json={"externalId": "c9", "companyName": "A"})
        second = await http.post("/services/rest/record/v1/customer", json={"externalId": "c9", "companyName": "B"})
    assert first.status_code == 204 and first.headers["Location"].endswith(
        "/customer/" + sandbox.records_with_external_id("customer", "c9")[0]["id"])
    assert second.status_code == 400
    assert second.json()["o:errorDetails"][0]["o:errorCode"] == "DUP_RCRD"
    assert len(sandbox.records_with_external_id("customer", "c9")) == 1


@pytest.mark.anyio
async def test_unknown_operation_and_missing_account_id() -> None:
    ns = connector("http://127.0.0.1:9")
    async with ns.http_client(FAST) as http:
        with pytest.raises(SynclineError) as caught:
            await ns.deliver(http, "upsert_journal", {}, idempotency_key="k")
    assert caught.value.code == "operation_unknown"
    with pytest.raises(ConfigError):
        NetSuiteConnector(ConnectionSettings(name="ns", vendor="netsuite", base_url="http://x", options={}))


def test_inbound_is_not_supported() -> None:
    ns = connector("http://127.0.0.1:9")
    with pytest.raises(SynclineError) as caught:
        ns.verify_webhook({}, b"", now=0)
    assert caught.value.code == "webhooks_unsupported"


# -- governance -------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_concurrency_over_the_account_limit_is_rate_limited(sandbox: NetSuiteSandbox, url: str) -> None:
    sandbox.concurrency_limit = 3
    sandbox.faults = Faults(latency_seconds=0.3)
    ns = connector(url)
    limits = Limits(concurrency=9, timeout_seconds=5)
    async with ns.http_client(limits) as http:
        outcomes = await asyncio.gather(*[
            ns.deliver(http, "upsert_customer", account(id=f"account_{n}").model_dump(mode="json"),
                       idempotency_key=str(n))
            for n in range(9)
        ], return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, RateLimitedError)]
    delivered = [o for o in outcomes if isinstance(o, DeliveryResult)]
    assert len(refused) + len(delivered) == 9
    stats = sandbox.stats()
    assert stats["over_limit"] == len(refused) >= 3
    assert stats["peak_concurrency"] == 3
    assert stats["records"]["customer"] == len(delivered)
    assert all(error.details["vendor_code"] == "SSS_REQUEST_LIMIT_EXCEEDED" for error in refused)


@pytest.mark.anyio
async def test_admin_endpoints(sandbox: NetSuiteSandbox, url: str) -> None:
    await deliver(connector(url), account())
    async with httpx.AsyncClient(base_url=url) as admin:
        stats = (await admin.get("/_sandbox/stats")).json()
        assert stats["records"]["customer"] == 1 and stats["creates"] == 1 and stats["requests"] == 1
        changed = (await admin.post("/_sandbox/faults", json={"server_error_rate": 1.0})).json()
        assert changed["server_error_rate"] == 1.0 and sandbox.faults is not None
        assert (await admin.post("/_sandbox/faults", json={"nonsense": 1})).status_code == 400
        assert (await admin.post("/_sandbox/reset")).status_code == 204
        assert (await admin.get("/_sandbox/stats")).json()["records"]["customer"] == 0
        assert (await admin.get("/_sandbox/records", params={"type": "nope"})).status_code == 400


# -- money on the wire ------------------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize(("currency", "minor", "wire"), [("USD", 1999, "19.99"), ("JPY", 500, "500"),
                                                          ("KWD", 1500, "1.500"), ("USD", 10, "0.10")])
async def test_amounts_are_exact_on_the_wire(
    sandbox: NetSuiteSandbox, url: str, currency: str, minor: int, wire: str
) -> None:
    bodies: list[bytes] = []

    def capture(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return httpx.Response(204, headers={"Location": "https://x/services/rest/record/v1/invoice/5"})

    # No calendar read: the mock transport answers only the record write.
    ns = connector(url, resolve_posting_periods=False)
    async with httpx.AsyncClient(base_url=url, transport=httpx.MockTransport(capture)) as http:
        await ns.deliver(http, "upsert_invoice", invoice(amount=minor, currency=currency).model_dump(mode="json"),
                         idempotency_key="k")
    assert f'"amount":{wire}}}'.encode() in bodies[0]
    assert re.search(rb"\d[eE][+-]?\d", bodies[0]) is None

    await deliver(ns, account(), invoice(amount=minor, currency=currency))
    record = sandbox.find("invoice", "invoice_i1")
    assert record is not None
    stored = record["fields"]["item"]["items"][0]["amount"]
    assert str(stored) == wire and stored == Decimal(wire)
    assert record["fields"]["currency"] == {"refName": currency}
    async with httpx.AsyncClient(base_url=url) as admin:
        text = (await admin.get("/_sandbox/records", params={"type": "invoice"})).text
    assert f'"amount":{wire}' in text
