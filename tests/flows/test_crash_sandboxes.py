"""SIGKILL the worker in the middle of many onboarding flows on the real vendor sandboxes, with faults.

Issue 4: every flow ends ``completed``, ``compensated`` or ``waiting_for_task``, with no duplicate
record in any sandbox. Unlike ``test_crash.py`` (a recording fake vendor), this runs the shipped
pieces end to end:

* the four vendor sandboxes (Salesforce, Stripe, NetSuite, Zendesk) with the real connectors;
* the deals come in the way production sees them: Accounts and closed-won Opportunities are
  created in the Salesforce sandbox as a person in the UI would (``ui_create``), its Change Data
  Capture relay posts the signed change events to Syncline's webhook endpoint (the API, served
  in this process and never killed, like a separate ``syncline serve``), and the worker
  normalizes them. Writing canonical events into the inbox directly would skip the Salesforce
  decoding and the write-back to records that exist in the org, so it is not used. All Accounts
  are created (and known to the flows) before the first Opportunity, so validation never races
  the account's change event;
* the worker is the real command, ``python -m syncline worker -c syncline.yaml`` (default
  connector registry, the quote-to-cash flows enabled in ``flows.enabled``), SIGKILLed at random
  moments while flows run and restarted at once.

Faults: NetSuite draws 5xx, 429 and timeout-after-write (the write is applied, the answer is lost)
at random; Stripe and Zendesk draw the same three kinds from their own :class:`Faults`; the
Salesforce sandbox only has one-shot faults, so a thread keeps arming its next API call with a 503
or a ``REQUEST_LIMIT_EXCEEDED``. Every 10th account has no billing country (validation task:
``waiting_for_task``); every 7th other one is Canadian, booked by a legal entity whose NetSuite
subsidiary does not exist, so NetSuite refuses the customer (compensation: the Stripe subscription
is cancelled, the reason written to the Opportunity). Half the Opportunities carry a
``Syncline_Id__c`` from the start; the other half are org-born and get it from the write-back.

``SYNCLINE_FLOWS_SANDBOX_CRASH_COUNT`` sets the number of flows of the slow test (default 1000).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from sqlalchemy import Engine, func, select

from syncline.api import create_app
from syncline.canonical import canonical_id
from syncline.config import load_config
from syncline.connectors.netsuite.sandbox import NetSuiteSandbox
from syncline.connectors.salesforce import SalesforceSandbox
from syncline.connectors.salesforce.inbound import own_change
from syncline.connectors.stripe.sandbox import StripeSandbox
from syncline.connectors.zendesk import ZendeskSandbox
from syncline.connectors.zendesk.sandbox import SANDBOX_API_TOKEN, SANDBOX_EMAIL
from syncline.flows._tables import flow_facts, flow_instances
from syncline.flows.quote_to_cash import derived_id
from syncline.runtime import Syncline
from syncline.sandbox import Fault, Faults, ServerThread, free_port
from syncline.store import create_store_engine, deliveries, migrate

ROOT = Path(__file__).resolve().parents[2]
#: Flows in the slow crash run; set fewer for a quick local check.
FLOWS = int(os.environ.get("SYNCLINE_FLOWS_SANDBOX_CRASH_COUNT", "1000"))
RELAY_SECRET = "relay-secret-flows-crash"
STRIPE_KEY = "sk_test_flows_crash"
FINAL = ("completed", "compensated", "waiting_for_task")
#: Salesforce's delivery concurrency (the connector's declared limit): how many write-backs one
#: kill can interrupt after Salesforce applied them and before Syncline recorded it.
SALESFORCE_CONCURRENCY = 4
#: Fault seeds under which each sandbox draws every fault kind within its first ten requests, so
#: the small run sees each kind too (the k-th request gets the k-th draw, whatever the timing).
STRIPE_SEED, NETSUITE_SEED, ZENDESK_SEED = 7, 9, 123


@dataclass
class CountedFaults(Faults):
    """:class:`Faults` that also count what they drew (the Stripe and Zendesk sandboxes keep no count)."""

    drawn: Counter[str] = field(default_factory=Counter, init=False, repr=False)

    def draw(self) -> Fault:
        fault = super().draw()
        if fault is not Fault.NONE:
            self.drawn[fault.value] += 1
        return fault


@dataclass
class Deal:
    """One account and its closed-won deal in the Salesforce sandbox, and how its flow must end."""

    n: int
    expected: str
    account_sf_id: str = ""
    opportunity_sf_id: str = ""
    key: str = ""  # the opportunity's canonical id: the onboarding instance is ``onboarding:<key>``

    @property
    def account_id(self) -> str:
        return canonical_id("crm", "account", self.account_sf_id)


def _plan(count: int) -> list[Deal]:
    """Every 10th account lacks a billing country; every 7th other one is refused by the ERP."""
    return [Deal(n, "waiting_for_task" if n % 10 == 3 else "compensated" if n % 7 == 5 else "completed")
            for n in range(count)]


class SalesforceFaults:
    """Keep arming the Salesforce sandbox's next API call with a 503 or a rate-limit refusal.

    The sandbox has one-shot faults only (:meth:`SalesforceSandbox.inject`); arming one every
    ``every`` seconds fails a share of the write-backs the way random faults would.
    """

    def __init__(self, sandbox: SalesforceSandbox, every: float, seed: int) -> None:
        self.sandbox, self.every, self._rng = sandbox, every, random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="salesforce-faults", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            if self._rng.random() < 0.75:
                self.sandbox.inject("server_error")
            else:
                self.sandbox.inject("rate_limit", retry_after=0)

    def __enter__(self) -> SalesforceFaults:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Systems:
    salesforce: SalesforceSandbox
    stripe: StripeSandbox
    stripe_faults: CountedFaults
    stripe_url: str
    netsuite: NetSuiteSandbox
    zendesk: ZendeskSandbox
    zendesk_faults: CountedFaults
    config: Path
    engine: Engine

    def stripe_all(self, resource: str) -> list[dict[str, Any]]:
        """Every object of a Stripe list endpoint, through the API (newest first, 100 a page)."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 100}
        with httpx.Client(base_url=self.stripe_url, headers={"Authorization": f"Bearer {STRIPE_KEY}"}) as client:
            while True:
                for _ in range(20):  # the sandbox's injected faults apply to this client too
                    answer = client.get(f"/v1/{resource}", params=params, timeout=10)
                    if answer.status_code == 200:
                        break
                else:
                    answer.raise_for_status()
                page = answer.json()
                found.extend(page["data"])
                if not page["has_more"]:
                    return found
                params["starting_after"] = page["data"][-1]["id"]


@contextmanager
def sandboxes(tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Systems]:
    """Serve the four sandboxes (faults on) and Syncline's API; write the worker's syncline.yaml."""
    port = free_port()
    for name, value in {"CRASH_SF_ID": "3MVG9sandbox.connected.app", "CRASH_SF_SECRET": "sandbox-client-secret",
                        "CRASH_RELAY": RELAY_SECRET, "CRASH_STRIPE_KEY": STRIPE_KEY,
                        "CRASH_STRIPE_WHSEC": "whsec_crash", "CRASH_NS": "unused", "CRASH_ZD_EMAIL": SANDBOX_EMAIL,
                        "CRASH_ZD_TOKEN": SANDBOX_API_TOKEN}.items():
        monkeypatch.setenv(name, value)
    with ExitStack() as stack:
        salesforce = stack.enter_context(SalesforceSandbox(
            webhook_url=f"http://127.0.0.1:{port}/v1/webhooks/crm", webhook_secret=RELAY_SECRET))
        # hang_seconds > the connections' 2 s timeout: a timeout fault is a write whose answer is lost.
        stripe_faults = CountedFaults(server_error_rate=0.04, rate_limited_rate=0.02, timeout_rate=0.01,
                                      hang_seconds=3.0, retry_after_seconds=0, seed=STRIPE_SEED)
        stripe = StripeSandbox(api_key=STRIPE_KEY, faults=stripe_faults)
        stripe_url = stack.enter_context(ServerThread(stripe.app)).url
        netsuite = NetSuiteSandbox(faults=Faults(server_error_rate=0.06, rate_limited_rate=0.04, timeout_rate=0.04,
                                                 hang_seconds=3.0, retry_after_seconds=0, seed=NETSUITE_SEED))
        netsuite_url = stack.enter_context(ServerThread(netsuite.app)).url
        zendesk_faults = CountedFaults(server_error_rate=0.05, rate_limited_rate=0.02, timeout_rate=0.02,
                                       hang_seconds=3.0, retry_after_seconds=0, seed=ZENDESK_SEED)
        zendesk = stack.enter_context(ZendeskSandbox(requests_per_minute=1_000_000, faults=zendesk_faults))
        budget = {"timeout_seconds": 2.0}
        ns_secrets = {key: "${env:CRASH_NS}" for key in ("consumer_key", "consumer_secret", "token_id", "token_secret")}
        config = tmp_path / "syncline.yaml"
        config.write_text(yaml.safe_dump({
            "store": store_url,
            "connections": {
                "crm": {"vendor": "salesforce", "base_url": salesforce.url,
                        "secrets": {"client_id": "${env:CRASH_SF_ID}", "client_secret": "${env:CRASH_SF_SECRET}",
                                    "webhook_secret": "${env:CRASH_RELAY}"},
                        "options": {"organization_id": salesforce.organization_id, "api_reserve": 0}},
                "billing": {"vendor": "stripe", "base_url": stripe_url,
                            "secrets": {"api_key": "${env:CRASH_STRIPE_KEY}",
                                        "webhook_secret": "${env:CRASH_STRIPE_WHSEC}"},
                            "budget": {**budget, "concurrency": 8, "rate_per_second": 500.0}},
                "erp": {"vendor": "netsuite", "base_url": netsuite_url, "secrets": ns_secrets, "budget": budget,
                        "options": {"account_id": "TSTDRV1", "subsidiary_id": "1",
                                    # ca-ltd points at a subsidiary NetSuite does not have: the ERP refuses.
                                    "subsidiaries": {"us-inc": "1", "ca-ltd": "99"},
                                    "currencies": {"USD": "1"}}},
                "support": {"vendor": "zendesk", "base_url": zendesk.url,
                            "secrets": {"email": "${env:CRASH_ZD_EMAIL}", "api_token": "${env:CRASH_ZD_TOKEN}"},
                            "options": {"job_poll_seconds": 0.01},
                            "budget": {**budget, "concurrency": 8, "rate_per_second": 500.0}},
            },
            "retry": {"base_seconds": 0.05, "cap_seconds": 0.5, "max_attempts": 60},
            # The lease outlives the slowest delivery (a Stripe chain of timeouts), so only a kill
            # leaves a row leased: the restarted worker sends it again once the lease runs out.
            "pipeline": {"lease_seconds": 15, "breaker_failures": 100_000},
            "flows": {
                "enabled": ["onboarding", "amendment", "dunning"],
                "legal_entities": [
                    {"id": "us-inc", "countries": ["US"], "currency": "USD", "requires_tax_id": False},
                    {"id": "ca-ltd", "countries": ["CA"], "currency": "USD", "requires_tax_id": False},
                ],
                "default_interval": "year", "billing_confirm_seconds": 3600, "poll_seconds": 0.02,
            },
        }))
        # The webhook endpoint: this process, not the worker, so change events arrive during kills.
        api = Syncline(load_config(config))
        api.migrate()
        stack.callback(api.close)
        server = ServerThread(create_app(api, run_workers=False), port=port)
        stack.enter_context(server)
        engine = create_store_engine(store_url)
        stack.callback(engine.dispose)
        migrate(engine)
        yield Systems(salesforce, stripe, stripe_faults, stripe_url, netsuite, zendesk, zendesk_faults, config,
                      engine)


class Worker:
    """The ``syncline worker`` process, killed with SIGKILL and restarted; its logs go to one file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.kills: list[int] = []  # settled flows at each kill
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            return subprocess.Popen([sys.executable, "-m", "syncline", "worker", "-c", str(self.config)],
                                    cwd=ROOT, env=dict(os.environ), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log)

    def kill_and_restart(self, settled: int) -> None:
        assert self.process.poll() is None, f"the worker died on its own; see {self.log}"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.kills.append(settled)
        self.process = self._spawn()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _states(engine: Engine) -> tuple[dict[str, str], int]:
    with engine.connect() as conn:
        states = dict(conn.execute(select(flow_instances.c.key, flow_instances.c.state)
                                   .where(flow_instances.c.flow == "onboarding")).all())
        outstanding = conn.execute(select(func.count()).select_from(deliveries).where(
            deliveries.c.state.in_(("pending", "inflight")))).scalar_one()
    return {str(key): str(value) for key, value in states.items()}, int(outstanding)


def _settled(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(flow_instances).where(
            flow_instances.c.flow == "onboarding", flow_instances.c.state.in_(FINAL))).scalar_one())


def _known_accounts(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(flow_facts)
                                .where(flow_facts.c.object_type == "account")).scalar_one())


def _wait(condition: Any, what: str, within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within:.0f}s")
        time.sleep(0.2)


def run_crash(tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch, *, flows: int, kills: int,
              seed: int = 7) -> dict[str, Any]:
    """Run ``flows`` onboardings through the sandboxes, SIGKILL the worker ``kills`` times, check everything."""
    rng = random.Random(seed)
    deals = _plan(flows)
    started = time.monotonic()
    with sandboxes(tmp_path, store_url, monkeypatch) as systems, \
            SalesforceFaults(systems.salesforce, every=0.15, seed=seed):
        salesforce = systems.salesforce
        worker = Worker(systems.config, tmp_path / "worker.log")
        try:
            for deal in deals:
                country = {"waiting_for_task": None, "compensated": "CA"}.get(deal.expected, "US")
                fields = {"Name": f"Customer {deal.n}", **({"BillingCountry": country} if country else {})}
                deal.account_sf_id = salesforce.ui_create("Account", fields)["Id"]
                if deal.n % 100 == 99:
                    salesforce.wait_for_deliveries(timeout=60)
            salesforce.wait_for_deliveries(timeout=60)
            _wait(lambda: _known_accounts(systems.engine) == flows, "every account known to the flows",
                  within=60 + flows * 0.2)
            # With several kills, the first one lands while deals are still coming in; the others
            # once this many flows have settled (distinct, random, spread over the run).
            during_intake = rng.randrange(flows // 4, flows * 3 // 4) if kills > 1 else -1
            low, high = max(1, flows // 20), max(kills + 1, flows * 8 // 10)
            thresholds = sorted(rng.sample(range(low, high), kills - (during_intake >= 0)))
            for deal in deals:
                if deal.n == during_intake:
                    worker.kill_and_restart(_settled(systems.engine))
                fields = {"Name": f"Deal {deal.n}", "AccountId": deal.account_sf_id, "StageName": "Closed Won",
                          "CloseDate": "2026-11-20", "Amount": 1200}
                if deal.n % 2 == 0:
                    fields["Syncline_Id__c"] = f"opportunity_{deal.n}"
                deal.opportunity_sf_id = salesforce.ui_create("Opportunity", fields)["Id"]
                deal.key = fields.get("Syncline_Id__c") or canonical_id("crm", "opportunity", deal.opportunity_sf_id)
                if deal.n % 50 == 49:
                    salesforce.wait_for_deliveries(timeout=60)
            salesforce.wait_for_deliveries(timeout=60)
            expected = {deal.key: deal.expected for deal in deals}
            deadline = time.monotonic() + max(240.0, flows * 1.5)
            while True:
                states, outstanding = _states(systems.engine)
                settled = sum(1 for key, state in states.items() if key in expected and state in FINAL)
                # A restarted worker must make progress before the next kill.
                if thresholds and settled >= thresholds[0] and settled > max(worker.kills, default=0):
                    thresholds.pop(0)
                    time.sleep(rng.uniform(0.0, 0.5))
                    worker.kill_and_restart(settled)
                    continue
                if not thresholds and not outstanding and all(states.get(k) == v for k, v in expected.items()):
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(0.25)
        finally:
            worker.stop()
        wall = time.monotonic() - started
        wrong = {key: (states.get(key), value) for key, value in expected.items() if states.get(key) != value}
        assert not wrong, f"{len(wrong)} flows ended wrong (see {worker.log}), e.g. {list(wrong.items())[:5]}"
        assert len(worker.kills) == kills and all(settled < flows for settled in worker.kills)
        salesforce.wait_for_deliveries(timeout=30)
        with systems.engine.connect() as conn:
            data = {str(row.key): orjson.loads(row.data) for row in conn.execute(
                select(flow_instances.c.key, flow_instances.c.data).where(flow_instances.c.flow == "onboarding"))}
            outcomes = Counter(tuple(row) for row in conn.execute(
                select(deliveries.c.connection, deliveries.c.operation, deliveries.c.state)))
            retried = int(conn.execute(select(func.count()).select_from(deliveries)
                                       .where(deliveries.c.attempts > 1)).scalar_one())
        # Only NetSuite's refusals were given up on: no delivery ran out of retries under the faults.
        compensated = sum(1 for deal in deals if deal.expected == "compensated")
        assert {key: count for key, count in outcomes.items() if key[2] != "done"} == (
            {("erp", "upsert_customer", "parked"): compensated} if compensated else {})
        figures = _check_no_duplicates(systems, deals, data, kills)
        figures.update(deliveries=sum(outcomes.values()), retried_deliveries=retried)
    return {**figures, "flows": flows, "kills": worker.kills, "wall_seconds": round(wall, 1)}


def _by_syncline_id(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for obj in objects:
        grouped[str((obj.get("metadata") or {}).get("syncline_id"))].append(obj)
    return grouped


def _check_no_duplicates(systems: Systems, deals: list[Deal], data: dict[str, Any], kills: int) -> dict[str, Any]:
    """Every sandbox holds exactly the records the flows' end states call for, each once."""
    onboarded = [deal for deal in deals if deal.expected != "waiting_for_task"]
    completed = [deal for deal in deals if deal.expected == "completed"]
    compensated = [deal for deal in deals if deal.expected == "compensated"]

    # Stripe: one customer per account that reached billing; one subscription per such deal, cancelled
    # when the ERP refused; one product and one active price per deal line.
    customers = _by_syncline_id(systems.stripe_all("customers"))
    assert sorted(customers) == sorted(deal.account_id for deal in onboarded)
    assert all(len(found) == 1 for found in customers.values()), "a Stripe customer was created twice"
    subscriptions = _by_syncline_id(systems.stripe_all("subscriptions"))
    assert sorted(subscriptions) == sorted(derived_id("subscription", deal.key) for deal in onboarded)
    assert all(len(found) == 1 for found in subscriptions.values()), "a Stripe subscription was created twice"
    for deal in onboarded:
        [subscription] = subscriptions[derived_id("subscription", deal.key)]
        assert subscription["customer"] == customers[deal.account_id][0]["id"]
        assert subscription["status"] == ("active" if deal.expected == "completed" else "canceled"), deal
    products = _by_syncline_id(systems.stripe_all("products"))
    assert len(products) == len(onboarded) and all(len(found) == 1 for found in products.values())
    prices = _by_syncline_id(systems.stripe_all("prices"))
    assert len(prices) == len(onboarded) and all(len(found) == 1 for found in prices.values())

    # NetSuite: one customer and one sales order (with one line) per completed deal; nothing for
    # the refused ones (the customer write itself was refused).
    netsuite = systems.netsuite
    assert len(netsuite.records("customer")) == len(completed)
    assert len(netsuite.records("salesOrder")) == len(completed)
    for deal in completed:
        state = data[deal.key]
        assert len(netsuite.records_with_external_id("customer", deal.account_id)) == 1
        [order] = netsuite.records_with_external_id("salesOrder", state["sales_order_id"])
        assert state["sales_order_id"] == derived_id("sales_order", deal.key)
        assert len(order["fields"]["item"]["items"]) == 1, f"sales order lines repeated: {order}"
    for deal in compensated:
        assert netsuite.records_with_external_id("customer", deal.account_id) == []

    # Zendesk: one organization per completed deal, none for a refused one.
    assert len(systems.zendesk.organizations) == len(completed)
    for deal in completed:
        [organization] = systems.zendesk.organizations_with_external_id(deal.account_id)
        assert "syncline_standard" in organization["tags"]
    for deal in compensated:
        assert systems.zendesk.organizations_with_external_id(deal.account_id) == []

    # Salesforce: still one Opportunity per deal, carrying the final status; Syncline wrote it
    # back once per deal, plus at most the write-backs a kill caught between the org's answer
    # and Syncline's record of it (sent again under the same key: an update, not a new record).
    salesforce = systems.salesforce
    assert len(salesforce.records["Opportunity"]) == len(deals)
    assert len(salesforce.records["Account"]) == len(deals)
    for deal in deals:
        record = salesforce.records["Opportunity"][deal.opportunity_sf_id]
        status = record.get("Syncline_Status__c")
        if deal.expected == "completed":
            assert status.startswith(f"active: billing {customers[deal.account_id][0]['id']}"), status
            assert record["Syncline_ERP_Id__c"] == data[deal.key]["erp_sales_order_id"]
        elif deal.expected == "compensated":
            assert status.startswith("onboarding stopped: ERP rejected the order"), status
            assert status.endswith("subscription cancelled"), status
        else:
            assert status is None
        if deal.expected != "waiting_for_task":
            assert [item["Id"] for item in salesforce.find("Opportunity", deal.key)] == [deal.opportunity_sf_id]
    write_backs = Counter(
        event["payload"]["ChangeEventHeader"]["recordIds"][0] for event in salesforce.change_events
        if event["payload"]["ChangeEventHeader"]["entityName"] == "Opportunity"
        and own_change(event["payload"]["ChangeEventHeader"]["changeOrigin"], "syncline"))
    assert sorted(write_backs) == sorted(deal.opportunity_sf_id for deal in onboarded)
    repeated = sum(write_backs.values()) - len(onboarded)
    assert repeated <= kills * SALESFORCE_CONCURRENCY, f"{repeated} write-backs repeated: {write_backs}"

    # The faults really happened.
    netsuite_faults = netsuite.stats()["faults"]
    assert {"server_error", "rate_limited", "timeout"} <= set(netsuite_faults), netsuite_faults
    assert {"server_error", "rate_limited", "timeout"} <= set(systems.stripe_faults.drawn)
    assert {"server_error", "rate_limited", "timeout"} <= set(systems.zendesk_faults.drawn)
    assert salesforce.stats.faults.get("server_error", 0) > 0
    return {
        "netsuite_faults": netsuite_faults, "stripe_faults": dict(systems.stripe_faults.drawn),
        "zendesk_faults": dict(systems.zendesk_faults.drawn), "salesforce_faults": dict(salesforce.stats.faults),
        "repeated_write_backs": repeated,
    }


def test_worker_killed_during_onboarding_flows_on_the_sandboxes(tmp_path: Path, store_url: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    figures = run_crash(tmp_path, store_url, monkeypatch, flows=20, kills=1)
    print(figures)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_worker_killed_repeatedly_during_many_onboarding_flows_on_the_sandboxes(
        tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    figures = run_crash(tmp_path, store_url, monkeypatch, flows=FLOWS, kills=5)
    print(figures)
