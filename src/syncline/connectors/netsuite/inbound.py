"""NetSuite as a source (saved-search polling, SuiteScript webhooks) is out of scope for now.

:class:`~syncline.connectors.netsuite.NetSuiteConnector` inherits the base connector's
inbound methods, which raise a :class:`~syncline.errors.SynclineError` with code
``webhooks_unsupported`` or ``catch_up_unsupported``.
"""
