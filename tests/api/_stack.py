"""A running Syncline (fake connector, workers on) with one API key per role, for API and console tests."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
from sqlalchemy import select

from syncline.api import create_app
from syncline.api.auth import Role, create_key, create_user
from syncline.errors import DataQualityError
from syncline.observe import configure_logging
from syncline.runtime import Syncline
from syncline.sandbox import ServerThread
from syncline.store import exceptions
from syncline.testing import FakeVendor, sign
from tests._fake import SECRET, account_event, invoice_event, make_syncline

PASSWORD = "correct horse battery staple"


@dataclass
class Stack:
    syncline: Syncline
    vendor: FakeVendor
    url: str
    keys: dict[Role, str] = field(default_factory=dict)

    def client(self, role: Role | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def webhook(self, body: bytes) -> None:
        response = httpx.post(f"{self.url}/v1/webhooks/src", content=body,
                              headers={"x-fake-signature": sign(SECRET, body)})
        response.raise_for_status()

    def wait_for(self, condition: object, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if callable(condition) and condition():
                return
            time.sleep(0.05)
        raise AssertionError("condition not reached in time")

    def open_exception_ids(self) -> list[int]:
        with self.syncline.engine.connect() as conn:
            return list(conn.execute(select(exceptions.c.id).where(exceptions.c.resolved_at.is_(None))
                                     .order_by(exceptions.c.id)).scalars())

    def park_invoice(self, invoice: str, account: str = "acct_1", reason: str = "tax code TX-99 is unknown") -> int:
        """Send an account and an invoice the ERP refuses once; return the exception id."""
        before = set(self.open_exception_ids())
        self.vendor.fail_next(invoice, DataQualityError(reason, code="tax_code_unknown"))
        self.webhook(account_event(f"evt_{account}_{uuid.uuid4().hex[:6]}", account))
        self.webhook(invoice_event(f"evt_{invoice}", invoice, account, total=12_500))
        self.wait_for(lambda: set(self.open_exception_ids()) - before)
        (new,) = set(self.open_exception_ids()) - before
        return new


@contextmanager
def running_stack(store_url: str, *, rate_per_minute: int | None = None) -> Iterator[Stack]:
    vendor = FakeVendor(f"erp-{uuid.uuid4().hex[:8]}")
    syncline = make_syncline(store_url, vendor)
    stack = Stack(syncline, vendor, "")
    for role in Role:
        stack.keys[role] = create_key(syncline.engine, f"{role}-key", role, rate_per_minute=rate_per_minute)[1]
        create_user(syncline.engine, f"{role}-user", PASSWORD, role)
    server = ServerThread(create_app(syncline, run_workers=True)).start()
    stack.url = server.url
    try:
        yield stack
    finally:
        server.stop()
        syncline.close()


class _LogSink:
    """Where structlog writes during a test: loggers cached on first use keep this stream for the session."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.recording = False
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        if self.recording:
            with self._lock:
                self.lines.append(text)
        return len(text)

    def flush(self) -> None:
        pass


_SINK = _LogSink()


@contextmanager
def captured_logs(level: str = "DEBUG") -> Iterator[list[str]]:
    """Configure Syncline's JSON logging into an in-memory sink and yield the lines written meanwhile.

    (Pointing structlog at pytest's capture streams would leave cached loggers writing to closed files.)
    """
    configure_logging(json=True, level=level, stream=_SINK)  # type: ignore[arg-type]
    _SINK.lines.clear()
    _SINK.recording = True
    try:
        yield _SINK.lines
    finally:
        _SINK.recording = False
