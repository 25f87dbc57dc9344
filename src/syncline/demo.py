"""``syncline demo``: Stripe → Syncline → NetSuite on local sandboxes, end to end over HTTP.

:class:`DemoEnvironment` starts the Stripe and NetSuite sandboxes and writes a project
configuration pointing at them; the demo, the crash tests and the benchmarks all use it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from syncline.config import SynclineConfig, parse_config
from syncline.sandbox import Faults, ServerThread

DEMO_CURRENCIES = ("usd", "eur", "jpy", "kwd")


def demo_config_document(
    store: str, stripe_url: str, netsuite_url: str, *, netsuite_concurrency: int
) -> dict[str, Any]:
    """Return the configuration (as parsed YAML) of the demo project."""
    return {
        "store": store,
        "connections": {
            "stripe": {
                "vendor": "stripe",
                "base_url": stripe_url,
                "secrets": {
                    "api_key": "${env:SYNCLINE_DEMO_STRIPE_KEY}",
                    "webhook_secret": "${env:SYNCLINE_DEMO_STRIPE_WHSEC}",
                },
            },
            "netsuite": {
                "vendor": "netsuite",
                "base_url": netsuite_url,
                "options": {"account_id": "TSTDRV1", "subsidiary_id": "1"},
                "secrets": {
                    key: f"${{env:SYNCLINE_DEMO_NS_{key.upper()}}}"
                    for key in ("consumer_key", "consumer_secret", "token_id", "token_secret")
                },
                "budget": {"concurrency": netsuite_concurrency, "timeout_seconds": 2.0},
            },
        },
        "routes": [
            {"event": "account.*", "deliver": {"connection": "netsuite", "operation": "upsert_customer"}},
            {"event": "invoice.*", "deliver": {"connection": "netsuite", "operation": "upsert_invoice"}},
            {
                "event": "payment.succeeded",
                "when": "data.invoice_id != null",
                "deliver": {"connection": "netsuite", "operation": "upsert_customer_payment"},
            },
            {"event": "credit_memo.issued", "deliver": {"connection": "netsuite", "operation": "upsert_credit_memo"}},
            {"event": "refund.succeeded", "deliver": {"connection": "netsuite", "operation": "upsert_customer_refund"}},
        ],
        "retry": {"base_seconds": 0.2, "cap_seconds": 5.0, "max_attempts": 15, "dependency_max_attempts": 40},
        "pipeline": {"lease_seconds": 5.0},
    }


@dataclass
class DemoEnvironment:
    """Sandboxes on localhost plus the configuration that points Syncline at them."""

    workdir: Path
    netsuite_concurrency: int = 5
    netsuite_faults: Faults | None = None
    stripe_webhooks: dict[str, Any] = field(default_factory=dict)
    store: str | None = None
    servers: list[ServerThread] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> DemoEnvironment:
        from syncline.connectors.netsuite import NetSuiteSandbox
        from syncline.connectors.stripe import StripeSandbox

        self.env = {
            "SYNCLINE_DEMO_STRIPE_KEY": f"sk_test_{secrets.token_hex(12)}",
            "SYNCLINE_DEMO_STRIPE_WHSEC": f"whsec_{secrets.token_hex(16)}",
            **{
                f"SYNCLINE_DEMO_NS_{key.upper()}": secrets.token_hex(16)
                for key in ("consumer_key", "consumer_secret", "token_id", "token_secret")
            },
        }
        os.environ.update(self.env)
        self.stripe = StripeSandbox(api_key=self.env["SYNCLINE_DEMO_STRIPE_KEY"], **self.stripe_webhooks)
        self.netsuite = NetSuiteSandbox(concurrency_limit=self.netsuite_concurrency, faults=self.netsuite_faults)
        self.stripe_server = ServerThread(self.stripe.app).start()
        self.netsuite_server = ServerThread(self.netsuite.app).start()
        self.servers += [self.stripe_server, self.netsuite_server]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.store = self.store or f"sqlite:///{self.workdir / 'syncline.db'}"
        return self

    def document(self) -> dict[str, Any]:
        return demo_config_document(
            self.store or "",
            self.stripe_server.url,
            self.netsuite_server.url,
            netsuite_concurrency=self.netsuite_concurrency,
        )

    def config(self) -> SynclineConfig:
        return parse_config(self.document())

    def subscribe(self, syncline_url: str) -> None:
        """Point the Stripe sandbox's webhooks at Syncline."""
        self.stripe.add_webhook_endpoint(f"{syncline_url}/v1/webhooks/stripe", self.env["SYNCLINE_DEMO_STRIPE_WHSEC"])

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()


@dataclass
class DriveResult:
    customers: list[str] = field(default_factory=list)
    invoices: list[str] = field(default_factory=list)
    payments: int = 0
    refunds: int = 0


async def drive_stripe(
    stripe_url: str,
    api_key: str,
    *,
    invoices: int,
    customers: int | None = None,
    concurrency: int = 16,
    seed: int = 0,
    on_progress: Callable[[int], None] | None = None,
) -> DriveResult:
    """Create customers and invoices in the Stripe sandbox, finalize and pay them (some refunded)."""
    import random

    rng = random.Random(seed)
    customers = customers or max(1, invoices // 4)
    result = DriveResult()
    gate = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=stripe_url, headers=headers, timeout=30) as http:

        async def post(path: str, data: dict[str, Any]) -> dict[str, Any]:
            key = str(uuid.uuid4())
            for attempt in range(8):
                try:
                    response = await http.post(path, data=data, headers={"Idempotency-Key": key})
                except httpx.TransportError:
                    await asyncio.sleep(0.05 * 2**attempt)
                    continue
                if response.status_code in (429, 500, 502, 503):
                    await asyncio.sleep(0.05 * 2**attempt)
                    continue
                response.raise_for_status()
                body: dict[str, Any] = response.json()
                return body
            raise RuntimeError(f"Stripe sandbox kept failing on {path}")

        async def customer(n: int) -> str:
            async with gate:
                body = await post("/v1/customers", {"name": f"Customer {n}", "email": f"billing{n}@example.com"})
                return str(body["id"])

        result.customers = list(await asyncio.gather(*(customer(n) for n in range(customers))))

        # Stripe's POST /v1/invoices sweeps the customer's pending items, so one customer's
        # invoices are built one at a time (as a billing run would).
        locks = {cus: asyncio.Lock() for cus in result.customers}

        async def invoice(n: int) -> None:
            cus = result.customers[n % len(result.customers)]
            async with gate, locks[cus]:
                currency = DEMO_CURRENCIES[n % len(DEMO_CURRENCIES)]
                amount = rng.randrange(1_000, 500_000)
                await post(
                    "/v1/invoiceitems",
                    {
                        "customer": cus,
                        "amount": amount,
                        "currency": currency,
                        "description": f"Subscription seat x{1 + n % 5}",
                    },
                )
                created = await post("/v1/invoices", {"customer": cus})
                invoice_id = str(created["id"])
                await post(f"/v1/invoices/{invoice_id}/finalize", {})
                paid = await post(f"/v1/invoices/{invoice_id}/pay", {})
                result.invoices.append(invoice_id)
                result.payments += 1
                if n % 10 == 3 and paid.get("charge"):
                    await post("/v1/refunds", {"charge": paid["charge"], "amount": amount // 4})
                    result.refunds += 1
                if on_progress:
                    on_progress(1)

        await asyncio.gather(*(invoice(n) for n in range(invoices)))
    return result


def sandbox_json(url: str, path: str) -> Any:
    """GET one of a sandbox's admin endpoints."""
    return httpx.get(f"{url}{path}", timeout=30).json()


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
