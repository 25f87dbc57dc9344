"""Prometheus /metrics: store-derived technical and business gauges, and the dashboard's queries."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncline.api.auth import Role
from tests.api._stack import Stack, running_stack

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana-dashboard.json"


@pytest.fixture
def stack(store_url: str) -> Iterator[Stack]:
    with running_stack(store_url) as running:
        yield running


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics").text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_a_parked_invoice_shows_in_queue_exception_and_breaker_gauges(stack: Stack) -> None:
    stack.park_invoice("inv_m")
    samples = _samples(stack.url)
    assert samples[("syncline_outbox_depth", (("connection", "erp"), ("state", "parked")))] == 1
    assert samples[("syncline_exceptions_open", (("connection", "erp"), ("error_class", "data_quality")))] == 1
    assert samples[("syncline_breaker_state", (("connection", "erp"),))] == 0
    assert samples[("syncline_connection_paused", (("connection", "erp"),))] == 0
    assert samples[("syncline_budget_limit", (("connection", "erp"),))] == 4
    assert samples[("syncline_deliveries_total", (("connection", "erp"), ("outcome", "data_quality")))] >= 1
    with stack.client(None) as client:
        client.post("/v1/connections/erp/pause", json={"reason": "x"},
                    headers={"X-API-Key": stack.keys[Role.ADMIN]})
    assert _samples(stack.url)[("syncline_connection_paused", (("connection", "erp"),))] == 1


def test_every_metric_the_dashboard_queries_is_exported(stack: Stack) -> None:
    # Family names, so metrics with no sample yet (an unobserved histogram) count as exported.
    exported = {family.name for family in text_string_to_metric_families(httpx.get(f"{stack.url}/metrics").text)}
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {re.sub(r"_(bucket|total)$", "", name) for panel in dashboard["panels"]
               for target in panel.get("targets", []) for name in re.findall(r"\b(syncline_[a-z_]+)", target["expr"])}
    assert len(queried) >= 15
    assert queried <= exported, queried - exported
