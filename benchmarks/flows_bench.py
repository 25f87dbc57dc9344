"""Onboarding flows completed per second, on SQLite or PostgreSQL.

    python benchmarks/flows_bench.py --flows 2000                       # SQLite file in a temp folder
    python benchmarks/flows_bench.py --flows 2000 --store postgresql://postgres@127.0.0.1:5432/flows_bench

Each flow is one closed-won deal of a valid US account with one recurring line: 9 deliveries
(billing customer, product, price, subscription; ERP customer, sales order; support organization,
entitlement; CRM status) and 10 waits. Events are in the inbox before the clock starts. Figures:

* pipeline: the whole runtime (normalizer, flow engine, one delivery worker per connection) with
  in-process fake vendors answering at once — flows/s from the first event to the last
  ``completed``;
* engine: the flow engine alone, with a stand-in that marks every pending delivery done in one
  statement between ticks — the engine's own cost per flow.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import func, select, text, update

from syncline.config import parse_config
from syncline.connectors.base import Connector, ConnectorRegistry, Operation
from syncline.flows import QUOTE_TO_CASH, FlowEngine, FlowRegistry, onboarding
from syncline.flows._tables import flow_instances
from syncline.pipeline.inbox import Received, write_inbox
from syncline.pipeline.normalize import normalize_batch
from syncline.runtime import Syncline
from syncline.store import create_store_engine, deliveries
from syncline.testing import FakeConnector, FakeVendor

_OPERATIONS = {
    "fake_crm": {"write_back_status": "opportunity"},
    "fake_billing": {"upsert_customer": "account", "upsert_product": "product", "upsert_price": "price",
                     "upsert_subscription": "subscription"},
    "fake_erp": {"upsert_customer": "account", "upsert_sales_order": "sales_order"},
    "fake_support": {"upsert_organization": "account", "set_entitlement": "entitlement"},
}


def _connectors() -> list[type[Connector]]:
    return [
        type(f"Bench_{vendor}", (FakeConnector,),
             {"vendor": vendor, "operations": {name: Operation(name, kind) for name, kind in ops.items()}})
        for vendor, ops in _OPERATIONS.items()
    ]


def _events(count: int) -> list[Received]:
    items = []
    for n in range(count):
        account = {"id": f"account_{n}", "source": {"system": "crm", "object_type": "account",
                                                    "external_id": f"a{n}"},
                   "name": f"Customer {n}", "currency": "USD", "tax_ids": [f"US-{n}"], "address": {"country": "US"}}
        deal = {"id": f"opp_{n}", "source": {"system": "crm", "object_type": "opportunity", "external_id": f"o{n}"},
                "account_id": f"account_{n}", "stage": "closed_won", "currency": "USD",
                "lines": [{"id": f"l{n}", "quantity": 1, "unit_amount": {"amount": 9900, "currency": "USD"},
                           "interval": "month"}]}
        for kind, data in (("account.created", account), ("opportunity.closed_won", deal)):
            body = orjson.dumps({"id": f"{kind}-{n}", "type": kind, "created": 1, "data": data})
            items.append(Received("crm", f"{kind}-{n}", kind, body))
    return items


def _syncline(store: str, batch: int) -> Syncline:
    os.environ.setdefault("BENCH_SECRET", "bench-only")
    connections: dict[str, Any] = {
        role: {"vendor": vendor, "base_url": "http://127.0.0.1:9", "budget": {"concurrency": 32},
               "options": {"vendor_state": f"bench-{role}"}, "secrets": {"webhook_secret": "${env:BENCH_SECRET}"}}
        for role, vendor in (("crm", "fake_crm"), ("billing", "fake_billing"), ("erp", "fake_erp"),
                             ("support", "fake_support"))
    }
    config = parse_config({
        "store": store, "connections": connections, "pipeline": {"breaker_failures": 1_000_000},
        "flows": {"legal_entities": [{"id": "us-inc", "countries": ["US"], "currency": "USD"}],
                  "batch_size": batch, "poll_seconds": 0.01},
    })
    for role in ("crm", "billing", "erp", "support"):
        FakeVendor(f"bench-{role}")
    syncline = Syncline(config, registry=ConnectorRegistry(_connectors()), engine=create_store_engine(store),
                        flows=QUOTE_TO_CASH)
    syncline.migrate()
    return syncline


def _completed(syncline: Syncline) -> int:
    with syncline.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(flow_instances)
                                .where(flow_instances.c.state == "completed")).scalar_one())


async def _pipeline(syncline: Syncline, flows: int) -> float:
    write_inbox(syncline.engine, _events(flows))
    stop = asyncio.Event()
    started = time.perf_counter()
    runner = asyncio.create_task(syncline.run_workers(stop))
    while await asyncio.to_thread(_completed, syncline) < flows:
        if runner.done():
            runner.result()
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    stop.set()
    await runner
    return elapsed


def _engine_only(syncline: Syncline, flows: int, batch: int) -> float:
    write_inbox(syncline.engine, _events(flows))
    engine = FlowEngine(syncline.engine, FlowRegistry([onboarding]), syncline.config.flows)
    while normalize_batch(syncline.engine, syncline.connectors, syncline.router, limit=batch,
                          observers=[engine.sink]).claimed:
        pass
    started = time.perf_counter()
    while _completed(syncline) < flows:
        engine.tick()
        with syncline.engine.begin() as conn:
            conn.execute(update(deliveries).where(deliveries.c.state == "pending")
                         .values(state="done", external_id="bench", delivered_at=time.time()))
    return time.perf_counter() - started


def _reset_postgres(url: str) -> None:
    engine = create_store_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flows", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=200, help="instances per engine transaction")
    parser.add_argument("--store", help="PostgreSQL URL (its public schema is dropped!); default: temp SQLite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        results = {}
        for mode in ("pipeline", "engine"):
            if args.store:
                _reset_postgres(args.store)
                store = args.store
            else:
                store = f"sqlite:///{Path(folder) / f'{mode}.db'}"
            syncline = _syncline(store, args.batch)
            try:
                if mode == "pipeline":
                    elapsed = asyncio.run(_pipeline(syncline, args.flows))
                else:
                    elapsed = _engine_only(syncline, args.flows, args.batch)
            finally:
                syncline.close()
            results[mode] = elapsed
        backend = "postgresql" if args.store else "sqlite"
        for mode, elapsed in results.items():
            print(f"{backend} {mode:8s} {args.flows} onboarding flows in {elapsed:6.2f}s = "
                  f"{args.flows / elapsed:7.1f} flows/s")


if __name__ == "__main__":
    main()
