"""NetSuite accounting periods over SuiteQL: the connector's read, the sandbox's answer, paging, faults."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import httpx
import pytest
from tests.connectors._netsuite_harness import connector, served_sandbox

from syncline.connectors.base import Limits
from syncline.connectors.netsuite import AccountingPeriod, NetSuiteSandbox
from syncline.connectors.netsuite.client import SUITEQL_PATH, suiteql
from syncline.connectors.netsuite.periods import PERIODS_QUERY, parse_date, period_for, period_from_row
from syncline.errors import AuthConfigError, DataQualityError, RateLimitedError, TransientError

FAST = Limits(concurrency=2, timeout_seconds=5)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[NetSuiteSandbox, str]]:
    with served_sandbox(calendar_years=(2023, 2024)) as pair:
        yield pair


@pytest.fixture
def sandbox(served: tuple[NetSuiteSandbox, str]) -> NetSuiteSandbox:
    sandbox, _ = served
    sandbox.reset()
    sandbox.closed_periods = {"2023-01", "2023-02", "2023-03", "2023-13"}
    return sandbox


@pytest.fixture
def url(served: tuple[NetSuiteSandbox, str]) -> str:
    return served[1]


@pytest.mark.anyio
async def test_accounting_periods_are_the_posting_periods_in_order(sandbox: NetSuiteSandbox, url: str) -> None:
    ns = connector(url)
    async with ns.http_client(FAST) as http:
        periods = await ns.accounting_periods(http)
    # per year: 12 months and one adjustment period; no quarters, no years
    assert len(periods) == 26
    assert [p.name for p in periods[:4]] == ["Jan 2023", "Feb 2023", "Mar 2023", "Apr 2023"]
    assert periods[0] == AccountingPeriod(id=periods[0].id, name="Jan 2023", start=date(2023, 1, 1),
                                          end=date(2023, 1, 31), closed=True)
    assert [p.name for p in periods if p.closed] == ["Jan 2023", "Feb 2023", "Mar 2023", "Adjust 2023"]
    assert periods[1].end == date(2023, 2, 28) and periods[14].end == date(2024, 2, 29)
    starts = [p.start for p in periods]
    assert starts == sorted(starts)
    posting = {p.id for p in sandbox.calendar if p.kind in ("month", "adjust")}
    assert {p.id for p in periods} == posting


@pytest.mark.anyio
async def test_accounting_periods_read_every_page() -> None:
    """86 years of calendar: 1118 posting periods, more than one 1000-row SuiteQL page."""
    with served_sandbox(calendar_years=(1950, 2035)) as (big, big_url):
        ns = connector(big_url)
        async with ns.http_client(FAST) as http:
            periods = await ns.accounting_periods(http)
        assert len(periods) == len({p.id for p in periods}) == 86 * 13
        assert big.stats()["requests"] == 2
        assert periods[0].name == "Jan 1950" and [p.name for p in periods[-2:]] == ["Dec 2035", "Adjust 2035"]


@pytest.mark.anyio
async def test_suiteql_pages_by_limit_and_offset(sandbox: NetSuiteSandbox, url: str) -> None:
    ns = connector(url)
    async with ns.http_client(FAST) as http:
        rows = [row async for row in suiteql(http, PERIODS_QUERY, page_size=10)]
        ordered = [row async for row in suiteql(http, "SELECT id, periodname FROM accountingperiod "
                                                          "WHERE isyear = 'T' ORDER BY id DESC")]
    assert len(rows) == 26 and sandbox.stats()["requests"] == 3 + 1
    assert set(rows[0]) == {"id", "periodname", "startdate", "enddate", "closed"}
    assert rows[0]["startdate"] == "1/1/2023" and rows[0]["closed"] == "T"
    assert [row["periodname"] for row in ordered] == ["FY 2024", "FY 2023"]


@pytest.mark.anyio
async def test_sandbox_answers_a_page_like_netsuite(sandbox: NetSuiteSandbox, url: str) -> None:
    ns = connector(url)
    async with ns.http_client(FAST) as http:
        page = await http.post(SUITEQL_PATH, params={"limit": 5, "offset": 5}, json={"q": PERIODS_QUERY},
                               headers={"Prefer": "transient"})
        no_prefer = await http.post(SUITEQL_PATH, json={"q": PERIODS_QUERY})
        bad_offset = await http.post(SUITEQL_PATH, params={"limit": 5, "offset": 3}, json={"q": PERIODS_QUERY},
                                     headers={"Prefer": "transient"})
        too_big = await http.post(SUITEQL_PATH, params={"limit": 1001}, json={"q": PERIODS_QUERY},
                                  headers={"Prefer": "transient"})
    body = page.json()
    assert page.status_code == 200
    assert (body["count"], body["offset"], body["totalResults"], body["hasMore"]) == (5, 5, 26, True)
    assert body["items"][0]["links"] == [] and body["items"][0]["periodname"] == "Jun 2023"
    assert body["links"][0]["rel"] == "next" and body["links"][0]["href"].endswith("limit=5&offset=10")
    for answer in (no_prefer, bad_offset, too_big):
        assert answer.status_code == 400
        assert answer.json()["o:errorDetails"][0]["o:errorCode"]


@pytest.mark.anyio
@pytest.mark.parametrize("query", [
    "SELECT id, nonsense FROM accountingperiod",
    "SELECT id FROM transaction",
    "SELECT id FROM accountingperiod WHERE closed = 'T' OR isyear = 'T'",
    "DELETE FROM accountingperiod",
])
async def test_queries_the_sandbox_cannot_run_are_data_quality(
    sandbox: NetSuiteSandbox, url: str, query: str
) -> None:
    ns = connector(url)
    async with ns.http_client(FAST) as http:
        with pytest.raises(DataQualityError) as caught:
            [row async for row in suiteql(http, query)]
    assert caught.value.details["vendor_code"] == "INVALID_PARAMETER"


@pytest.mark.anyio
async def test_calendar_read_failures_keep_their_error_class(sandbox: NetSuiteSandbox, url: str) -> None:
    ns = connector(url)
    async with ns.http_client(FAST) as http:
        sandbox.fail_next("rate_limit", retry_after=4)
        with pytest.raises(RateLimitedError) as limited:
            await ns.accounting_periods(http)
        sandbox.fail_next("auth")
        with pytest.raises(AuthConfigError) as denied:
            await ns.accounting_periods(http)
        sandbox.fail_next("server_error")
        with pytest.raises(TransientError):
            await ns.accounting_periods(http)
        assert len(await ns.accounting_periods(http)) == 26
    assert limited.value.retry_after == 4
    assert denied.value.details["vendor_code"] == "INVALID_LOGIN_ATTEMPT"
    assert sandbox.stats()["faults"] == {"next_rate_limit": 1, "next_auth": 1, "next_server_error": 1}


@pytest.mark.anyio
async def test_fail_next_over_the_admin_endpoint(sandbox: NetSuiteSandbox, url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as admin:
        assert (await admin.post("/_sandbox/fail-next", json={"fault": "server_error"})).status_code == 204
        assert (await admin.post("/_sandbox/fail-next", json={"fault": "meteor"})).status_code == 400
    ns = connector(url)
    async with ns.http_client(FAST) as http:
        with pytest.raises(TransientError):
            await ns.accounting_periods(http)


@pytest.mark.anyio
async def test_unreadable_page_is_transient() -> None:
    ns = connector("https://tstdrv2.suitetalk.api.netsuite.com")
    transport = httpx.MockTransport(lambda _: httpx.Response(200, json={"count": 1}))
    async with httpx.AsyncClient(base_url=ns.settings.base_url, transport=transport) as http:
        with pytest.raises(TransientError) as caught:
            await ns.accounting_periods(http)
    assert caught.value.code == "netsuite_bad_page"


def test_period_rows_in_either_date_format() -> None:
    us = period_from_row({"id": "7", "periodname": "Jan 2024", "startdate": "1/1/2024", "enddate": "1/31/2024",
                          "closed": "F"})
    iso = period_from_row({"id": "7", "periodname": "Jan 2024", "startdate": "2024-01-01",
                           "enddate": "2024-01-31", "closed": "F"})
    european = period_from_row({"id": "7", "periodname": "Jan 2024", "startdate": "01.01.2024",
                                "enddate": "31.01.2024", "closed": "F"}, date_format="%d.%m.%Y")
    assert us == iso == european == AccountingPeriod("7", "Jan 2024", date(2024, 1, 1), date(2024, 1, 31), False)
    assert parse_date("12/31/2024") == date(2024, 12, 31)
    with pytest.raises(TransientError):
        period_from_row({"id": "8", "startdate": "1/1/2024", "enddate": "1/31/2024", "closed": "maybe"})
    with pytest.raises(TransientError):
        period_from_row({"id": "8", "startdate": "31/31/2024", "enddate": "1/31/2024", "closed": "F"})


def test_period_for_prefers_the_regular_period_over_an_adjustment() -> None:
    december = AccountingPeriod("12", "Dec 2024", date(2024, 12, 1), date(2024, 12, 31), True)
    adjust = AccountingPeriod("13", "Adjust 2024", date(2024, 12, 31), date(2024, 12, 31), False)
    assert period_for([adjust, december], date(2024, 12, 31)) == december
    assert period_for([adjust, december], date(2024, 12, 15)) == december
    assert period_for([adjust, december], date(2025, 1, 1)) is None
