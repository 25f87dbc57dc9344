"""The hash-chained audit log: appends link up, and any edit or deletion is detected."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, update
from typer.testing import CliRunner

from syncline.api.auth import Principal, Role
from syncline.cli import app
from syncline.observe.audit import audit, audit_head, audit_log, entries, verify
from syncline.store import create_store_engine

ALICE = Principal("k1", "alice", Role.OPERATOR)


def _fill(engine: Engine, count: int) -> None:
    for index in range(count):
        audit(engine, ALICE, "delivery.retry", f"delivery:{index}", {"note": f"n{index}", "ids": [index]})


def test_appends_form_a_chain_that_verifies(engine: Engine) -> None:
    _fill(engine, 5)
    checked, breaks = verify(engine)
    assert (checked, breaks) == (5, [])
    newest = entries(engine, limit=2)
    assert [e.seq for e in newest] == [5, 4]
    assert newest[0].prev_hash == newest[1].hash
    assert newest[0].detail == {"ids": [4], "note": "n4"}
    assert newest[0].actor_name == "alice" and newest[0].actor_role == "operator"


def test_an_entry_written_inside_the_callers_transaction_rolls_back_with_it(engine: Engine) -> None:
    with pytest.raises(RuntimeError), engine.begin() as conn:
        audit(conn, ALICE, "exception.resolve", "exception:1", {})
        raise RuntimeError("the action failed")
    assert entries(engine) == []
    assert verify(engine) == (0, [])


@pytest.mark.parametrize("column, value", [("detail", '{"note": "forged"}'), ("actor_name", "mallory"),
                                           ("action", "key.create"), ("at", 1.0)])
def test_an_edited_row_fails_verification(engine: Engine, column: str, value: object) -> None:
    _fill(engine, 4)
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 2).values({column: value}))
    _, breaks = verify(engine)
    assert [b.seq for b in breaks] == [2]
    assert "edited" in breaks[0].problem


def test_a_deleted_row_fails_verification(engine: Engine) -> None:
    _fill(engine, 4)
    with engine.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq == 2))
    _, breaks = verify(engine)
    assert breaks and breaks[0].seq == 2


def test_deleting_the_newest_rows_fails_verification(engine: Engine) -> None:
    _fill(engine, 4)
    with engine.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq >= 3))
    _, breaks = verify(engine)
    assert [b.seq for b in breaks] == [4]


def test_a_rehashed_edit_is_still_caught_by_the_next_link(engine: Engine) -> None:
    _fill(engine, 3)
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(hash="f" * 64))
    _, breaks = verify(engine)
    assert {b.seq for b in breaks} == {2, 3}


def test_concurrent_writers_do_not_fork_the_chain(engine: Engine) -> None:
    def write(worker: int) -> None:
        for index in range(10):
            audit(engine, ALICE, "test.append", f"w{worker}:{index}", {})

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert verify(engine) == (40, [])
    with engine.connect() as conn:
        assert conn.execute(audit_head.select()).one().seq == 40


def test_cli_audit_verify_fails_after_a_row_is_altered_in_the_database(tmp_path: Path, store_url: str) -> None:
    config = tmp_path / "syncline.yaml"
    config.write_text(f"store: {store_url}\n")
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "--name", "alice", "--role", "operator", "-c", str(config)])
    assert created.exit_code == 0, created.output
    key_id = created.stdout.strip().split("_")[1]
    assert runner.invoke(app, ["keys", "revoke", key_id, "-c", str(config)]).exit_code == 0
    intact = runner.invoke(app, ["audit", "verify", "-c", str(config)])
    assert intact.exit_code == 0 and "2 rows" in intact.stdout
    engine = create_store_engine(store_url)
    try:
        with engine.begin() as conn:
            conn.execute(update(audit_log).where(audit_log.c.seq == 1).values(detail='{"name": "mallory"}'))
    finally:
        engine.dispose()
    tampered = runner.invoke(app, ["audit", "verify", "-c", str(config)])
    assert tampered.exit_code == 1
    assert "row 1" in tampered.stderr and "edited" in tampered.stderr


def test_an_operator_action_and_its_audit_entry_commit_together(engine: Engine,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from syncline.api import _actions
    from syncline.pipeline.delivery import is_paused

    def failing_audit(*_args: object, **_kwargs: object) -> int:
        raise RuntimeError("audit log unavailable")

    monkeypatch.setattr(_actions, "audit", failing_audit)
    with pytest.raises(RuntimeError):
        _actions.set_paused(engine, Principal("k1", "olga", Role.OPERATOR), "netsuite", True, "month end")
    # No audit entry, so no pause either.
    assert not is_paused(engine, "netsuite")
    monkeypatch.undo()
    _actions.set_paused(engine, Principal("k1", "olga", Role.OPERATOR), "netsuite", True, "month end")
    assert is_paused(engine, "netsuite")
    assert [entry.action for entry in entries(engine)][-1] == "connection.pause"
