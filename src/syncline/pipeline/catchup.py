"""Catch-up: fetch events a vendor holds that never arrived as webhooks, into the inbox.

Pages go through the same inbox (and its dedupe on the vendor event id) as webhooks, so events
that did arrive are not processed twice; the cursor is stored after each page is durable.
"""

from __future__ import annotations

import time

import orjson
from sqlalchemy import Engine, select

from syncline.connectors.base import Connector, Limits
from syncline.pipeline.budget import Budget
from syncline.pipeline.inbox import Received, write_inbox
from syncline.store import cursors, upsert

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
