"""Exact-decimal JSON for vendor wires (NetSuite, Salesforce): money never passes through a float.

``json`` turns a :class:`~decimal.Decimal` into a float (or refuses it); ``Decimal("1234.50")``
must reach the vendor digit for digit, and amounts read back must stay exact.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any


def dumps(value: Any) -> bytes:
    """Encode ``value`` as compact JSON, writing :class:`~decimal.Decimal` as an exact number."""
    return _encode(value).encode()


def _encode(value: Any) -> str:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a JSON number")
        return format(value, "f")
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(k))}:{_encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_encode(item) for item in value) + "]"
    if isinstance(value, float):
        raise TypeError("floats are not written on a vendor's wire; use Decimal")
    return json.dumps(value)


def loads(body: bytes | str) -> Any:
    """Decode JSON keeping decimal numbers exact (as :class:`~decimal.Decimal`)."""
    return json.loads(body, parse_float=Decimal)
