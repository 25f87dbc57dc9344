"""The shared connector conformance suite, run against the HubSpot connector and its sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.connectors._hubspot_harness import HubSpotHarness, hubspot_harness
from tests.connectors.conformance import ConnectorConformance


class TestHubSpotConformance(ConnectorConformance):
    @pytest.fixture
    def harness(self) -> Iterator[HubSpotHarness]:
        with hubspot_harness() as harness:
            yield harness
