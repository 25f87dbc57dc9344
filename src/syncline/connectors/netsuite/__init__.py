"""NetSuite: upsert customers and transactions over the REST record API, plus a local sandbox."""

from syncline.connectors.netsuite.outbound import NetSuiteConnector
from syncline.connectors.netsuite.periods import AccountingPeriod
from syncline.connectors.netsuite.sandbox import NetSuiteSandbox

__all__ = ["AccountingPeriod", "NetSuiteConnector", "NetSuiteSandbox"]
