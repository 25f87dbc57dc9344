from pathlib import Path

import pytest

from syncline.config import load_config, parse_config
from syncline.errors import ConfigError
from syncline.project import TEMPLATE


def _doc(**over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "connections": {"erp": {"vendor": "netsuite", "base_url": "https://x.example",
                                "secrets": {"token": "${env:SYNCLINE_TEST_TOKEN}"}}},
        "routes": [{"event": "invoice.*", "deliver": {"connection": "erp", "operation": "upsert_invoice"}}],
    }
    doc.update(over)
    return doc


def test_secrets_resolve_from_env_and_files_and_never_print(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SYNCLINE_TEST_TOKEN", "s3cr3t-value")
    config = parse_config(_doc())
    secret = config.connections["erp"].secrets["token"]
    assert secret.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t" not in repr(config) and "s3cr3t" not in str(config.model_dump())

    (tmp_path / "token").write_text("from-file\n")
    doc = _doc()
    doc["connections"]["erp"]["secrets"] = {"token": f"${{file:{tmp_path / 'token'}}}"}  # type: ignore[index]
    assert parse_config(doc).connections["erp"].secrets["token"].get_secret_value() == "from-file"


def test_literal_secrets_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = _doc()
    doc["connections"]["erp"]["secrets"] = {"token": "hunter2"}  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"connections\.erp\.secrets\.token: secrets must be") as info:
        parse_config(doc)
    assert "hunter2" not in str(info.value)


def test_missing_env_var_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNCLINE_TEST_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="SYNCLINE_TEST_TOKEN is not set"):
        parse_config(_doc())


def test_errors_are_one_readable_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCLINE_TEST_TOKEN", "x")
    with pytest.raises(ConfigError, match=r"routes\.0\.deliver\.connection|unknown connection 'nope'"):
        parse_config(_doc(routes=[{"event": "invoice.*", "deliver": {"connection": "nope", "operation": "x"}}]))
    with pytest.raises(ConfigError, match=r"routes\.0\.when: .*invalid JMESPath"):
        parse_config(_doc(routes=[{"event": "invoice.*", "when": "data.[", "deliver":
                                   {"connection": "erp", "operation": "upsert_invoice"}}]))
    with pytest.raises(ConfigError, match=r"connections\.erp\.budget\.concurrency"):
        doc = _doc()
        doc["connections"]["erp"]["budget"] = {"concurrency": 0}  # type: ignore[index]
        parse_config(doc)


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "syncline.yaml"
    path.write_text("connections:\n  erp: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(path)
    with pytest.raises(ConfigError, match="syncline init"):
        load_config(tmp_path / "missing.yaml")


def test_init_template_is_a_valid_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET", "NETSUITE_CONSUMER_KEY", "NETSUITE_CONSUMER_SECRET",
                 "NETSUITE_TOKEN_ID", "NETSUITE_TOKEN_SECRET"):
        monkeypatch.setenv(name, "x")
    path = tmp_path / "syncline.yaml"
    path.write_text(TEMPLATE)
    config = load_config(path)
    assert set(config.connections) == {"stripe", "netsuite"}
    assert len(config.routes) == 5
