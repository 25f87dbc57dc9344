"""The ``flows:`` section of ``syncline.yaml``: which connections play which role, and policies.

Example::

    flows:
      connections: {crm: salesforce, billing: stripe, erp: netsuite, support: zendesk}
      legal_entities:
        - {id: us-inc, countries: [US, CA], currency: USD, payment_terms: net30}
        - {id: de-gmbh, countries: [DE, AT], currency: EUR, erp_connection: netsuite_legacy}
      on_erp_rejection: cancel          # or hold: pause the billing subscription instead
      billing_confirm_seconds: 900      # escalate when billing has not confirmed in 15 minutes
      dunning_grace_seconds: 259200     # downgrade support 3 days after a failed payment

The legal entity decides the ERP connection (cutover routing): an entity without
``erp_connection`` uses ``connections.erp``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from syncline.canonical.objects import EntitlementLevel, Interval


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FlowConnections(_Strict):
    """The connection names the quote-to-cash flows deliver to, by role."""

    crm: str = "crm"
    billing: str = "billing"
    erp: str = "erp"
    support: str = "support"


class LegalEntityPolicy(_Strict):
    """One legal entity of the group: which countries it books, its defaults, its ERP."""

    id: str
    countries: list[str] = Field(default_factory=list)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    payment_terms: str = "net30"
    #: Whether customers of this entity need a tax id (unless tax exempt), e.g. EU VAT ids.
    requires_tax_id: bool = True
    #: Cutover routing: the ERP connection this entity's records go to (default: connections.erp).
    erp_connection: str | None = None


class FlowsSettings(_Strict):
    """Settings and policies of the flow engine and the quote-to-cash flows."""

    #: Built-in flows to run when the process is started from configuration (``syncline run``):
    #: any of ``onboarding``, ``amendment``, ``dunning``. Code passes ``Syncline(flows=[...])`` instead.
    enabled: list[Literal["onboarding", "amendment", "dunning"]] = Field(default_factory=list)
    connections: FlowConnections = Field(default_factory=FlowConnections)
    legal_entities: list[LegalEntityPolicy] = Field(default_factory=list)
    on_erp_rejection: Literal["cancel", "hold"] = "cancel"
    billing_confirm_seconds: float = Field(default=900.0, gt=0)
    dunning_grace_seconds: float = Field(default=3 * 86400.0, gt=0)
    task_due_seconds: float = Field(default=86400.0, gt=0)
    #: Role an overdue task moves to.
    escalate_to: str = "admin"
    #: A deal without lines becomes one line (quantity 1, the deal's amount) billed at this
    #: interval; without it such deals go to a person (``fix_account_data``).
    default_interval: Interval | None = None
    entitlement_level: EntitlementLevel = EntitlementLevel.STANDARD
    downgraded_level: EntitlementLevel = EntitlementLevel.BASIC
    batch_size: int = Field(default=200, ge=1, le=5000)
    poll_seconds: float = Field(default=0.05, gt=0)

    @model_validator(mode="after")
    def _countries_unique(self) -> FlowsSettings:
        seen: dict[str, str] = {}
        for entity in self.legal_entities:
            for country in entity.countries:
                if country in seen:
                    raise ValueError(f"country {country} is mapped to both {seen[country]} and {entity.id}")
                seen[country] = entity.id
        return self

    def entity(self, entity_id: str) -> LegalEntityPolicy | None:
        """Return the legal entity ``entity_id``, if configured."""
        return next((entity for entity in self.legal_entities if entity.id == entity_id), None)

    def entity_for_country(self, country: str | None) -> LegalEntityPolicy | None:
        """Return the legal entity that books customers in ``country``, if one does."""
        if country is None:
            return None
        return next((entity for entity in self.legal_entities if country in entity.countries), None)

    def erp_connection(self, entity: LegalEntityPolicy) -> str:
        """Return the ERP connection ``entity`` routes to (cutover policy)."""
        return entity.erp_connection or self.connections.erp
