"""NetSuite: upsert customers and transactions over the REST record API, plus a local sandbox."""

from syncline.connectors.netsuite.sandbox import NetSuiteSandbox

from syncline.connectors.netsuite.outbound import NetSuiteConnector

__all__ = ["NetSuiteConnector", "NetSuiteSandbox"]
