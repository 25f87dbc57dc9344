"""Salesforce: upsert CRM records by external id, take change events and Outbound Messages in; plus a sandbox.

>>> connector = SalesforceConnector(ConnectionSettings(   # doctest: +SKIP
...     name="crm", vendor="salesforce", base_url="https://acme.my.salesforce.com",
...     secrets={"client_id": SecretStr("3MVG9..."), "client_secret": SecretStr("..."),
...              "webhook_secret": SecretStr("...")},
...     options={"organization_id": "00D5g000004Ej6JEAS"}))
"""

from syncline.connectors.salesforce.outbound import SalesforceConnector
from syncline.connectors.salesforce.sandbox import SalesforceSandbox

__all__ = ["SalesforceConnector", "SalesforceSandbox"]
