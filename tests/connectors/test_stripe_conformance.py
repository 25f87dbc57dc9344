"""The shared connector conformance suite, run against the Stripe connector and its sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.connectors._stripe_harness import StripeHarness, stripe_harness
from tests.connectors.conformance import ConnectorConformance


class TestStripeConformance(ConnectorConformance):
    @pytest.fixture
    def harness(self) -> Iterator[StripeHarness]:
        with stripe_harness() as harness:
            yield harness
