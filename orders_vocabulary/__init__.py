"""The vocabulary the wire contract and the domain share: order statuses and money rules.

Pure Python with no dependencies, so `schemas` (and with it the client) and `service.domain`
both import it without importing each other. It ships in the client's distribution.
"""
