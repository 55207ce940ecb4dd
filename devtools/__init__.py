"""Developer tooling: embedded MongoDB and local RabbitMQ helpers."""
