"""The vocabulary the wire contract, the domain and the client share: order statuses, money
rules, and the form of a RabbitMQ URL that names several nodes (`broker_url`).

Pure Python with no dependencies, so `schemas` (and with it the client) and `service.domain`
both import it without importing each other. It ships in the client's distribution.
"""
