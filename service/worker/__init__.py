"""The worker's AMQP entry point: its consumers hand each message to the courier, which
runs its use case and delivers the outcome. Thin."""
