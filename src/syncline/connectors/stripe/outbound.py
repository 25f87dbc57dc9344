"""Stripe outbound operations: none yet.

Writing to Stripe (customers, invoice items, invoices) lands with issue 3; the client, form
encoding and error translation it will use are already in ``client.py`` and ``errors.py``.
"""

from __future__ import annotations

from collections.abc import Mapping

from syncline.connectors.base import Operation

#: Outbound operations by name, as routes refer to them.
OPERATIONS: Mapping[str, Operation] = {}
