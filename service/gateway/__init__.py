"""The HTTP gateway: the original REST API (`/api/orders/...`) over the same use cases,
store and events feed as the AMQP worker. Run with `python -m service.gateway` (`make http`)."""
