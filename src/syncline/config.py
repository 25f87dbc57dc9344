"""Project configuration: ``syncline.yaml`` validated into typed settings.

Secrets are references, resolved at load time and held as :class:`pydantic.SecretStr`:

* ``${env:NAME}`` — the environment variable NAME;
* ``${file:/path}`` — the content of a file (trailing newline stripped).

A literal secret in the file is refused, so a configuration can be committed safely.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jmespath
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from syncline.errors import ConfigError
from syncline.flows.settings import FlowsSettings
from syncline.ledger.config import LedgerConfig
from syncline.observe.settings import ConsoleConfig, SecurityConfig

_REFERENCE = re.compile(r"^\$\{(env|file):([^}]+)\}$")
_NAME = r"^[a-z][a-z0-9_-]{0,62}$"


def resolve_secret(reference: str, *, where: str) -> SecretStr:
    """Resolve a ``${env:NAME}`` or ``${file:path}`` reference, or raise a ConfigError."""
    match = _REFERENCE.match(reference.strip())
    if not match:
        raise ConfigError(f"{where}: secrets must be ${{env:NAME}} or ${{file:/path}} references, not literals")
    kind, target = match.groups()
    if kind == "env":
        value = os.environ.get(target)
        if value is None:
            raise ConfigError(f"{where}: environment variable {target} is not set")
        return SecretStr(value)
    try:
        return SecretStr(Path(target).read_text().rstrip("\n"))
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read secret file {target}: {exc.strerror}") from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BudgetConfig(_Strict):
    """Overrides of a connection's declared limits: our share of the vendor's allowance."""

    concurrency: int | None = Field(default=None, ge=1, le=1000)
    rate_per_second: float | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, ge=1, le=1000)
    timeout_seconds: float | None = Field(default=None, gt=0, le=600)


class WebhookConfig(_Strict):
    max_body_bytes: int = Field(default=1_048_576, ge=1024)


class ConnectionConfig(_Strict):
    """One connection to one vendor account."""

    vendor: str
    base_url: str = Field(pattern=r"^https?://")
    secrets: dict[str, SecretStr] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    webhook: WebhookConfig = Field(default_factory=WebhookConfig)
    #: Poll the vendor's change feed (``syncline catch-up``) this often, and soon after the
    #: vendor notifies a change without its content (HubSpot webhooks); None = only on demand.
    catch_up_seconds: float | None = Field(default=None, gt=0)


class DeliverAction(_Strict):
    connection: str
    operation: str


class RouteConfig(_Strict):
    """``event`` type (or ``prefix.*``), ``when`` a JMESPath condition holds, deliver."""

    event: str = Field(pattern=r"^[a-z_]+\.([a-z_]+|\*)$")
    when: str | None = None
    deliver: DeliverAction

    @field_validator("when")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                jmespath.compile(value)
            except jmespath.exceptions.ParseError as exc:
                raise ValueError(f"invalid JMESPath condition {value!r}: {exc}") from None
        return value


class RetryConfig(_Strict):
    """Retry schedule: exponential backoff with full jitter, capped; then park."""

    max_attempts: int = Field(default=12, ge=1, le=100)
    base_seconds: float = Field(default=0.5, gt=0)
    cap_seconds: float = Field(default=300.0, gt=0)
    dependency_max_attempts: int = Field(default=20, ge=1)


class PipelineConfig(_Strict):
    batch_size: int = Field(default=500, ge=1, le=10_000)
    lease_seconds: float = Field(default=60.0, gt=0)
    breaker_failures: int = Field(default=20, ge=1)
    breaker_cooldown_seconds: float = Field(default=5.0, gt=0)


class ApiConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)


class SynclineConfig(_Strict):
    """The whole project configuration."""

    store: str | None = None
    connections: dict[str, ConnectionConfig] = Field(default_factory=dict)
    routes: list[RouteConfig] = Field(default_factory=list)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    flows: FlowsSettings = Field(default_factory=FlowsSettings)
    ledger: LedgerConfig | None = None

    @field_validator("connections")
    @classmethod
    def _names(cls, value: dict[str, ConnectionConfig]) -> dict[str, ConnectionConfig]:
        for name in value:
            if not re.match(_NAME, name):
                raise ValueError(f"connection name {name!r} must match {_NAME}")
        return value

    @model_validator(mode="after")
    def _routes_name_connections(self) -> SynclineConfig:
        for index, route in enumerate(self.routes):
            if route.deliver.connection not in self.connections:
                raise ValueError(f"routes[{index}] delivers to unknown connection {route.deliver.connection!r}")
        return self


def _resolve_secrets(raw: Mapping[str, Any]) -> dict[str, Any]:
    resolved = dict(raw)
    connections = resolved.get("connections") or {}
    if not isinstance(connections, Mapping):
        raise ConfigError("connections: must be a mapping of name → connection")
    out: dict[str, Any] = {}
    for name, conn in connections.items():
        if not isinstance(conn, Mapping):
            raise ConfigError(f"connections.{name}: must be a mapping")
        conn = dict(conn)
        secrets = conn.get("secrets") or {}
        if not isinstance(secrets, Mapping):
            raise ConfigError(f"connections.{name}.secrets: must be a mapping")
        conn["secrets"] = {
            key: resolve_secret(str(value), where=f"connections.{name}.secrets.{key}")
            for key, value in secrets.items()
        }
        out[str(name)] = conn
    resolved["connections"] = out
    if isinstance(resolved.get("store"), str) and resolved["store"].startswith("${"):
        resolved["store"] = resolve_secret(resolved["store"], where="store").get_secret_value()
    return resolved


def parse_config(raw: Any) -> SynclineConfig:
    """Validate a parsed YAML document; raise ConfigError with one readable line per problem."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError("syncline.yaml must be a mapping at the top level")
    try:
        return SynclineConfig.model_validate(_resolve_secrets(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{where}: {first['msg']}{more}") from None


def load_config(path: str | Path) -> SynclineConfig:
    """Load and validate ``syncline.yaml`` at ``path``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}; run `syncline init` to create one") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path} is not valid YAML{at}") from None
    return parse_config(raw)
