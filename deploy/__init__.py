"""Deployment files: the compose stack's RabbitMQ and MongoDB set-up."""
