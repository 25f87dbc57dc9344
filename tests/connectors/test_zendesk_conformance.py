"""Zendesk passes the shared connector conformance suite against its live sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.connectors._zendesk_harness import ZendeskHarness
from tests.connectors.conformance import ConnectorConformance, Harness

from syncline.connectors.zendesk import ZendeskSandbox


class TestZendeskConformance(ConnectorConformance):
    @pytest.fixture
    def harness(self) -> Iterator[Harness]:
        with ZendeskSandbox(page_size=ZendeskHarness.catch_up_page_size, job_polls=2) as sandbox:
            yield ZendeskHarness(sandbox)
