"""SIGKILL the worker in the middle of many onboarding flows with vendor faults injected.

Every flow must end ``completed``, ``compensated`` (the ERP refused the customer) or
``waiting_for_task`` (the account failed validation), and no vendor may hold a record written
twice by one step (the same payload under two idempotency keys).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import yaml
from sqlalchemy import func, select

from syncline.flows._tables import flow_instances
from syncline.pipeline.inbox import Received, write_inbox
from syncline.sandbox import Faults, ServerThread
from syncline.store import create_store_engine, deliveries, migrate
from tests.flows._harness import account, opportunity
from tests.flows._recorder import RecorderState, recorder_app

ROOT = Path(__file__).resolve().parents[2]
#: Flows in the slow crash run; set fewer for a quick local check.
FLOWS = int(os.environ.get("SYNCLINE_FLOWS_CRASH_COUNT", "1000"))


def _events(count: int) -> tuple[list[Received], set[str], set[str]]:
    """Accounts and closed-won deals; every 10th account lacks a tax id, every 7th is refused by the ERP."""
    items: list[Received] = []
    invalid, refused = set(), set()
    for n in range(count):
        account_id, deal = f"account_{n}", f"opp_{n}"
        if n % 10 == 3:
            invalid.add(deal)
        elif n % 7 == 5:
            refused.add(deal)
        data = account(account_id, name=f"Customer {n}", tax_ids=() if deal in invalid else (f"US-{n}",))
        for kind, body in (("account.created", data), ("opportunity.closed_won", opportunity(deal, account_id))):
            raw = orjson.dumps({"id": f"{kind}-{n}", "type": kind, "created": 1, "data": body})
            items.append(Received("crm", f"{kind}-{n}", kind, raw))
    return items, invalid, refused


def _spawn(config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tests.flows._crash_worker", str(config)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_crash(tmp_path: Path, store_url: str, *, flows: int, kills: int, seed: int = 11) -> None:
    items, invalid, refused = _events(flows)
    state = RecorderState(
        Faults(server_error_rate=0.05, rate_limited_rate=0.01, timeout_rate=0.01, hang_seconds=1.5, seed=seed),
        refuse={"erp": {f"account_{deal.split('_')[1]}" for deal in refused}},
    )
    rng = random.Random(seed)
    with ServerThread(recorder_app(state)) as server:
        connections = {name: {"vendor": "recorder", "base_url": server.url}
                       for name in ("crm", "billing", "erp", "support")}
        config = tmp_path / "syncline.yaml"
        config.write_text(yaml.safe_dump({
            "store": store_url, "connections": connections,
            "retry": {"base_seconds": 0.05, "cap_seconds": 0.5, "max_attempts": 50},
            "pipeline": {"lease_seconds": 3, "breaker_failures": 100_000},
            "flows": {"legal_entities": [{"id": "us-inc", "countries": ["US"], "currency": "USD"}],
                      "billing_confirm_seconds": 3600, "poll_seconds": 0.02},
        }))
        engine = create_store_engine(store_url)
        migrate(engine)
        write_inbox(engine, items)
        process = _spawn(config)
        try:
            for _ in range(kills):
                time.sleep(rng.uniform(1.0, 3.0))
                process.send_signal(signal.SIGKILL)
                process.wait()
                process = _spawn(config)
            deadline = time.monotonic() + max(120.0, flows * 1.0)
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    states = dict(conn.execute(select(flow_instances.c.id, flow_instances.c.state)).all())
                    outstanding = conn.execute(select(func.count()).select_from(deliveries).where(
                        deliveries.c.state.in_(("pending", "inflight")))).scalar_one()
                if len(states) == flows and not outstanding and all(
                        value in ("completed", "compensated", "waiting_for_task") for value in states.values()):
                    break
                time.sleep(0.5)
        finally:
            process.terminate()
            process.wait(timeout=30)
            engine.dispose()
    expected = {f"onboarding:opp_{n}": "waiting_for_task" if f"opp_{n}" in invalid else
                "compensated" if f"opp_{n}" in refused else "completed" for n in range(flows)}
    wrong = {key: (states.get(key), value) for key, value in expected.items() if states.get(key) != value}
    assert not wrong, f"{len(wrong)} flows ended wrong, e.g. {list(wrong.items())[:5]}"
    assert state.duplicates() == []
    completed = sum(1 for value in expected.values() if value == "completed")
    # One customer, one sales order, one organization, one entitlement per completed deal.
    assert state.count("erp", "upsert_sales_order") == completed
    assert state.count("support", "set_entitlement") == completed
    assert state.count("billing", "upsert_customer") == completed + len(refused)


def test_worker_killed_during_onboarding_flows(tmp_path: Path, store_url: str) -> None:
    run_crash(tmp_path, store_url, flows=30, kills=1)


@pytest.mark.slow
def test_worker_killed_repeatedly_during_many_onboarding_flows(tmp_path: Path, store_url: str) -> None:
    run_crash(tmp_path, store_url, flows=FLOWS, kills=3)
