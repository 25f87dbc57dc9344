"""The NetSuite connector: canonical objects upserted by external id over the REST record API.

Each delivery is one ``PUT /services/rest/record/v1/<recordType>/eid:<canonical id>?replace=...``;
NetSuite creates the record or updates the one with that external id, so a retry after a
timeout or a crash never makes a second record (posting a journal entry twice leaves one
entry). The answer is ``204 No Content`` with the new or updated record in
``Location: .../record/v1/invoice/1042``.

Transactions that post to the general ledger carry a ``postingPeriod``: the one the payload
names, else the month's entry in ``options.posting_periods``, else the period of the account's
calendar the transaction date falls in (read over SuiteQL by :meth:`NetSuiteConnector.accounting_periods`
and cached). A date in a closed period is refused before anything is sent.

Inbound (NetSuite as a source) is not supported yet; see :mod:`.inbound`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
import structlog

from syncline.connectors._json import dumps
from syncline.connectors.base import ConnectionSettings, Connector, DeliveryResult, Limits, Operation
from syncline.connectors.netsuite import mapping
from syncline.connectors.netsuite.client import TokenAuth, suiteql
from syncline.connectors.netsuite.errors import error_from_response, transport_errors
from syncline.connectors.netsuite.periods import (
    PERIODS_QUERY,
    AccountingPeriod,
    period_for,
    period_from_row,
    sort_periods,
)
from syncline.errors import BusinessRuleError, ConfigError, DataQualityError, SynclineError, TransientError

log = structlog.get_logger("syncline.connectors.netsuite")

RECORD_PATH = "/services/rest/record/v1"
#: Sandboxes may say whether an upsert created the record; real NetSuite does not.
CREATED_HEADER = "X-Sandbox-Created"
IDEMPOTENCY_HEADER = "X-Syncline-Idempotency-Key"
#: A cached calendar that says "closed" or "no period" is re-read when older than this, so a
#: period reopened by an accountant is seen on the next retry without a read per delivery.
_RECHECK_SECONDS = 30.0


class NetSuiteConnector(Connector):
    """Deliver customers, sales orders, invoices, payments, credits, refunds, deposits and journals.

    Settings: ``base_url`` (``https://<account>.suitetalk.api.netsuite.com`` or a sandbox),
    ``options.account_id`` (the OAuth realm) and the mapping options of
    :class:`~.mapping.MappingOptions` (subsidiaries, currencies, payment terms, items,
    accounts, deposit accounts, posting periods); secrets ``consumer_key``,
    ``consumer_secret``, ``token_id``, ``token_secret``.
    """

    vendor = "netsuite"
    # NetSuite's concurrency limit is shared by every integration of the account (15 by
    # default), so this connection takes a third of it; the REST record API writes one record
    # per request, hence no batching.
    default_limits = Limits(concurrency=5, rate_per_second=None, batch_size=1, timeout_seconds=30)
    operations: ClassVar[Mapping[str, Operation]] = {
        op.name: op
        for op in [
            Operation("upsert_customer", "account", "customer with subsidiary, currency and terms"),
            Operation("upsert_sales_order", "sales_order", "sales order with its priced lines"),
            Operation("upsert_invoice", "invoice", "invoice with its lines and tax lines"),
            Operation("upsert_customer_payment", "payment", "customer payment applied to its invoice(s)"),
            Operation("upsert_credit_memo", "credit_memo", "credit memo created from its invoice"),
            Operation("upsert_customer_refund", "refund", "customer refund of a customer payment"),
            Operation("upsert_deposit", "payout", "bank deposit of a payout, fees as cash back"),
            Operation("post_journal_entry", "journal_entry", "balanced journal entry in its posting period",
                      snapshot=False),
        ]
    }

    def __init__(self, settings: ConnectionSettings) -> None:
        super().__init__(settings)
        account_id = settings.options.get("account_id")
        if not account_id:
            raise ConfigError(f"connection {settings.name!r} needs options.account_id (the NetSuite realm)")
        self.account_id = str(account_id)
        self.mapping_options = mapping.MappingOptions.from_options(settings.options)
        # The calendar changes a few times a month (a period closes); deliveries share one read.
        self._periods: list[AccountingPeriod] | None = None
        self._periods_read_at = 0.0

    def auth(self) -> TokenAuth:
        """Return the request signer built from the connection's secrets."""
        return TokenAuth(
            self.account_id,
            consumer_key=self.settings.secret("consumer_key"),
            consumer_secret=self.settings.secret("consumer_secret"),
            token_id=self.settings.secret("token_id"),
            token_secret=self.settings.secret("token_secret"),
        )

    def http_client(self, limits: Limits) -> httpx.AsyncClient:
        """Return the HTTP client for NetSuite: the base client plus token-based authentication."""
        client = super().http_client(limits)
        client.auth = self.auth()
        return client

    async def accounting_periods(self, http: httpx.AsyncClient) -> list[AccountingPeriod]:
        """Return the account's posting periods (no quarters or years), in calendar order.

        Reads NetSuite now (SuiteQL, every page) and refreshes the connector's cached calendar.
        Raises the :mod:`syncline.errors` class of a failed read, like a delivery.
        """
        date_format = self.mapping_options.suiteql_date_format
        periods = sort_periods([period_from_row(row, date_format=date_format)
                                async for row in suiteql(http, PERIODS_QUERY)])
        self._periods, self._periods_read_at = periods, time.monotonic()
        return periods

    async def deliver(
        self, http: httpx.AsyncClient, operation: str, payload: Mapping[str, Any], *, idempotency_key: str
    ) -> DeliveryResult:
        """Upsert the canonical ``payload`` as the NetSuite record ``operation`` writes."""
        op = self.operations.get(operation)
        if op is None:
            raise SynclineError(f"netsuite has no operation {operation!r}", code="operation_unknown")
        kind = payload.get("object_type", op.accepts)
        if kind != op.accepts:
            raise DataQualityError(f"{operation} takes {op.accepts}, not {kind}", field="object_type")
        record = mapping.parse(op.accepts, payload)
        write = mapping.to_record(record, self.mapping_options)
        eid = mapping.external_id(str(payload.get("id", "")))
        what = f"{operation} {eid}"
        body = write.body
        period = await self._posting_period(http, write, what)
        if period is not None:
            body = {**body, "postingPeriod": period}
        log.debug("netsuite upsert", operation=operation, external_id=eid, idempotency_key=idempotency_key)
        with transport_errors(what):
            response = await http.put(
                f"{RECORD_PATH}/{write.record_type}/eid:{eid}",
                params={"replace": ",".join(write.replace)} if write.replace else None,
                content=dumps(body),
                headers={"Content-Type": "application/json", "Accept": "application/json",
                         IDEMPOTENCY_HEADER: idempotency_key},
            )
        if response.status_code not in (200, 201, 204):
            error = error_from_response(response)
            if error.code == "period_closed":
                # The calendar changed under the cache: read it again next time.
                self._periods = None
            raise error
        return DeliveryResult(
            external_id=_internal_id(response, write.record_type, what),
            object_type=op.accepts,
            created=_created(response),
        )

    async def _posting_period(
        self, http: httpx.AsyncClient, write: mapping.RecordWrite, what: str
    ) -> dict[str, str] | None:
        """Return the ``postingPeriod`` reference of a write, or None for non-posting records."""
        day = write.tran_date
        if day is None:
            return None
        if write.posting_period:
            return {"id": write.posting_period}
        options = self.mapping_options
        fixed = options.posting_periods.get(day.strftime("%Y-%m"))
        if fixed is not None:
            return {"id": fixed}
        if not options.resolve_posting_periods:
            # NetSuite then picks the period of tranDate itself.
            return None
        period = period_for(await self._calendar(http), day)
        if period is None or period.closed:
            period = period_for(await self._calendar(http, recheck=True), day)
        if period is None:
            raise BusinessRuleError(f"{what}: no accounting period in NetSuite covers {day}",
                                    code="period_missing", tran_date=day.isoformat())
        if period.closed:
            raise BusinessRuleError(
                f"{what}: accounting period {period.name} is closed for a transaction dated {day}",
                code="period_closed", tran_date=day.isoformat(), period_id=period.id, period_name=period.name,
            )
        return {"id": period.id}

    async def _calendar(self, http: httpx.AsyncClient, *, recheck: bool = False) -> list[AccountingPeriod]:
        """Return the cached calendar, reading it when missing, expired or (``recheck``) not fresh."""
        age = time.monotonic() - self._periods_read_at
        limit = min(_RECHECK_SECONDS, self.mapping_options.period_cache_seconds) if recheck \
            else self.mapping_options.period_cache_seconds
        if self._periods is None or age >= limit:
            return await self.accounting_periods(http)
        return self._periods


def _internal_id(response: httpx.Response, record_type: str, what: str) -> str:
    """Return the internal id at the end of ``Location: .../<recordType>/<internalId>``."""
    location = str(response.headers.get("Location", ""))
    head, _, internal_id = location.rstrip("/").rpartition("/")
    if not internal_id or not head.lower().endswith("/" + record_type.lower()):
        # The write went through; the retry is an idempotent upsert that answers again.
        raise TransientError(f"{what}: NetSuite answered {response.status_code} without a record Location",
                             code="netsuite_no_location", status=response.status_code)
    return internal_id


def _created(response: httpx.Response) -> bool | None:
    value = response.headers.get(CREATED_HEADER)
    return None if value is None else value.lower() == "true"
