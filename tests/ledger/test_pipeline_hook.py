"""The ledger as an observer of normalize batches: entries commit with the inbox rows they came from."""

from __future__ import annotations

import orjson
from pydantic import SecretStr
from sqlalchemy import Engine, select

from syncline.canonical import objects as o
from syncline.connectors.base import ConnectionSettings
from syncline.ledger import LedgerStore
from syncline.pipeline.inbox import Received, write_inbox
from syncline.pipeline.normalize import normalize_batch
from syncline.pipeline.routing import Router
from syncline.store import deliveries, inbox
from syncline.testing import FakeConnector

from . import _build as b
from .test_store import NOV


def _received(n: int, kind: str, document: o.Invoice | o.Payment) -> Received:
    body = {"id": f"evt_{n}", "type": kind, "created": int(b.at(NOV).timestamp()),
            "data": document.model_dump(mode="json")}
    return Received("billing", f"evt_{n}", kind, orjson.dumps(body))


def test_normalize_batch_posts_ledger_events_in_its_transaction(engine: Engine) -> None:
    store = LedgerStore(engine, b.config())
    store.load_rates(b.rates().all())
    fake = FakeConnector(ConnectionSettings(name="billing", vendor="fake", base_url="http://fake.invalid",
                                            secrets={"signing_secret": SecretStr("s")}, options={}))
    invoice = b.invoice("in_p", "USD", [b.line("l_p", 2_500, "USD")], issued=NOV, account="acct_us")
    payment = b.payment("py_p", "in_p", 2_500, "USD", paid=NOV, account="acct_us")
    write_inbox(engine, [_received(1, "invoice.issued", invoice), _received(2, "payment.succeeded", payment),
                         _received(3, "account.created", o.Account(id="acct_us", source=b.src("account", "a")))])
    stats = normalize_batch(engine, {"billing": fake}, Router([], {"billing": fake}), observers=[store])
    assert stats.claimed == 3
    with engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.connection, deliveries.c.payload).order_by(deliveries.c.id)).all()
        states = set(conn.execute(select(inbox.c.state)).scalars())
    assert states == {"done"}
    entries = [o.JournalEntry.model_validate_json(row.payload) for row in rows]
    assert [row.connection for row in rows] == ["netsuite", "netsuite"]
    assert [e.source_documents for e in entries] == [["in_p"], ["py_p"]]
