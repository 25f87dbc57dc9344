"""Syncline: quote-to-cash integration middleware.

The public surface is small: configuration, the runtime, the connector port and the error
tree. Everything else is reachable through its package (``syncline.canonical``,
``syncline.pipeline``, ``syncline.store``, ``syncline.sandbox``, ``syncline.testing``).
"""

from syncline.config import SynclineConfig, load_config, parse_config
from syncline.connectors.base import Connector, ConnectorRegistry, DeliveryResult, Limits, Operation
from syncline.errors import (
    AuthConfigError,
    BusinessRuleError,
    ConfigError,
    DataQualityError,
    DeliveryError,
    DependencyMissingError,
    ErrorClass,
    RateLimitedError,
    SignatureError,
    SynclineError,
    TransientError,
)
from syncline.runtime import Syncline

__all__ = [
    "AuthConfigError", "BusinessRuleError", "ConfigError", "Connector", "ConnectorRegistry", "DataQualityError",
    "DeliveryError", "DeliveryResult", "DependencyMissingError", "ErrorClass", "Limits", "Operation",
    "RateLimitedError", "SignatureError", "Syncline", "SynclineConfig", "SynclineError", "TransientError",
    "load_config", "parse_config",
]
__version__ = "0.1.0"
