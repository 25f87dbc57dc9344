"""``syncline ledger`` commands on a project folder: load, release, drill down, refuse bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from typer.testing import CliRunner

from syncline.canonical import objects as o
from syncline.cli import app
from syncline.config import load_config
from syncline.ledger import LedgerStore
from syncline.runtime import Syncline
from syncline.store import deliveries

from . import _build as b
from .test_store import NOV, _cloud


@pytest.fixture
def project(tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in ("consumer_key", "consumer_secret", "token_id", "token_secret"):
        monkeypatch.setenv(f"NS_{key.upper()}", "x")
    ledger = b.raw_config()
    ledger["erp"] = {"connection": "netsuite", "mode": "summarised"}
    config: dict[str, Any] = {
        "store": store_url,
        "connections": {"netsuite": {
            "vendor": "netsuite", "base_url": "http://127.0.0.1:9",
            "secrets": {key: f"${{env:NS_{key.upper()}}}" for key in
                        ("consumer_key", "consumer_secret", "token_id", "token_secret")},
            "options": {"account_id": "TSTDRV9"},
        }},
        "ledger": ledger,
    }
    path = tmp_path / "syncline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_load_release_and_drill_down(project: Path) -> None:
    runner = CliRunner()
    folder = project.parent
    (folder / "periods.csv").write_text(
        "entity,id,name,start,end,status\nus,101,Nov 2026,2026-11-01,2026-11-30,open\n"
        "us,102,Dec 2026,2026-12-01,2026-12-31,open\n")
    (folder / "rates.csv").write_text("date,base,quote,rate\n2026-11-01,EUR,USD,1.0850\n")
    result = runner.invoke(app, ["ledger", "periods", "load", str(folder / "periods.csv"), "-c", str(project)])
    assert result.exit_code == 0 and "loaded 2 periods" in result.output, result.output
    result = runner.invoke(app, ["ledger", "rates", "load", str(folder / "rates.csv"), "-c", str(project)])
    assert result.exit_code == 0 and "loaded 1 rates" in result.output

    syncline = Syncline(load_config(project))
    try:
        assert syncline.config.ledger is not None
        store = LedgerStore(syncline.engine, syncline.config.ledger)
        events = [_cloud("invoice.issued", b.invoice(f"in_{n}", "USD", [b.line(f"l_{n}", 1_000, "USD")],
                                                     issued=NOV, account="acct_us")) for n in range(3)]
        with syncline.engine.begin() as conn:
            store.post_events(conn, events)
    finally:
        syncline.close()

    result = runner.invoke(app, ["ledger", "release", "--through", "2026-11-30", "-c", str(project)])
    assert result.exit_code == 0 and "1 summaries of 3 entries" in result.output, result.output
    syncline = Syncline(load_config(project))
    try:
        with syncline.engine.connect() as conn:
            [payload] = conn.execute(select(deliveries.c.payload)).scalars().all()
    finally:
        syncline.close()
    summary = o.JournalEntry.model_validate_json(payload)
    assert summary.posting_period == "101"
    result = runner.invoke(app, ["ledger", "drill-down", summary.id, "-c", str(project)])
    assert result.exit_code == 0
    assert all(f"in_{n}" in result.output for n in range(3))


def test_bad_inputs_fail_with_a_message(project: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    (tmp_path / "bad.csv").write_text("date,base,quote,rate\n2026-11-01,EUR,USD,-1\n")
    result = runner.invoke(app, ["ledger", "rates", "load", str(tmp_path / "bad.csv"), "-c", str(project)])
    assert result.exit_code == 2 and "must be positive" in result.output
    (tmp_path / "periods.csv").write_text("entity,id,name,start,end,status\nmars,1,X,2026-11-01,2026-11-30,open\n")
    result = runner.invoke(app, ["ledger", "periods", "load", str(tmp_path / "periods.csv"), "-c", str(project)])
    assert result.exit_code == 2 and "unknown entity 'mars'" in result.output
    result = runner.invoke(app, ["ledger", "drill-down", "js_nothing", "-c", str(project)])
    assert result.exit_code == 2 and "no entries folded into js_nothing" in result.output
