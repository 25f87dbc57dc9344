"""The optional ``security:`` and ``console:`` sections of ``syncline.yaml``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from syncline.observe.redaction import DEFAULT_PII_FIELDS

__all__ = ["ConsoleConfig", "SecurityConfig"]


class SecurityConfig(BaseModel):
    """Who sees what: PII masking, API rate limits, console sessions."""

    model_config = ConfigDict(extra="forbid")

    #: Field names whose values are masked wherever a payload is shown to a person.
    pii_fields: list[str] = Field(default_factory=lambda: list(DEFAULT_PII_FIELDS))
    #: Requests per minute allowed to one API key unless the key sets its own limit.
    rate_per_minute: int = Field(default=600, ge=1, le=1_000_000)
    #: Console session lifetime.
    session_hours: float = Field(default=8.0, gt=0, le=24 * 30)
    #: Signs console session cookies (``${env:NAME}`` or ``${file:path}``); without it a random key
    #: is made at start-up, so sessions end when the process restarts.
    session_secret: SecretStr | None = None

    @field_validator("session_secret", mode="before")
    @classmethod
    def _reference(cls, value: object) -> object:
        if isinstance(value, str):
            from syncline.config import resolve_secret

            return resolve_secret(value, where="security.session_secret")
        return value


class ConsoleConfig(BaseModel):
    """Business service levels shown on the console home page and exported as metrics."""

    model_config = ConfigDict(extra="forbid")

    #: An invoice not in the ERP this long after it was issued is late.
    invoice_sla_minutes: float = Field(default=60.0, gt=0)
    #: A payment not reflected in the CRM this long after it succeeded is late.
    payment_sla_minutes: float = Field(default=60.0, gt=0)
    #: Vendors that count as the CRM for "payments not reflected in the CRM".
    crm_vendors: list[str] = Field(default_factory=lambda: ["salesforce", "hubspot"])
    #: Vendors that count as the ERP for "invoices not yet in the ERP".
    erp_vendors: list[str] = Field(default_factory=lambda: ["netsuite", "dynamics365", "sap", "oracle_fusion"])
