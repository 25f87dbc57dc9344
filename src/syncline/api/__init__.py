"""HTTP API: webhooks, health, metrics (management API grows here under /v1)."""

from syncline.api.app import create_app

__all__ = ["create_app"]
