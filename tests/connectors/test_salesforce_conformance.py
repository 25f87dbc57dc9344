"""Salesforce passes the shared connector conformance suite against its sandbox over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.connectors._salesforce_harness import PAGE, SalesforceHarness
from tests.connectors.conformance import ConnectorConformance

from syncline.connectors.salesforce import SalesforceSandbox


class TestSalesforceConformance(ConnectorConformance):
    @pytest.fixture
    def harness(self) -> Iterator[SalesforceHarness]:
        with SalesforceSandbox(query_batch_size=PAGE) as sandbox:
            yield SalesforceHarness(sandbox)
