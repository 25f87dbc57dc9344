"""Property-based run of the management API against its own OpenAPI document (schemathesis).

Bounded for CI: a few examples per operation. Every response must be a non-5xx that matches
the documented status codes, content types and schemas.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from syncline.api.auth import Role, create_key
from tests.api._stack import Stack, running_stack
from tests.conftest import reset_postgres

_state: dict[str, str] = {}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # The backend under test, as the store_url fixture would choose it (that fixture is per test).
    url = os.environ.get("SYNCLINE_TEST_DATABASE_URL", "")
    url = reset_postgres(url) if url.startswith("postgresql") else (
        f"sqlite:///{tmp_path_factory.mktemp('schemathesis') / 'syncline.db'}")
    with running_stack(url) as stack:
        stack.park_invoice("inv_fuzz")
        _state["key"] = create_key(stack.syncline.engine, "fuzzer", Role.ADMIN, rate_per_minute=1_000_000)[1]
        yield stack


@pytest.fixture(scope="module")
def api_schema(live: Stack) -> object:
    return schemathesis.openapi.from_url(f"{live.url}/openapi.json")


# Webhooks are authenticated by vendor signatures, not keys (tests/test_api.py covers them); the console is HTML.
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
]
schema = schemathesis.pytest.from_fixture("api_schema").exclude(path_regex=r"^/v1/webhooks/")


@schema.parametrize()
@settings(max_examples=3, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_every_response_matches_the_schema_and_none_is_a_server_error(case: schemathesis.Case) -> None:
    # The checks the API promises. positive_data_acceptance is not one: some schema-valid bodies are refused
    # on purpose (a replay or bulk action without a filter would touch every row).
    case.call_and_validate(headers={"Authorization": f"Bearer {_state['key']}"}, timeout=10, checks=CHECKS)
