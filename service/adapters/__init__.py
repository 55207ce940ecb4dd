"""Adapters between the application and the outside: how domain values read on the wire."""
