"""Crash tests: SIGKILL the Syncline process again and again under vendor faults.

Stripe (sandbox) creates customers, invoices, charges and refunds and sends signed webhooks
with duplicates and out-of-order arrivals; NetSuite (sandbox) answers 10 % 5xx, 5 % 429 and
2 % timeouts (after writing). Syncline runs as its own process (`syncline run`) and is killed
with SIGKILL at random points several times. Afterwards every record exists exactly once in
NetSuite, each invoice in its final state, and nothing is parked.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from syncline.canonical import canonical_id
from syncline.demo import DemoEnvironment, drive_stripe, sandbox_json, wait_until
from syncline.sandbox import Faults, free_port
from syncline.store import create_store_engine, deliveries, exceptions, inbox

#: Invoices per crash run: 2,000 make about 10,700 Stripe events (the issue asks for 10,000);
#: a quick local check can set fewer.
INVOICES = int(os.environ.get("SYNCLINE_CRASH_INVOICES", "2000"))


class Killer:
    """Keeps one `syncline run` process alive, SIGKILLing and restarting it at random moments."""

    def __init__(self, config: Path, port: int, env: dict[str, str], seed: int) -> None:
        self.config, self.port, self.env = config, port, env
        self.rng = random.Random(seed)
        self.kills = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def spawn(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "syncline", "run", "-c", str(self.config), "--port", str(self.port)],
            env=self.env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        )

    def start(self, kills: int) -> None:
        self.wanted = kills
        self.spawn()
        self._thread.start()

    def _loop(self) -> None:
        while self.kills < self.wanted and not self._stop.wait(self.rng.uniform(1.5, 4.0)):
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.kills += 1
            # Stay down a moment: the Stripe sandbox must retry into a dead endpoint.
            time.sleep(self.rng.uniform(0.1, 1.0))
            self.spawn()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)


def run_crash_test(tmp_path: Path, store: str, *, invoices: int, kills: int) -> None:
    env = DemoEnvironment(
        tmp_path, netsuite_concurrency=8, store=store,
        # NetSuite's concurrency errors carry no Retry-After (Retry-After handling has its own tests).
        netsuite_faults=Faults(server_error_rate=0.10, rate_limited_rate=0.05, timeout_rate=0.02,
                               hang_seconds=1.5, retry_after_seconds=0, seed=42),
        stripe_webhooks={"duplicate_rate": 0.1, "shuffle_window": 16, "seed": 7, "max_attempts": 60,
                         "webhook_concurrency": 16},
    ).start()
    port = free_port()
    document = env.document()
    document["connections"]["netsuite"]["budget"]["timeout_seconds"] = 1.0
    document["pipeline"] = {"lease_seconds": 3.0, "breaker_failures": 50}
    document["api"] = {"port": port}
    config = tmp_path / "syncline.yaml"
    config.write_text(yaml.safe_dump(document))
    killer = Killer(config, port, {**os.environ, **env.env}, seed=11)
    try:
        killer.start(kills)
        env.subscribe(f"http://127.0.0.1:{port}")
        result = asyncio.run(drive_stripe(env.stripe_server.url, env.env["SYNCLINE_DEMO_STRIPE_KEY"],
                                          invoices=invoices, concurrency=24, seed=3))
        assert wait_until(lambda: killer.kills >= kills, timeout=120), "the process was not killed enough"
        engine = create_store_engine(store)

        def settled() -> bool:
            if not sandbox_json(env.stripe_server.url, "/_sandbox/webhooks/idle").get("idle"):
                return False
            with engine.connect() as conn:
                waiting = conn.execute(select(func.count()).select_from(inbox).where(inbox.c.state == "received"))
                outstanding = conn.execute(select(func.count()).select_from(deliveries).where(
                    deliveries.c.state.in_(("pending", "inflight"))))
                return waiting.scalar_one() == 0 and outstanding.scalar_one() == 0

        if not wait_until(settled, timeout=1800, interval=1.0):
            with engine.connect() as conn:
                states = {
                    "inbox": dict(conn.execute(select(inbox.c.state, func.count()).group_by(inbox.c.state)).all()),
                    "deliveries": dict(conn.execute(
                        select(deliveries.c.state, func.count()).group_by(deliveries.c.state)).all()),
                }
            pytest.fail(f"the pipeline did not drain: {states}")
    finally:
        killer.stop()

    stripe_stats = sandbox_json(env.stripe_server.url, "/_sandbox/stats")
    ns = env.netsuite
    try:
        assert stripe_stats["events"] >= invoices * 4
        for invoice in result.invoices:
            found = ns.records_with_external_id("invoice", canonical_id("stripe", "invoice", invoice))
            assert len(found) == 1, f"{invoice} is in NetSuite {len(found)} times"
        for customer in result.customers:
            found = ns.records_with_external_id("customer", canonical_id("stripe", "account", customer))
            assert len(found) == 1, f"{customer} is in NetSuite {len(found)} times"
        assert len(ns.records("invoice")) == invoices
        assert len(ns.records("customerPayment")) == result.payments
        with engine.connect() as conn:
            parked = conn.execute(select(func.count()).select_from(deliveries).where(deliveries.c.state == "parked"))
            assert parked.scalar_one() == 0
            assert conn.execute(select(func.count()).select_from(exceptions)).scalar_one() == 0
            assert conn.execute(select(func.count()).select_from(inbox).where(
                inbox.c.state == "parked")).scalar_one() == 0
        # The faults really happened.
        stats = ns.stats()
        assert all(stats["faults"].get(kind, 0) > 0 for kind in ("server_error", "rate_limited", "timeout"))
    finally:
        engine.dispose()
        env.stop()


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_sigkill_under_faults_loses_nothing_and_posts_nothing_twice_sqlite(tmp_path: Path) -> None:
    run_crash_test(tmp_path, f"sqlite:///{tmp_path / 'crash.db'}", invoices=INVOICES, kills=4)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(2400)
def test_sigkill_under_faults_loses_nothing_and_posts_nothing_twice_postgres(tmp_path: Path, pg_url: str) -> None:
    run_crash_test(tmp_path, pg_url, invoices=INVOICES, kills=4)
