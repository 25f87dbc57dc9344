"""The inbox: every accepted vendor event, raw bytes kept, deduplicated, committed in groups.

Webhook handlers hand each verified request to :class:`InboxWriter`, which commits whatever
has queued up in one transaction (group commit) and only then lets the handlers answer the
vendor. Nothing is acknowledged before it is durable, and one fsync covers hundreds of events.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import Engine

from syncline.errors import ErrorClass
from syncline.store import exceptions, inbox, insert_ignore


@dataclass(frozen=True)
class Received:
    """One authenticated inbound event, as the vendor sent it."""

    connection: str
    vendor_event_id: str
    vendor_event_type: str | None
    body: bytes
    #: Set when the body cannot be decoded at all (invalid JSON): kept, but parked at once.
    parked_reason: str | None = None
    #: W3C trace context of the receiving request; the deliveries made from it continue the trace.
    traceparent: str | None = None


def write_inbox(engine: Engine, items: Sequence[Received], now: float | None = None) -> set[tuple[str, str]]:
    """Insert ``items`` in one transaction; return the (connection, event id) pairs that were new."""
    now = time.time() if now is None else now
    unique: dict[tuple[str, str], Received] = {}
    for item in items:
        unique.setdefault((item.connection, item.vendor_event_id), item)
    rows = [
        {
            "connection": item.connection,
            "vendor_event_id": item.vendor_event_id,
            "vendor_event_type": item.vendor_event_type,
            "received_at": now,
            "state": "parked" if item.parked_reason else "received",
            "body": item.body,
            "error": item.parked_reason,
            "traceparent": item.traceparent,
        }
        for item in unique.values()
    ]
    with engine.begin() as conn:
        inserted = conn.execute(
            insert_ignore(engine, inbox).returning(inbox.c.id, inbox.c.connection, inbox.c.vendor_event_id),
            rows,
        ).all()
        new = {(row.connection, row.vendor_event_id): row.id for row in inserted}
        parked = [
            {
                "source": "inbox", "ref_id": new[key], "connection": key[0],
                "error_class": ErrorClass.DATA_QUALITY.value, "code": "payload_undecodable",
                "reason": item.parked_reason, "created_at": now,
            }
            for key, item in unique.items()
            if item.parked_reason and key in new
        ]
        if parked:
            conn.execute(exceptions.insert(), parked)
    return set(new)


class InboxWriter:
    """Group-commit writer shared by all webhook handlers of one process."""

    def __init__(self, engine: Engine, *, max_batch: int = 1000) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.batches = 0
        self.written = 0
        self.duplicates = 0
        self._queue: asyncio.Queue[tuple[Received, asyncio.Future[bool]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # One thread: SQLite has one writer anyway, and batches stay in arrival order.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inbox-writer")

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="inbox-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._executor.shutdown(wait=True)

    async def submit(self, item: Received) -> bool:
        """Wait until ``item`` is committed; return False when it was a duplicate."""
        if self._task is None:
            raise RuntimeError("InboxWriter.start() was not called")
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            items = [item for item, _ in batch]
            try:
                new = await loop.run_in_executor(self._executor, write_inbox, self.engine, items)
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            seen: set[tuple[str, str]] = set()
            for item, future in batch:
                key = (item.connection, item.vendor_event_id)
                fresh = key in new and key not in seen
                seen.add(key)
                self.written += fresh
                self.duplicates += not fresh
                if not future.done():
                    future.set_result(fresh)
