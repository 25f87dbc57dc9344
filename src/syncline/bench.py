"""``syncline bench``: throughput and latency of the pipeline's stages on this machine.

Every figure is measured next to a baseline in the same run, because the machine is shared:

* ingest: signed Stripe webhooks against ``syncline serve`` (a separate process) versus the same
  load against a bare ASGI endpoint that stores nothing;
* normalize + route + outbox: events/s over a pre-filled inbox;
* delivery: average requests in flight against a NetSuite sandbox limited to C concurrent
  requests (budget use = in flight / C), and how many requests went over the limit;
* memory: peak RSS of the Syncline processes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.table import Table

from syncline.sandbox import free_port

WEBHOOK_SECRET = "whsec_bench_only_not_a_real_secret"  # noqa: S105 - benchmark-only key


def stripe_invoice_event(n: int, *, created: int) -> dict[str, Any]:
    """Return a realistic Stripe ``invoice.paid`` event (about 2 KB, like the real ones)."""
    invoice_id = f"in_bench{n:08d}"
    customer = f"cus_bench{n % 5000:06d}"
    amount = 1000 + n % 90000
    line = {
        "id": f"il_bench{n:08d}",
        "object": "line_item",
        "amount": amount,
        "currency": "usd",
        "description": "Pro plan (monthly)",
        "discountable": True,
        "livemode": False,
        "metadata": {},
        "period": {"start": created - 2_592_000, "end": created},
        "proration": False,
        "quantity": 1,
        "type": "subscription",
        "price": {
            "id": "price_bench",
            "object": "price",
            "currency": "usd",
            "unit_amount": amount,
            "product": "prod_bench",
        },
        "tax_amounts": [],
    }
    invoice = {
        "id": invoice_id,
        "object": "invoice",
        "account_country": "US",
        "amount_due": amount,
        "amount_paid": amount,
        "amount_remaining": 0,
        "attempt_count": 1,
        "attempted": True,
        "billing_reason": "subscription_cycle",
        "charge": f"ch_bench{n:08d}",
        "collection_method": "charge_automatically",
        "created": created,
        "currency": "usd",
        "customer": customer,
        "customer_email": f"billing{n % 5000}@example.com",
        "customer_name": f"Customer {n % 5000}",
        "description": None,
        "due_date": None,
        "ending_balance": 0,
        "hosted_invoice_url": None,
        "lines": {
            "object": "list",
            "data": [line],
            "has_more": False,
            "total_count": 1,
            "url": f"/v1/invoices/{invoice_id}/lines",
        },
        "livemode": False,
        "metadata": {},
        "number": f"BENCH-{n:08d}",
        "paid": True,
        "period_end": created,
        "period_start": created - 2_592_000,
        "status": "paid",
        "status_transitions": {
            "finalized_at": created,
            "paid_at": created,
            "voided_at": None,
            "marked_uncollectible_at": None,
        },
        "subscription": f"sub_bench{n % 5000:06d}",
        "subtotal": amount,
        "tax": None,
        "total": amount,
        "total_tax_amounts": [],
        "webhooks_delivered_at": created,
    }
    return {
        "id": f"evt_bench{n:08d}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": created,
        "data": {"object": invoice},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "invoice.paid",
    }


def stripe_signature(secret: str, body: bytes, timestamp: int) -> str:
    """Return a ``Stripe-Signature`` header value for ``body``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _bench_config(store: str, port: int) -> str:
    return textwrap.dedent(f"""\
        store: {store}
        connections:
          stripe:
            vendor: stripe
            base_url: http://127.0.0.1:9
            secrets:
              api_key: ${{env:BENCH_STRIPE_KEY}}
              webhook_secret: ${{env:BENCH_STRIPE_WHSEC}}
        api:
          port: {port}
        """)


_BARE_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"received":true}'})
"""


@dataclass
class LoadResult:
    requests: int
    seconds: float
    latencies: list[float]
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


async def _load(port: int, requests: list[bytes], connections: int) -> LoadResult:
    """Send pre-built HTTP/1.1 requests over keep-alive connections; time each one."""
    latencies: list[float] = []
    errors = 0
    per_connection = [requests[i::connections] for i in range(connections)]

    async def client(batch: list[bytes]) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for raw in batch:
                started = time.perf_counter()
                writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(batch) for batch in per_connection if batch))
    return LoadResult(len(requests), time.perf_counter() - started, latencies, errors)


def _signed_requests(count: int, offset: int) -> list[bytes]:
    now = int(time.time())
    out = []
    for n in range(offset, offset + count):
        body = orjson.dumps(stripe_invoice_event(n, created=now))
        head = (
            f"POST /v1/webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Stripe-Signature: {stripe_signature(WEBHOOK_SECRET, body, now)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered on port {port}")


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def bench_ingest(count: int, connections: int, workdir: Path) -> dict[str, float]:
    """Durable webhook ingest vs a bare endpoint, both served by uvicorn in their own process."""
    env = {**os.environ, "BENCH_STRIPE_KEY": "sk_test_bench", "BENCH_STRIPE_WHSEC": WEBHOOK_SECRET}
    results: dict[str, float] = {}

    bare_port = free_port()
    (workdir / "bare_app.py").write_text(_BARE_APP)
    bare = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bare_app:app",
            "--port",
            str(bare_port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=workdir,
        env=env,
    )
    try:
        _wait_port(bare_port)
        asyncio.run(_load(bare_port, _signed_requests(500, 10_000_000), connections))  # warm up
        baseline = asyncio.run(_load(bare_port, _signed_requests(count, 20_000_000), connections))
    finally:
        bare.terminate()
        bare.wait()

    port = free_port()
    config = workdir / "ingest.yaml"
    config.write_text(_bench_config(f"sqlite:///{workdir / 'ingest.db'}", port))
    server = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "syncline", "serve", "-c", str(config)],
        env=env,
        cwd=workdir,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        asyncio.run(_load(port, _signed_requests(500, 30_000_000), connections))  # warm up
        measured = asyncio.run(_load(port, _signed_requests(count, 0), connections))
        results["ingest_rss_mb"] = _peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait()
    results.update(
        {
            "ingest_per_s": measured.rate,
            "ingest_p50_ms": measured.percentile(0.50) * 1000,
            "ingest_p99_ms": measured.percentile(0.99) * 1000,
            "ingest_errors": measured.errors,
            "bare_per_s": baseline.rate,
            "bare_p99_ms": baseline.percentile(0.99) * 1000,
        }
    )
    return results


def bench_normalize(count: int, store: str) -> dict[str, float]:
    """Normalize + route + outbox over a pre-filled inbox of Stripe invoice events."""
    from syncline.config import parse_config
    from syncline.pipeline.inbox import Received, write_inbox
    from syncline.pipeline.normalize import normalize_batch
    from syncline.runtime import Syncline

    os.environ.update(
        {"BENCH_STRIPE_KEY": "sk_test_bench", "BENCH_STRIPE_WHSEC": WEBHOOK_SECRET, "BENCH_NS": "bench-secret"}
    )
    document = {
        "store": store,
        "connections": {
            "stripe": {
                "vendor": "stripe",
                "base_url": "http://127.0.0.1:9",
                "secrets": {"api_key": "${env:BENCH_STRIPE_KEY}", "webhook_secret": "${env:BENCH_STRIPE_WHSEC}"},
            },
            "netsuite": {
                "vendor": "netsuite",
                "base_url": "http://127.0.0.1:9",
                "options": {"account_id": "B"},
                "secrets": {
                    k: "${env:BENCH_NS}" for k in ("consumer_key", "consumer_secret", "token_id", "token_secret")
                },
            },
        },
        "routes": [{"event": "invoice.*", "deliver": {"connection": "netsuite", "operation": "upsert_invoice"}}],
    }
    syncline = Syncline(parse_config(document))
    syncline.migrate()
    now = int(time.time())
    for start in range(0, count, 2000):
        write_inbox(
            syncline.engine,
            [
                Received(
                    "stripe", f"evt_bench{n:08d}", "invoice.paid", orjson.dumps(stripe_invoice_event(n, created=now))
                )
                for n in range(start, min(count, start + 2000))
            ],
        )
    started = time.perf_counter()
    events = 0
    while True:
        stats = normalize_batch(syncline.engine, syncline.connectors, syncline.router, limit=1000)
        if not stats.claimed:
            break
        events += stats.events
    elapsed = time.perf_counter() - started
    syncline.close()
    return {"normalize_per_s": events / elapsed, "normalize_events": events}


def bench_delivery(count: int, concurrency: int, latency: float, workdir: Path) -> dict[str, float]:
    """Deliver ``count`` customer upserts to a NetSuite sandbox limited to ``concurrency``."""
    from syncline.canonical import canonical_id
    from syncline.config import parse_config
    from syncline.runtime import Syncline
    from syncline.store import deliveries

    port = free_port()
    sandbox = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import uvicorn
            from syncline.connectors.netsuite import NetSuiteSandbox
            from syncline.sandbox import Faults
            sandbox = NetSuiteSandbox(concurrency_limit={concurrency}, faults=Faults(latency_seconds={latency}))
            uvicorn.run(sandbox.app, port={port}, log_level="warning", access_log=False)
        """),
        ],
        cwd=workdir,
    )
    os.environ["BENCH_NS"] = "bench-secret"
    document = {
        "store": f"sqlite:///{workdir / 'delivery.db'}",
        "connections": {
            "netsuite": {
                "vendor": "netsuite",
                "base_url": f"http://127.0.0.1:{port}",
                "options": {"account_id": "TSTDRV1"},
                "secrets": {
                    k: "${env:BENCH_NS}" for k in ("consumer_key", "consumer_secret", "token_id", "token_secret")
                },
                "budget": {"concurrency": concurrency},
            }
        },
        "routes": [{"event": "account.*", "deliver": {"connection": "netsuite", "operation": "upsert_customer"}}],
    }
    syncline = Syncline(parse_config(document))
    syncline.migrate()
    now = time.time()
    rows = []
    for n in range(count):
        account = canonical_id("stripe", "account", f"cus_{n}")
        payload = {
            "object_type": "account",
            "id": account,
            "name": f"Customer {n}",
            "email": f"c{n}@example.com",
            "currency": "USD",
            "source": {"system": "stripe", "object_type": "customer", "external_id": f"cus_{n}"},
        }
        rows.append(
            {
                "connection": "netsuite",
                "operation": "upsert_customer",
                "ordering_key": f"netsuite:{account}",
                "dedupe_key": f"bench:{n}",
                "idempotency_key": f"bench:{n}",
                "canonical_id": account,
                "event_type": "account.created",
                "correlation_id": account,
                "payload": orjson.dumps(payload).decode(),
                "state": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
            }
        )
    with syncline.engine.begin() as conn:
        conn.execute(deliveries.insert(), rows)
    try:
        _wait_port_any(port)
        samples: list[int] = []

        async def main() -> float:
            stop = asyncio.Event()
            workers = syncline.make_workers()
            task = asyncio.ensure_future(asyncio.gather(*(w.run(stop) for w in workers)))
            budget = syncline.budgets["netsuite"]
            started = time.perf_counter()
            first = None
            while True:
                await asyncio.sleep(0.005)
                if budget.in_use and first is None:
                    first = time.perf_counter()
                if first is not None:
                    samples.append(budget.in_use)
                if workers[0].stats.delivered + workers[0].stats.parked >= count:
                    break
                if time.perf_counter() - started > 600:
                    break
            elapsed = time.perf_counter() - (first or started)
            stop.set()
            await task
            return elapsed

        elapsed = asyncio.run(main())
        stats = httpx.get(f"http://127.0.0.1:{port}/_sandbox/stats", timeout=10).json()
    finally:
        sandbox.terminate()
        sandbox.wait()
        syncline.close()
    busy = samples[: max(1, len(samples) - 2)]
    return {
        "delivery_per_s": count / elapsed,
        "delivery_ideal_per_s": concurrency / latency if latency else float("nan"),
        "budget_use_pct": 100 * statistics.fmean(busy) / concurrency,
        "over_limit": stats.get("over_limit", -1),
        "peak_concurrency": stats.get("peak_concurrency", -1),
    }


def _wait_port_any(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/_sandbox/stats", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"sandbox on port {port} did not start")


def run_benchmarks(console: Console, *, quick: bool = False) -> dict[str, float]:
    """Run every benchmark and print a table; return the figures."""
    ingest_n, normalize_n, delivery_n = (3_000, 5_000, 500) if quick else (20_000, 50_000, 3_000)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="syncline-bench-") as tmp:
        workdir = Path(tmp)
        console.print(f"ingest: {ingest_n} signed Stripe webhooks over 32 connections ...")
        figures.update(bench_ingest(ingest_n, 32, workdir))
        console.print(f"normalize + route + outbox: {normalize_n} events on SQLite ...")
        figures.update(bench_normalize(normalize_n, f"sqlite:///{workdir / 'normalize.db'}"))
        pg = os.environ.get("SYNCLINE_BENCH_PG_URL")
        if pg:
            console.print("normalize + route + outbox on PostgreSQL ...")
            figures["normalize_pg_per_s"] = bench_normalize(normalize_n, pg)["normalize_per_s"]
        console.print(f"delivery: {delivery_n} upserts, NetSuite sandbox limited to 5 concurrent, 20 ms each ...")
        figures.update(bench_delivery(delivery_n, 5, 0.02, workdir))
    figures["bench_process_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    table = Table(title="syncline bench")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("goal / baseline")
    rows = [
        (
            "durable webhook ingest",
            f"{figures['ingest_per_s']:,.0f}/s",
            f"goal ≥ 5,000/s; bare endpoint "
            f"{figures['bare_per_s']:,.0f}/s ({figures['ingest_per_s'] / figures['bare_per_s']:.0%})",
        ),
        (
            "ingest latency p50 / p99",
            f"{figures['ingest_p50_ms']:.1f} / {figures['ingest_p99_ms']:.1f} ms",
            f"goal p99 ≤ 25 ms; bare p99 {figures['bare_p99_ms']:.1f} ms",
        ),
        ("ingest errors", f"{figures['ingest_errors']:.0f}", "0"),
        ("normalize + route + outbox (SQLite)", f"{figures['normalize_per_s']:,.0f} events/s", "goal ≥ 20,000/s"),
    ]
    if "normalize_pg_per_s" in figures:
        rows.append(("normalize + route + outbox (PostgreSQL)", f"{figures['normalize_pg_per_s']:,.0f} events/s", ""))
    rows += [
        (
            "delivery throughput",
            f"{figures['delivery_per_s']:,.0f}/s",
            f"ideal C/latency = {figures['delivery_ideal_per_s']:,.0f}/s",
        ),
        ("NetSuite budget use", f"{figures['budget_use_pct']:.1f} %", "goal ≥ 90 %"),
        (
            "requests over the NetSuite limit",
            f"{figures['over_limit']:.0f}",
            f"goal 0; sandbox peak concurrency {figures['peak_concurrency']:.0f}",
        ),
        ("peak RSS: syncline serve", f"{figures['ingest_rss_mb']:.0f} MB", "goal ≤ 300 MB"),
        (
            "peak RSS: bench process (normalize + delivery)",
            f"{figures['bench_process_rss_mb']:.0f} MB",
            "goal ≤ 300 MB",
        ),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return figures
