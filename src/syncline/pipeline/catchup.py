"""Catch-up: fetch events a vendor holds that never arrived as webhooks, into the inbox.

Pages go through the same inbox (and its dedupe on the vendor event id) as webhooks, so events
that did arrive are not processed twice; the cursor is stored after each page is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson
import structlog
from sqlalchemy import Engine, select

from syncline.connectors.base import Connector, Limits
from syncline.pipeline.budget import Budget
from syncline.pipeline.inbox import Received, write_inbox
from syncline.store import cursors, upsert

log = structlog.get_logger("syncline.pipeline.catchup")

CURSOR = "events"


def read_cursor(engine: Engine, connection: str) -> str | None:
    with engine.connect() as conn:
        value = conn.execute(
            select(cursors.c.value).where(cursors.c.connection == connection, cursors.c.name == CURSOR)
        ).scalar()
    return str(value) if value is not None else None


def write_cursor(engine: Engine, connection: str, value: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            upsert(engine, cursors, ["connection", "name"], ["value", "updated_at"]),
            {"connection": connection, "name": CURSOR, "value": value, "updated_at": time.time()},
        )


async def catch_up(engine: Engine, connector: Connector, limits: Limits, budget: Budget) -> tuple[int, int]:
    """Pull missed events into the inbox; return (events seen, events that were new)."""
    seen = new = 0
    cursor = read_cursor(engine, connector.name)
    async with connector.http_client(limits) as http:
        pages = connector.catch_up(http, cursor)
        while True:
            async with budget.slot():
                page = await anext(pages, None)
            if page is None:
                break
            items = []
            for event in page.events:
                identity = connector.identify(event)
                items.append(Received(connector.name, identity.event_id, identity.event_type, orjson.dumps(event)))
            if items:
                new += len(write_inbox(engine, items))
                seen += len(items)
            if page.cursor:
                write_cursor(engine, connector.name, page.cursor)
    return seen, new


async def catch_up_loop(
    engine: Engine, connector: Connector, limits: Limits, budget: Budget, *, every: float,
    nudged: asyncio.Event, stop: asyncio.Event, settle: float = 2.0,
) -> None:
    """Run :func:`catch_up` every ``every`` seconds, and ``settle`` seconds after ``nudged`` is set.

    A vendor that notifies changes without their content (HubSpot webhooks carry an id and one
    property) gets its records read through catch-up; the short settle delay gathers a burst of
    notices into one read. Failures are logged and tried again at the next turn: the cursor only
    moves past pages that are durable in the inbox.
    """
    while not stop.is_set():
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(nudged.wait())]
        try:
            await asyncio.wait(waiters, timeout=every, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if stop.is_set():
            return
        if nudged.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=settle)
            if stop.is_set():
                return
            nudged.clear()
        try:
            seen, new = await catch_up(engine, connector, limits, budget)
        except Exception:
            log.exception("catch-up failed; trying again at the next turn", connection=connector.name)
            continue
        if new:
            log.info("catch-up found events", connection=connector.name, seen=seen, new=new)
