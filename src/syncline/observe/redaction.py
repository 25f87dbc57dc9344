"""What operators may see: PII masking of payloads.

Payloads shown by the management API and the console pass through :func:`mask`; configured
field names (matched case-insensitively at any depth) are replaced by :data:`MASK`. When an
operator edits a masked payload and leaves a masked value untouched, :func:`unmask` puts the
stored value back, so editing a tax code never blanks out an e-mail address.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["DEFAULT_PII_FIELDS", "MASK", "mask", "unmask"]

MASK = "•••masked•••"

DEFAULT_PII_FIELDS = ("email", "phone", "address", "line1", "line2", "postal_code", "tax_id", "vat_number",
                      "iban", "card_last4")


def mask(value: Any, fields: frozenset[str] | set[str] | list[str] | tuple[str, ...]) -> Any:
    """Return a copy of a JSON value with every configured field's value replaced by :data:`MASK`."""
    names = {name.lower() for name in fields}
    return _mask(value, names)


def _mask(value: Any, names: set[str]) -> Any:
    if isinstance(value, Mapping):
        return {key: (MASK if str(key).lower() in names and item is not None else _mask(item, names))
                for key, item in value.items()}
    if isinstance(value, list):
        return [_mask(item, names) for item in value]
    return value


def unmask(edited: Any, original: Any) -> Any:
    """Replace values an operator left as :data:`MASK` with the value at the same place in ``original``."""
    if edited == MASK:
        return original
    if isinstance(edited, Mapping):
        source = original if isinstance(original, Mapping) else {}
        return {key: unmask(item, source.get(key)) for key, item in edited.items()}
    if isinstance(edited, list):
        source_list = original if isinstance(original, list) else []
        return [unmask(item, source_list[i] if i < len(source_list) else None) for i, item in enumerate(edited)]
    return edited
