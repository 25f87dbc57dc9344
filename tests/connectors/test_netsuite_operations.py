"""NetSuite operations beyond the conformance suite: record bodies, posting periods, sublist updates."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from tests.connectors._netsuite_harness import (
    account,
    connector,
    credit_memo,
    dump,
    invoice,
    journal_entry,
    payment,
    payout,
    refund,
    sales_order,
    served_sandbox,
)

from syncline.connectors._json import dumps
from syncline.connectors.base import DeliveryResult, Limits
from syncline.connectors.netsuite import NetSuiteConnector, NetSuiteSandbox
from syncline.connectors.netsuite.errors import error_from_response
from syncline.connectors.netsuite.sandbox import SandboxError
from syncline.errors import AuthConfigError, BusinessRuleError, ConfigError, DataQualityError

FAST = Limits(concurrency=4, timeout_seconds=5)
OPERATION = {
    "account": "upsert_customer", "sales_order": "upsert_sales_order", "invoice": "upsert_invoice",
    "payment": "upsert_customer_payment", "credit_memo": "upsert_credit_memo", "refund": "upsert_customer_refund",
    "payout": "upsert_deposit", "journal_entry": "post_journal_entry",
}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[NetSuiteSandbox, str]]:
    with served_sandbox(closed_periods={"2023-12"}) as pair:
        yield pair


@pytest.fixture
def sandbox(served: tuple[NetSuiteSandbox, str]) -> NetSuiteSandbox:
    sandbox, _ = served
    sandbox.reset()
    sandbox.closed_periods = {"2023-12"}
    return sandbox


@pytest.fixture
def url(served: tuple[NetSuiteSandbox, str]) -> str:
    return served[1]


async def deliver(ns: NetSuiteConnector, *objects: BaseModel) -> list[DeliveryResult]:
    results = []
    async with ns.http_client(FAST) as http:
        for obj in objects:
            payload = dump(obj)
            operation = OPERATION[payload["object_type"]]
            results.append(await ns.deliver(http, operation, payload, idempotency_key=f"{operation}:{payload['id']}"))
    return results


def fields(sandbox: NetSuiteSandbox, record_type: str, external_id: str) -> dict[str, Any]:
    (record,) = sandbox.records_with_external_id(record_type, external_id)
    found: dict[str, Any] = record["fields"]
    return found


def period_id(sandbox: NetSuiteSandbox, name: str) -> str:
    (period,) = [period for period in sandbox.calendar if period.name == name]
    return period.id


def suiteql_reads(sandbox: NetSuiteSandbox, before: int, writes: int) -> int:
    """Requests since ``before`` that were not the ``writes`` record writes (the calendar reads)."""
    return int(sandbox.stats()["requests"]) - before - writes


# -- customers and sales orders ---------------------------------------------------------------
@pytest.mark.anyio
async def test_customer_carries_subsidiary_currency_and_terms(sandbox: NetSuiteSandbox, url: str) -> None:
    await deliver(connector(url), account(), account("account_other", legal_entity_id=None))
    german = fields(sandbox, "customer", "account_a1")
    assert german["subsidiary"] == {"id": "2"}  # legal entity le_de → subsidiary 2
    assert german["currency"] == {"id": "1"}  # USD → currency 1
    assert german["terms"] == {"id": "2"}  # default 30 days → Net 30
    assert fields(sandbox, "customer", "account_other")["subsidiary"] == {"id": "1"}  # unmapped → default


@pytest.mark.anyio
async def test_unmapped_currency_goes_by_iso_code(sandbox: NetSuiteSandbox, url: str) -> None:
    ns = connector(url, currencies={}, payment_terms={}, default_payment_terms=None)
    await deliver(ns, account())
    stored = fields(sandbox, "customer", "account_a1")
    assert stored["currency"] == {"refName": "USD"}
    assert "terms" not in stored


@pytest.mark.anyio
async def test_sales_order_has_priced_lines_and_no_posting_period(sandbox: NetSuiteSandbox, url: str) -> None:
    ns = connector(url, items={"prod_pro": "501"})
    before = sandbox.stats()["requests"]
    (_, order) = await deliver(ns, account(), sales_order(quantity=3))
    stored = fields(sandbox, "salesOrder", "sales_order_s1")
    (record,) = sandbox.records_with_external_id("salesOrder", "sales_order_s1")
    assert order.object_type == "sales_order" and order.external_id == record["id"]
    assert stored["entity"]["externalId"] == "account_a1"
    assert stored["subsidiary"] == {"id": "2"} and stored["terms"] == {"id": "2"}
    assert stored["tranDate"] == "2024-03-01" and stored["memo"] == "Closed-won Acme"
    assert stored["item"]["items"] == [{
        "item": {"id": "501"}, "description": "Pro plan", "quantity": 3, "rate": Decimal("100.00"),
        "amount": Decimal("300.00"), "revRecStartDate": "2024-03-01", "revRecEndDate": "2025-02-28",
    }]
    # a sales order posts nothing: no postingPeriod, no calendar read
    assert "postingPeriod" not in stored
    assert suiteql_reads(sandbox, before, writes=2) == 0


# -- posting periods --------------------------------------------------------------------------
@pytest.mark.anyio
async def test_transactions_get_the_period_of_their_date_from_one_calendar_read(
    sandbox: NetSuiteSandbox, url: str
) -> None:
    before = sandbox.stats()["requests"]
    await deliver(connector(url), account(), invoice(), payment(), credit_memo(), refund(), payout(),
                  journal_entry())
    march = {"id": period_id(sandbox, "Mar 2024")}
    for record_type, eid in [("invoice", "invoice_i1"), ("customerPayment", "payment_p1"),
                             ("creditMemo", "credit_memo_c1"), ("customerRefund", "refund_r1"),
                             ("deposit", "payout_o1"), ("journalEntry", "journal_entry_j1")]:
        assert fields(sandbox, record_type, eid)["postingPeriod"] == march, record_type
    assert suiteql_reads(sandbox, before, writes=7) == 1


@pytest.mark.anyio
async def test_posting_period_from_payload_or_options_needs_no_calendar(sandbox: NetSuiteSandbox, url: str) -> None:
    january = period_id(sandbox, "Jan 2024")
    april = period_id(sandbox, "Apr 2024")
    ns = connector(url, posting_periods={"2024-03": april})
    before = sandbox.stats()["requests"]
    # Dated into closed December, posted into January as the ledger decided.
    await deliver(ns, journal_entry(posting_date=date(2023, 12, 31), posting_period=january))
    await deliver(ns, account(), invoice())
    assert fields(sandbox, "journalEntry", "journal_entry_j1")["postingPeriod"] == {"id": january}
    assert fields(sandbox, "invoice", "invoice_i1")["postingPeriod"] == {"id": april}
    assert suiteql_reads(sandbox, before, writes=3) == 0


@pytest.mark.anyio
async def test_payload_period_that_is_closed_is_refused_by_netsuite(sandbox: NetSuiteSandbox, url: str) -> None:
    december = period_id(sandbox, "Dec 2023")
    with pytest.raises(BusinessRuleError) as caught:
        await deliver(connector(url), journal_entry(posting_period=december))
    assert caught.value.code == "period_closed"
    assert caught.value.details["error_path"] == "postingPeriod"
    with pytest.raises(DataQualityError) as invalid:
        await deliver(connector(url), journal_entry(posting_period=period_id(sandbox, "Q1 2024")))
    assert invalid.value.details["error_path"] == "postingPeriod"
    assert sandbox.records("journalEntry") == []


@pytest.mark.anyio
async def test_period_closed_after_the_calendar_was_cached(sandbox: NetSuiteSandbox, url: str) -> None:
    """NetSuite refuses the stale period; the connector forgets its calendar and refuses up front next."""
    ns = connector(url)
    await deliver(ns, account(), invoice("invoice_i1"))
    sandbox.closed_periods.add("2024-03")
    with pytest.raises(BusinessRuleError) as by_netsuite:
        await deliver(ns, invoice("invoice_i2"))
    assert by_netsuite.value.code == "period_closed" and by_netsuite.value.details["status"] == 400
    before = sandbox.stats()["requests"]
    with pytest.raises(BusinessRuleError) as up_front:
        await deliver(ns, invoice("invoice_i3"))
    assert up_front.value.code == "period_closed" and up_front.value.details["period_name"] == "Mar 2024"
    assert suiteql_reads(sandbox, before, writes=0) == 1
    assert [r["externalId"] for r in sandbox.records("invoice")] == ["invoice_i1"]


@pytest.mark.anyio
async def test_reopened_period_is_seen_after_the_recheck_interval(sandbox: NetSuiteSandbox, url: str) -> None:
    ns = connector(url, period_cache_seconds=0)
    await deliver(ns, account())
    sandbox.closed_periods.add("2024-03")
    with pytest.raises(BusinessRuleError):
        await deliver(ns, invoice())
    sandbox.closed_periods.discard("2024-03")
    (result,) = await deliver(ns, invoice())
    assert result.created is True


@pytest.mark.anyio
async def test_year_end_goes_to_december_not_the_adjustment_period(sandbox: NetSuiteSandbox, url: str) -> None:
    year_end = date(2024, 12, 31)
    await deliver(connector(url), journal_entry(posting_date=year_end))
    assert fields(sandbox, "journalEntry", "journal_entry_j1")["postingPeriod"] == {
        "id": period_id(sandbox, "Dec 2024")}
    sandbox.closed_periods.add("2024-12")
    with pytest.raises(BusinessRuleError) as caught:
        await deliver(connector(url), journal_entry("journal_entry_j2", posting_date=year_end))
    assert caught.value.details["period_name"] == "Dec 2024"


@pytest.mark.anyio
async def test_date_outside_the_calendar_is_a_business_rule(sandbox: NetSuiteSandbox, url: str) -> None:
    with pytest.raises(BusinessRuleError) as caught:
        await deliver(connector(url), journal_entry(posting_date=date(2041, 1, 15)))
    assert caught.value.code == "period_missing"


# -- payments, deposits -----------------------------------------------------------------------
@pytest.mark.anyio
async def test_payment_applied_to_several_invoices(sandbox: NetSuiteSandbox, url: str) -> None:
    results = await deliver(connector(url), account(), invoice("invoice_i1", 1999), invoice("invoice_i2", 2001),
                            payment(amount=5000, applications=[("invoice_i1", 1999), ("invoice_i2", 2001)]))
    stored = fields(sandbox, "customerPayment", "payment_p1")
    assert stored["payment"] == Decimal("50.00")
    assert [(line["doc"]["id"], line["amount"]) for line in stored["apply"]["items"]] == [
        (results[1].external_id, Decimal("19.99")), (results[2].external_id, Decimal("20.01"))]


@pytest.mark.anyio
@pytest.mark.parametrize(("applications", "field"), [
    ([("invoice_i1", 3000), ("invoice_i2", 2500)], "applications"),
    ([("invoice_i1", 1000), ("invoice_i1", 1000)], "applications.1.invoice_id"),
    ([("invoice_i1", 0)], "applications.0.amount"),
])
async def test_payment_applications_that_cannot_be_right(
    sandbox: NetSuiteSandbox, url: str, applications: list[tuple[str, int]], field: str
) -> None:
    with pytest.raises(DataQualityError) as caught:
        await deliver(connector(url), payment(amount=5000, applications=applications))
    assert caught.value.details["field"] == field
    assert sandbox.stats()["requests"] == 0


@pytest.mark.anyio
async def test_deposit_draws_the_gross_and_takes_the_fee_as_cash_back(sandbox: NetSuiteSandbox, url: str) -> None:
    await deliver(connector(url), payout(net=97000, fees=3000), payout("payout_o2", net=5000, fees=None))
    stored = fields(sandbox, "deposit", "payout_o1")
    assert stored["account"] == {"id": "1"} and stored["tranDate"] == "2024-03-07"
    assert [(line["account"], line["amount"]) for line in stored["other"]["items"]] == [
        ({"id": "2"}, Decimal("1000.00"))]
    assert [(line["account"], line["amount"]) for line in stored["cashBack"]["items"]] == [
        ({"id": "71"}, Decimal("30.00"))]
    assert fields(sandbox, "deposit", "payout_o2")["cashBack"]["items"] == []


@pytest.mark.anyio
async def test_deposit_without_bank_accounts_configured_pauses(sandbox: NetSuiteSandbox, url: str) -> None:
    with pytest.raises(AuthConfigError) as caught:
        await deliver(connector(url, deposit_account_id=None), payout())
    assert caught.value.code == "config_invalid"
    with pytest.raises(AuthConfigError):
        await deliver(connector(url, payout_fee_account_id=None), payout())
    with pytest.raises(DataQualityError):
        await deliver(connector(url), payout(net=-500, fees=0))
    assert sandbox.records("deposit") == []


# -- journal entries --------------------------------------------------------------------------
@pytest.mark.anyio
async def test_journal_entry_body_and_posting_twice_is_one_entry(sandbox: NetSuiteSandbox, url: str) -> None:
    ns = connector(url)
    first, second = await deliver(ns, journal_entry(), journal_entry())
    assert (first.created, second.created) == (True, False)
    assert first.external_id == second.external_id and first.object_type == "journal_entry"
    assert len(sandbox.records_with_external_id("journalEntry", "journal_entry_j1")) == 1
    stored = fields(sandbox, "journalEntry", "journal_entry_j1")
    assert stored["subsidiary"] == {"id": "2"} and stored["currency"] == {"id": "1"}
    assert stored["tranDate"] == "2024-03-31" and stored["memo"] == "Revenue March"
    assert stored["line"]["items"] == [
        {"account": {"id": "6"}, "debit": Decimal("100.00"), "memo": "AR", "custcol_syncline_source": "invoice_i1"},
        {"account": {"id": "54"}, "credit": Decimal("100.00"), "memo": "Revenue",
         "custcol_syncline_source": "invoice_i1"},
    ]
    assert ns.operations["post_journal_entry"].snapshot is False


@pytest.mark.anyio
async def test_journal_source_reference_in_the_memo(sandbox: NetSuiteSandbox, url: str) -> None:
    await deliver(connector(url, line_source_field="memo"), journal_entry(exchange_rate="1.0850"))
    stored = fields(sandbox, "journalEntry", "journal_entry_j1")
    assert [line["memo"] for line in stored["line"]["items"]] == ["AR [invoice_i1]", "Revenue [invoice_i1]"]
    assert "custcol_syncline_source" not in stored["line"]["items"][0]
    assert stored["exchangeRate"] == Decimal("1.0850")


@pytest.mark.anyio
async def test_unbalanced_or_unmapped_journal_is_parked_before_sending(sandbox: NetSuiteSandbox, url: str) -> None:
    with pytest.raises(DataQualityError) as caught:
        await deliver(connector(url), journal_entry(amount=10000, credit=9000))
    assert caught.value.code == "unbalanced"
    with pytest.raises(DataQualityError) as unmapped:
        await deliver(connector(url, accounts={"1100": "6"}), journal_entry())
    assert unmapped.value.code == "account_unmapped" and unmapped.value.details["field"] == "lines.1.account"
    assert sandbox.stats()["requests"] == 0


@pytest.mark.anyio
async def test_ledger_codes_taken_as_internal_ids_only_when_configured(sandbox: NetSuiteSandbox, url: str) -> None:
    lines = journal_entry().lines
    renamed = [line.model_copy(update={"account": internal}) for line, internal in zip(lines, ["6", "54"], strict=True)]
    entry = journal_entry().model_copy(update={"lines": renamed})
    with pytest.raises(DataQualityError):
        await deliver(connector(url, accounts={}), entry)
    await deliver(connector(url, accounts={}, accounts_are_internal_ids=True), entry)
    stored = fields(sandbox, "journalEntry", "journal_entry_j1")
    assert [line["account"] for line in stored["line"]["items"]] == [{"id": "6"}, {"id": "54"}]


@pytest.mark.anyio
async def test_netsuite_refuses_unbalanced_and_incomplete_journals(sandbox: NetSuiteSandbox, url: str) -> None:
    """The sandbox validates like NetSuite, for writers that skip the connector's own checks."""
    ns = connector(url)
    unbalanced = {"subsidiary": {"id": "1"}, "tranDate": "2024-03-31", "line": {"items": [
        {"account": {"id": "6"}, "debit": Decimal("100.00")}, {"account": {"id": "54"}, "credit": Decimal("90.00")}]}}
    missing_subsidiary = {"tranDate": "2024-03-31", "line": {"items": [
        {"account": {"id": "6"}, "debit": 1}, {"account": {"id": "54"}, "credit": 1}]}}
    unknown_account = {"subsidiary": {"id": "1"}, "line": {"items": [
        {"account": {"id": "6"}, "debit": 1}, {"account": {"id": "9999"}, "credit": 1}]}}
    async with ns.http_client(FAST) as http:
        answers = [await http.put(f"/services/rest/record/v1/journalEntry/eid:raw_{n}", content=dumps(body))
                   for n, body in enumerate([unbalanced, missing_subsidiary, unknown_account])]
    assert [answer.status_code for answer in answers] == [400, 400, 400]
    paths = [answer.json()["o:errorDetails"][0].get("o:errorPath") for answer in answers]
    assert paths == ["line", "subsidiary", "line.items[1].account"]
    assert "not in balance" in answers[0].json()["o:errorDetails"][0]["detail"]
    assert all(isinstance(error_from_response(answer), DataQualityError) for answer in answers)
    assert sandbox.records("journalEntry") == []


# -- sublists on update -----------------------------------------------------------------------
@pytest.mark.anyio
async def test_sublist_update_appends_unless_replaced(sandbox: NetSuiteSandbox, url: str) -> None:
    """NetSuite appends non-keyed sublist lines on update; ``?replace=`` makes the body whole."""
    await deliver(connector(url), account())
    ns = connector(url)
    line = {"item": {"id": "1"}, "quantity": 1, "amount": 5}
    body = {"entity": {"externalId": "account_a1"}, "item": {"items": [line]}}
    path = "/services/rest/record/v1/salesOrder/eid:raw_order"
    counts = []
    async with ns.http_client(FAST) as http:
        for params in (None, None, {"replace": "item"}):
            assert (await http.put(path, params=params, json=body)).status_code == 204
            counts.append(len(fields(sandbox, "salesOrder", "raw_order")["item"]["items"]))
    assert counts == [1, 2, 1]


@pytest.mark.anyio
async def test_keyed_apply_sublist_merges_by_document(sandbox: NetSuiteSandbox, url: str) -> None:
    await deliver(connector(url), account(), invoice("invoice_i1"), invoice("invoice_i2"))
    ns = connector(url)
    path = "/services/rest/record/v1/customerPayment/eid:raw_payment"

    def body(*applied: tuple[str, int]) -> dict[str, Any]:
        return {"customer": {"externalId": "account_a1"}, "payment": 20,
                "apply": {"items": [{"doc": {"externalId": doc}, "apply": True, "amount": amount}
                                    for doc, amount in applied]}}

    async with ns.http_client(FAST) as http:
        assert (await http.put(path, json=body(("invoice_i1", 10)))).status_code == 204
        assert (await http.put(path, json=body(("invoice_i1", 7), ("invoice_i2", 3)))).status_code == 204
    applied = [(line["doc"]["externalId"], line["amount"])
               for line in fields(sandbox, "customerPayment", "raw_payment")["apply"]["items"]]
    assert applied == [("invoice_i1", 7), ("invoice_i2", 3)]


def test_options_are_checked_when_the_connection_is_built() -> None:
    with pytest.raises(ConfigError, match="default_payment_terms"):
        connector("http://127.0.0.1:9", default_payment_terms=45)
    with pytest.raises(ConfigError, match="line_source_field"):
        connector("http://127.0.0.1:9", line_source_field="memo2")
    with pytest.raises(ConfigError, match="posting_periods"):
        connector("http://127.0.0.1:9", posting_periods={"March": "5"})
    with pytest.raises(ConfigError):
        connector("http://127.0.0.1:9", payment_terms={"thirty": "2"})


@pytest.mark.anyio
async def test_every_operation_is_routable_by_its_accepted_type() -> None:
    ns = connector("http://127.0.0.1:9")
    assert {op.accepts for op in ns.operations.values()} == set(OPERATION)
    assert all(OPERATION[op.accepts] == name for name, op in ns.operations.items())
    async with httpx.AsyncClient() as http:
        with pytest.raises(DataQualityError):
            await ns.deliver(http, "post_journal_entry", dump(invoice()), idempotency_key="k")


@pytest.mark.anyio
async def test_seeded_records_are_validated_and_referable(sandbox: NetSuiteSandbox, url: str) -> None:
    internal_id = sandbox.seed("customer", "account_a1", {"companyName": "Seeded", "subsidiary": {"id": "3"}})
    with pytest.raises(SandboxError):
        sandbox.seed("customer", "account_bad", {"companyName": "Nowhere", "subsidiary": {"id": "42"}})
    with pytest.raises(ValueError, match="exists"):
        sandbox.seed("customer", "account_a1", {"companyName": "Again"})
    await deliver(connector(url), invoice())
    assert fields(sandbox, "invoice", "invoice_i1")["entity"] == {"externalId": "account_a1", "id": internal_id}


@pytest.mark.anyio
async def test_deposit_of_customer_payments_and_malformed_sublists(sandbox: NetSuiteSandbox, url: str) -> None:
    """A deposit's ``payment`` is a sublist (unlike a customer payment's amount); bad shapes are 400s."""
    ns = connector(url)
    customer = sandbox.seed("customer", "account_a1", {"companyName": "Acme", "subsidiary": {"id": "1"}})
    deposit = {"account": {"id": "1"}, "subsidiary": {"id": "1"}, "tranDate": "2024-03-07",
               "payment": {"items": [{"amount": 20, "deposit": True}]}}
    async with ns.http_client(FAST) as http:
        ok = await http.put("/services/rest/record/v1/deposit/eid:raw_deposit", content=dumps(deposit))
        bad = await http.put("/services/rest/record/v1/customerPayment/eid:raw_bad",
                             json={"customer": {"id": customer}, "apply": [{"doc": {"id": "1"}}]})
    assert ok.status_code == 204, ok.text
    assert bad.status_code == 400 and bad.json()["o:errorDetails"][0]["o:errorPath"] == "apply"
