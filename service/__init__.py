"""The orders worker: commands, queries and events over RabbitMQ, orders in MongoDB."""
