"""Every request the HubSpot connector makes conforms to HubSpot's published OpenAPI documents.

The connector runs every operation, a batch, the error cases and a catch-up against the
sandbox; the sandbox records each request exactly as it arrived, and each is validated with
``openapi-core`` against the copies in ``tests/data/hubspot/`` (see the README there).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.validation.request.exceptions import InvalidRequestBody
from openapi_core.validation.request.validators import V30RequestBodyValidator, V30RequestParametersValidator
from tests.connectors._hubspot_harness import HubSpotHarness, hubspot_harness
from werkzeug.datastructures import Headers, ImmutableMultiDict

from syncline.connectors.hubspot.sandbox import RecordedRequest
from syncline.errors import DeliveryError

DATA = Path(__file__).parent.parent / "data" / "hubspot"
#: Path prefix → the OpenAPI document that describes it.
DOCUMENTS = {
    "/crm/v3/objects/companies/": "companies.json",
    "/crm/v3/objects/contacts/": "contacts.json",
    "/crm/v3/objects/0-3/": "deals.json",
    "/crm/v3/objects/line_items/": "lineItems.json",
    "/crm/v3/objects/products/": "products.json",
    "/crm/v3/objects/quotes/": "quotes.json",
    "/crm/v4/associations/": "associations-v4.json",
}


@cache
def document(name: str, part: str) -> OpenAPI:
    """Return a validator of request ``part`` ("parameters" or "body") for one document.

    openapi-core cannot check OAuth 2 security requirements (it warns "Unsupported scheme
    type"), so parameters and body are validated by it and the bearer token by :func:`validate`.
    """
    validator = V30RequestParametersValidator if part == "parameters" else V30RequestBodyValidator
    return OpenAPI.from_dict(json.loads((DATA / name).read_text()), config=Config(request_validator_cls=validator))


@dataclass
class WireRequest:
    """A recorded request in the shape openapi-core reads (its ``Request`` protocol)."""

    recorded: RecordedRequest
    parameters: RequestParameters = field(init=False)

    def __post_init__(self) -> None:
        self.parameters = RequestParameters(query=ImmutableMultiDict(), header=Headers(self.recorded.headers),
                                            cookie=ImmutableMultiDict())

    @property
    def host_url(self) -> str:
        return "https://api.hubapi.com"  # the server the documents name; the sandbox stands in for it

    @property
    def path(self) -> str:
        return self.recorded.path

    @property
    def method(self) -> str:
        return self.recorded.method.lower()

    @property
    def body(self) -> bytes | None:
        return self.recorded.body or None

    @property
    def content_type(self) -> str:
        return self.recorded.headers.get("content-type", "").lower()


def validate(recorded: RecordedRequest) -> None:
    """Raise unless the request matches an operation of HubSpot's documents, body included."""
    name = next((doc for prefix, doc in DOCUMENTS.items() if recorded.path.startswith(prefix)), None)
    assert name is not None, f"{recorded.method} {recorded.path} is in none of HubSpot's documents here"
    assert recorded.headers.get("authorization", "").startswith("Bearer "), "HubSpot takes OAuth 2 bearer tokens"
    for part in ("parameters", "body"):
        document(name, part).validate_request(WireRequest(recorded))


@pytest.fixture
def harness() -> Iterator[HubSpotHarness]:
    # Search pacing is covered by the conformance run; here it would only slow the test down.
    with hubspot_harness({"search_rate_per_second": 100.0}, search_limit_per_second=100) as harness:
        yield harness


@pytest.mark.anyio
async def test_every_request_conforms_to_hubspots_openapi(harness: HubSpotHarness) -> None:
    connector = harness.connector
    async with connector.http_client(connector.default_limits) as http:
        for case in harness.outbound_cases:
            await connector.deliver(http, case.operation, case.create, idempotency_key=case.idempotency_key)
            await connector.deliver(http, case.operation, case.update, idempotency_key=case.idempotency_key)
        await connector.deliver_batch(http, harness.batch_operation, harness.batch_items())
        for case in (harness.not_found_case, harness.invalid_case):
            assert case is not None
            with pytest.raises(DeliveryError):
                await connector.deliver(http, case.operation, case.create, idempotency_key=case.idempotency_key)
        harness.seed_events(2 * harness.catch_up_page_size + 1)
        pages = [page async for page in connector.catch_up(http, None)]
        async for _ in connector.catch_up(http, pages[-1].cursor):
            pass
    requests = harness.sandbox.requests
    paths = {(r.method, r.path) for r in requests}
    # the run reached every kind of endpoint the connector uses
    for expected in ["/crm/v3/objects/companies/batch/upsert", "/crm/v3/objects/0-3/batch/upsert",
                     "/crm/v3/objects/0-3/batch/update", "/crm/v3/objects/0-3/batch/read",
                     "/crm/v3/objects/line_items/batch/upsert", "/crm/v3/objects/quotes/batch/upsert",
                     "/crm/v3/objects/contacts/search", "/crm/v3/objects/0-3/search",
                     "/crm/v4/associations/line_items/deals/batch/associate/default",
                     "/crm/v4/associations/quotes/deals/batch/associate/default",
                     "/crm/v4/associations/deals/companies/batch/read"]:
        assert ("POST", expected) in paths, expected
    for recorded in requests:
        validate(recorded)


def test_the_validator_rejects_a_nonconforming_request() -> None:
    """The check above can fail: a batch upsert input without ``properties`` is refused."""
    body = json.dumps({"inputs": [{"idProperty": "syncline_id", "id": "account_1"}]}).encode()
    recorded = RecordedRequest("POST", "http://sandbox/crm/v3/objects/companies/batch/upsert",
                               "/crm/v3/objects/companies/batch/upsert",
                               {"content-type": "application/json", "authorization": "Bearer x"}, body)
    with pytest.raises(InvalidRequestBody):
        validate(recorded)
    search = RecordedRequest("POST", "http://sandbox/crm/v3/objects/deals/search", "/crm/v3/objects/deals/search",
                             {"content-type": "application/json"}, b"{}")
    with pytest.raises(AssertionError):
        validate(search)  # deals are only described under their type id 0-3
