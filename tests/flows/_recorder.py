"""A recording vendor over real HTTP, for crash tests of the flows across process kills.

The server creates a record per new ``Idempotency-Key`` and answers the same record for a key it
has seen (like Stripe), injects 5xx / 429 / timeout-after-write faults, and refuses the canonical
ids it is told to refuse with 422. A step issued twice shows up as the same payload under two
keys: :meth:`RecorderState.duplicates` finds those.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from syncline.connectors.base import Connector, DeliveryResult, Limits, Operation
from syncline.errors import BusinessRuleError, TransientError, classify_http_status
from syncline.sandbox import Fault, Faults
from syncline.testing import FakeConnector

OPERATIONS = {
    "write_back_status": "opportunity", "upsert_account": "account", "upsert_customer": "account",
    "upsert_product": "product", "upsert_price": "price", "upsert_subscription": "subscription",
    "upsert_sales_order": "sales_order", "upsert_organization": "account", "set_entitlement": "entitlement",
}


class RecorderState:
    def __init__(self, faults: Faults, refuse: Mapping[str, set[str]]) -> None:
        self.faults = faults
        self.refuse = refuse
        self.lock = threading.Lock()
        self.by_key: dict[str, str] = {}
        self.records: list[tuple[str, str, str, str, str]] = []  # connection, operation, id, payload hash, key

    def duplicates(self) -> list[tuple[str, str, str]]:
        """(connection, operation, canonical id) written with the same payload under several keys."""
        keys: dict[tuple[str, str, str, str], set[str]] = defaultdict(set)
        for connection, operation, canonical_id, digest, key in self.records:
            keys[(connection, operation, canonical_id, digest)].add(key)
        return [item[:3] for item, found in keys.items() if len(found) > 1]

    def count(self, connection: str, operation: str | None = None) -> int:
        return sum(1 for record in self.records if record[0] == connection and operation in (None, record[1]))


def recorder_app(state: RecorderState) -> Starlette:
    async def write(request: Request) -> JSONResponse:
        connection, operation = request.path_params["connection"], request.path_params["operation"]
        key = request.headers["idempotency-key"]
        body = await request.body()
        payload = orjson.loads(body)
        fault = state.faults.draw()
        if fault is Fault.SERVER_ERROR:
            return JSONResponse({"error": "unavailable"}, status_code=503)
        if fault is Fault.RATE_LIMITED:
            return JSONResponse({"error": "slow down"}, status_code=429, headers={"Retry-After": "0.2"})
        if str(payload["id"]) in state.refuse.get(connection, set()):
            return JSONResponse({"error": f"{connection} refuses {payload['id']}: credit check failed"},
                                status_code=422)
        with state.lock:
            record_id = state.by_key.get(key)
            created = record_id is None
            if record_id is None:
                record_id = f"rec_{len(state.records) + 1}"
                state.by_key[key] = record_id
                digest = hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()
                state.records.append((connection, operation, str(payload["id"]), digest, key))
        if fault is Fault.TIMEOUT:
            await asyncio.sleep(state.faults.hang_seconds)
        return JSONResponse({"id": record_id, "created": created})

    return Starlette(routes=[Route("/{connection}/{operation}", write, methods=["POST"])])


class RecorderConnector(FakeConnector):
    """Delivers canonical objects to the recorder: ``POST /<connection>/<operation>``; decodes inbound
    events like :class:`~syncline.testing.FakeConnector`."""

    vendor = "recorder"
    operations: ClassVar[Mapping[str, Operation]] = {name: Operation(name, kind) for name, kind in OPERATIONS.items()}
    default_limits = Limits(concurrency=8, timeout_seconds=1.0)

    def http_client(self, limits: Limits) -> httpx.AsyncClient:
        return Connector.http_client(self, limits)

    async def deliver(self, http: httpx.AsyncClient, operation: str, payload: Mapping[str, Any], *,
                      idempotency_key: str) -> DeliveryResult:
        try:
            response = await http.post(f"/{self.name}/{operation}", content=orjson.dumps(payload),
                                       headers={"Idempotency-Key": idempotency_key})
        except httpx.TimeoutException:
            raise TransientError("recorder timed out", code="timeout") from None
        except httpx.TransportError as exc:
            raise TransientError(f"recorder unreachable: {type(exc).__name__}", code="network") from None
        if response.status_code == 422:
            raise BusinessRuleError(response.json()["error"], code="refused")
        if response.status_code >= 300:
            retry_after = response.headers.get("retry-after")
            raise classify_http_status(response.status_code, response.text[:200],
                                       retry_after=float(retry_after) if retry_after else None)
        answer = response.json()
        return DeliveryResult(external_id=answer["id"], object_type=OPERATIONS[operation], created=answer["created"])
