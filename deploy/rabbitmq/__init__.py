"""RabbitMQ definitions and their rendering with the password hashes."""
