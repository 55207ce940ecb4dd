"""The application layer: the use cases both entry points call, and what they share.

Wire bodies are parsed and mapped to domain commands here, replies and the error envelope
are built here, and storage outages are waited out here; the worker (AMQP) and the gateway
(HTTP) only carry requests in and answers out.
"""
