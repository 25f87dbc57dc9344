"""The NetSuite connector: canonical objects upserted by external id over the REST record API.

Each delivery is one ``PUT /services/rest/record/v1/<recordType>/eid:<canonical id>``; NetSuite
creates the record or updates the one with that external id, so a retry after a timeout or a
crash never makes a second record. The answer is ``204 No Content`` with the new or updated
record in ``Location: .../record/v1/invoice/1042``.

Inbound (NetSuite as a source) is not supported yet; see :mod:`.inbound`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
import structlog

from syncline.connectors.base import ConnectionSettings, Connector, DeliveryResult, Limits, Operation
from syncline.connectors.netsuite import mapping
from syncline.connectors.netsuite.client import TokenAuth, dumps
from syncline.connectors.netsuite.errors import error_from_response, transport_errors
from syncline.errors import ConfigError, DataQualityError, SynclineError, TransientError

log = structlog.get_logger("syncline.connectors.netsuite")

RECORD_PATH = "/services/rest/record/v1"
#: Sandboxes may say whether an upsert created the record; real NetSuite does not.
CREATED_HEADER = "X-Sandbox-Created"
IDEMPOTENCY_HEADER = "X-Syncline-Idempotency-Key"


class NetSuiteConnector(Connector):
    """Deliver accounts, invoices, payments, credit memos and refunds to NetSuite.

    Settings: ``base_url`` (``https://<account>.suitetalk.api.netsuite.com`` or a sandbox),
    ``options.account_id`` (the OAuth realm), optional ``options.subsidiary_id``,
    ``default_item_id``, ``tax_item_id``, ``subsidiaries``, ``refund_account_id`` (see
    :class:`~.mapping.MappingOptions`); secrets ``consumer_key``, ``consumer_secret``,
    ``token_id``, ``token_secret``.
    """

    vendor = "netsuite"
    # NetSuite's concurrency limit is shared by every integration of the account (15 by
    # default), so this connection takes a third of it; the REST record API writes one record
    # per request, hence no batching.
    default_limits = Limits(concurrency=5, rate_per_second=None, batch_size=1, timeout_seconds=30)
    operations: ClassVar[Mapping[str, Operation]] = {
        op.name: op
        for op in [
            Operation("upsert_customer", "account", "customer record by external id"),
            Operation("upsert_invoice", "invoice", "invoice with its lines and tax lines"),
            Operation("upsert_customer_payment", "payment", "customer payment applied to its invoice"),
            Operation("upsert_credit_memo", "credit_memo", "credit memo created from its invoice"),
            Operation("upsert_customer_refund", "refund", "customer refund of a customer payment"),
        ]
    }

    def __init__(self, settings: ConnectionSettings) -> None:
        super().__init__(settings)
        account_id = settings.options.get("account_id")
        if not account_id:
            raise ConfigError(f"connection {settings.name!r} needs options.account_id (the NetSuite realm)")
        self.account_id = str(account_id)
        self.mapping_options = mapping.MappingOptions.from_options(settings.options)

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
        record_type, body = mapping.to_record(record, self.mapping_options)
        eid = mapping.external_id(str(payload.get("id", "")))
        what = f"{operation} {eid}"
        log.debug("netsuite upsert", operation=operation, external_id=eid, idempotency_key=idempotency_key)
        with transport_errors(what):
            response = await http.put(
                f"{RECORD_PATH}/{record_type}/eid:{eid}",
                content=dumps(body),
                headers={"Content-Type": "application/json", "Accept": "application/json",
                         IDEMPOTENCY_HEADER: idempotency_key},
            )
        if response.status_code not in (200, 201, 204):
            raise error_from_response(response)
        return DeliveryResult(
            external_id=_internal_id(response, record_type, what),
            object_type=op.accepts,
            created=_created(response),
        )


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
