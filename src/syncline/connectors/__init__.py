"""Vendor connectors: one package per vendor, the same file names in each."""
