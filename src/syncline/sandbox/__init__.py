"""Stateful local emulators of vendor APIs, speaking each vendor's wire format.

The emulators themselves live beside their connector (``connectors/<vendor>/sandbox.py``);
this package holds what they share: the threaded server runner and fault injection.
"""

from syncline.sandbox._server import ServerThread, free_port
from syncline.sandbox.faults import Fault, Faults

__all__ = ["Fault", "Faults", "ServerThread", "free_port"]
