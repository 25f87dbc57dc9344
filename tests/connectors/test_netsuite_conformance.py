"""The shared connector conformance suite, run against the NetSuite connector and its sandbox.

NetSuite has no webhooks in this connector (``webhook_cases == []``: the signature and decode
tests skip), no event catch-up (``seed_events`` skips) and no batch operation (the REST record
API writes one record per request, so ``batch_operation is None``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.connectors._netsuite_harness import NetSuiteHarness, served_sandbox
from tests.connectors.conformance import ConnectorConformance

from syncline.connectors.netsuite import NetSuiteSandbox


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[NetSuiteSandbox, str]]:
    with served_sandbox(closed_periods={"2023-12"}) as pair:
        yield pair


class TestNetSuiteConformance(ConnectorConformance):
    @pytest.fixture
    def harness(self, served: tuple[NetSuiteSandbox, str]) -> Iterator[NetSuiteHarness]:
        sandbox, url = served
        sandbox.reset()
        yield NetSuiteHarness(sandbox, url)
