"""Human tasks through /v1/tasks and the CLI; `syncline trace` of one deal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from syncline.api import create_app
from syncline.api.auth import Role, create_key
from syncline.cli import app as cli_app
from syncline.observe.audit import entries
from syncline.runtime import Syncline
from syncline.sandbox import ServerThread
from tests.flows._harness import (
    Vendors,
    account,
    event,
    ingest,
    make_syncline,
    opportunity,
    run_until,
    settled,
    state_of,
    tasks,
)

MISSING_TAX_ID = "tax id is missing (us-inc needs one) and the account is not tax exempt"
_open: list[Syncline] = []


@pytest.fixture(autouse=True)
def _close() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


async def _waiting_deal(store_url: str, deal: str) -> Syncline:
    syncline = make_syncline(store_url, Vendors())
    _open.append(syncline)
    ingest(syncline, event("account.created", account(f"account_{deal}", tax_ids=())),
           event("opportunity.closed_won", opportunity(deal, f"account_{deal}")))
    await run_until(syncline, settled(syncline, f"onboarding:{deal}"))
    return syncline


@pytest.mark.anyio
async def test_tasks_api_lists_claims_and_completes_with_roles_and_audit(store_url: str) -> None:
    syncline = await _waiting_deal(store_url, "opp_api")
    viewer = create_key(syncline.engine, "viewer", Role.VIEWER)[1]
    operator = create_key(syncline.engine, "erin", Role.OPERATOR)[1]
    other = create_key(syncline.engine, "frank", Role.OPERATOR)[1]
    with ServerThread(create_app(syncline)) as server:
        def client(key: str | None) -> httpx.Client:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return httpx.Client(base_url=server.url, headers=headers, timeout=10)

        with client(None) as anonymous, client(viewer) as reader, client(operator) as erin, client(other) as frank:
            assert anonymous.get("/v1/tasks").status_code == 401
            listed = reader.get("/v1/tasks", params={"kind": "fix_account_data"}).json()
            [task] = listed["items"]
            assert task["data"]["problems"] == [MISSING_TAX_ID]
            assert task["outcomes"] == ["retry", "abandon"]
            assert reader.post(f"/v1/tasks/{task['id']}/claim").status_code == 403
            assert reader.get("/v1/tasks/tsk_nope").json()["code"] == "task_not_found"

            assert erin.post(f"/v1/tasks/{task['id']}/claim").json()["claimed_by"] == "erin"
            taken = frank.post(f"/v1/tasks/{task['id']}/complete", json={"outcome": "abandon"})
            assert (taken.status_code, taken.json()["code"]) == (409, "task_claimed")
            wrong = erin.post(f"/v1/tasks/{task['id']}/complete", json={"outcome": "approve"})
            assert (wrong.status_code, wrong.json()["code"]) == (422, "task_outcome_invalid")
            done = erin.post(f"/v1/tasks/{task['id']}/complete",
                             json={"outcome": "abandon", "reason": "customer withdrew"}).json()
            assert (done["state"], done["completed_by"], done["reason"]) == ("completed", "erin", "customer withdrew")
            assert erin.post(f"/v1/tasks/{task['id']}/complete", json={"outcome": "retry"}).status_code == 409
            assert reader.get("/v1/tasks").json()["count"] == 0

    decisions = entries(syncline.engine, target=f"task:{task['id']}")
    assert [(entry.action, entry.actor_name) for entry in decisions] == [("task.complete", "erin"),
                                                                         ("task.claim", "erin")]
    assert decisions[0].detail["reason"] == "customer withdrew"
    await run_until(syncline, lambda: state_of(syncline, "onboarding:opp_api") == "cancelled")
    assert "abandoned by erin" in syncline.connectors["crm"].state.calls[-1][2]["sync_status"]  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_cli_tasks_and_trace(store_url: str, tmp_path: Path) -> None:
    syncline = await _waiting_deal(store_url, "opp_cli")
    config = tmp_path / "syncline.yaml"
    config.write_text(yaml.safe_dump({"store": store_url}))
    runner = CliRunner()

    listed = runner.invoke(cli_app, ["tasks", "list", "-c", str(config), "--json"])
    assert listed.exit_code == 0, listed.output
    [task] = json.loads(listed.output)
    bad = runner.invoke(cli_app, ["tasks", "complete", task["id"], "approve", "-c", str(config), "--as", "gina"])
    assert bad.exit_code == 1
    done = runner.invoke(cli_app, ["tasks", "complete", task["id"], "retry", "-c", str(config), "--as", "gina",
                                   "--reason", "data fixed"])
    assert done.exit_code == 0, done.output
    [decided] = tasks(syncline, id=task["id"])
    assert (decided.completed_by, decided.outcome, decided.reason) == ("gina", "retry", "data fixed")
    assert entries(syncline.engine, target=f"task:{task['id']}")[0].actor_name == "gina"

    # The retry validates again and opens a fresh task (the account is still incomplete).
    await run_until(syncline, lambda: len(tasks(syncline, instance_id="onboarding:opp_cli")) == 2)
    traced = runner.invoke(cli_app, ["trace", "opp_cli", "-c", str(config), "--json"])
    assert traced.exit_code == 0, traced.output
    timeline = json.loads(traced.output)
    stages = [entry["stage"] for entry in timeline["entries"]]
    assert timeline["instances"][0]["state"] == "waiting_for_task"
    assert stages[:2] == ["normalized", "flow_started"]
    assert stages.count("task_opened") == 2 and "task_completed" in stages
    assert any("gina" in (entry["detail"] or "") for entry in timeline["entries"])
    missing = runner.invoke(cli_app, ["trace", "opp_unknown", "-c", str(config)])
    assert missing.exit_code == 1
