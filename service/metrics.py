"""Prometheus metrics: one registry per worker, made in the app factory and passed down.

FastStream's Prometheus middleware counts what goes through the broker (the dead letters
and retries it publishes); `ConsumeMetrics` and `PublishMetrics` keep the same series, with
the same labels, for what the worker consumes and publishes past FastStream (every queue:
service/worker/consumers.py; events and replies: service/worker/publishing.py).
`ServiceMetrics` adds what only the service knows: refusals by error code, dead letters,
messages with undecodable properties, and the outbox backlog. Labels stay bounded whatever
producers send: consumed messages are labelled by the routing key they were first sent with
(a retried one is not a new key), and any routing key that is not one of the service's own
(a producer allowed on the retry exchanges can send `<anything>.orders.place`) by `other`;
replies, which go to each client's own reply queue, by `reply`; properties by their fixed
AMQP names.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Iterable, Iterator

from aio_pika import IncomingMessage
from aio_pika.abc import AbstractIncomingMessage
from faststream.prometheus.container import MetricsContainer
from faststream.prometheus.middleware import PrometheusMiddleware
from faststream.rabbit.prometheus.provider import RabbitMetricsSettingsProvider
from faststream.rabbit.response import RabbitPublishCommand
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.domain.events import COMMAND_REJECTED, METADATA_UPDATED, PLACED, STATUS_CHANGED
from service.topology import ROUTING_KEYS, original_routing_key

PREFIX = "orders"
"""Of every metric name: `orders_received_messages_total`, `orders_errors_total`, ..."""

REPLY = "reply"
"""The publish destination of every reply (the default exchange, to a reply queue)."""

OTHER = "other"
"""The label of every routing key that is not one of the service's own."""

BROKER = "rabbitmq"
"""The `broker` label FastStream's Prometheus middleware gives RabbitMQ's messages."""

KNOWN_KEYS = frozenset((*ROUTING_KEYS, PLACED, STATUS_CHANGED, METADATA_UPDATED, COMMAND_REJECTED))


def routing_key_label(routing_key: str) -> str:
    """One of the service's own routing keys (a retry's prefix taken off), else `other`:
    label values never come from what a producer chose."""
    key = original_routing_key(routing_key)
    return key if key in KNOWN_KEYS else OTHER


class RoutingKeyLabels(RabbitMetricsSettingsProvider):
    """What the broker publishes (dead letters, retries) is labelled `<exchange>.<routing
    key>` with the routing key it was first published with (a retry's prefix taken off), as
    `PublishMetrics` labels the rest."""

    def get_publish_destination_name_from_cmd(self, cmd: RabbitPublishCommand) -> str:
        return f"{cmd.exchange.name}.{routing_key_label(cmd.destination)}"


class ConsumeMetrics:
    """The Prometheus middleware's per-message series (`received_*`, labelled as it labels
    them) for the worker's own consumers (service/worker/consumers.py: every queue), whose
    messages take the path of raw aio-pika deliveries. Each label's series are looked up
    once."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # The middleware's own metrics: a container on the same registry reuses them.
        self._container = MetricsContainer(registry, metrics_prefix=PREFIX, custom_label_names=())
        self._series: dict[str, _HandlerSeries] = {}

    async def consume(self, raw: AbstractIncomingMessage, handle: Awaitable[None]) -> None:
        """Await `handle` (the delivery's processing) and count it as the middleware would:
        received, its size, in process meanwhile, the duration, `acked` or `error` (with
        the exception's type), labelled by the routing key it was first sent with."""
        label = routing_key_label(raw.routing_key or "")
        series = self._series.get(label)
        if series is None:
            series = self._series[label] = _HandlerSeries(self._container, label)
        series.received.inc()
        series.size.observe(len(raw.body))
        series.in_process.inc()
        started = time.perf_counter()
        try:
            await handle
        except Exception as exc:
            series.exceptions.labels(exception_type=type(exc).__name__, **series.labels).inc()
            series.processed.labels(status="error", **series.labels).inc()
            raise
        else:
            series.acked.inc()
        finally:
            series.duration.observe(time.perf_counter() - started)
            series.in_process.dec()


class _HandlerSeries:
    """One handler label's children of the middleware's consume metrics."""

    def __init__(self, container: MetricsContainer, handler: str) -> None:
        self.labels = {"app_name": PREFIX, "broker": BROKER, "handler": handler}
        self.received: Counter = container.received_messages_total.labels(**self.labels)
        self.size: Histogram = container.received_messages_size_bytes.labels(**self.labels)
        self.in_process: Gauge = container.received_messages_in_process.labels(**self.labels)
        self.duration: Histogram = container.received_processed_messages_duration_seconds.labels(
            **self.labels
        )
        self.processed: Counter = container.received_processed_messages_total
        self.acked: Counter = self.processed.labels(status="acked", **self.labels)
        self.exceptions: Counter = container.received_processed_messages_exceptions_total


class PublishMetrics:
    """The Prometheus middleware's `published_*` series (labelled as it labels them) for
    the events and replies the worker publishes past FastStream
    (service/worker/publishing.py): the total by status, the duration and the exceptions.
    Each destination's series are looked up once."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._container = MetricsContainer(registry, metrics_prefix=PREFIX, custom_label_names=())
        self._series: dict[str, tuple[dict[str, str], Counter, Histogram]] = {}

    @contextlib.contextmanager
    def publishing(self, exchange: str, routing_key: str) -> Iterator[None]:
        """Around one publish (with its confirm) to `exchange` with `routing_key` (to the
        default exchange `""`: a reply)."""
        destination = f"{exchange}.{routing_key_label(routing_key)}" if exchange else REPLY
        series = self._series.get(destination)
        if series is None:
            labels = {"app_name": PREFIX, "broker": BROKER, "destination": destination}
            series = self._series[destination] = (
                labels,
                self._container.published_messages_total.labels(status="success", **labels),
                self._container.published_messages_duration_seconds.labels(**labels),
            )
        labels, succeeded, duration = series
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:
            self._container.published_messages_exceptions_total.labels(
                exception_type=type(exc).__name__, **labels
            ).inc()
            self._container.published_messages_total.labels(status="error", **labels).inc()
            raise
        else:
            succeeded.inc()
        finally:
            duration.observe(time.perf_counter() - started)


class ServiceMetrics:
    """The registry, the broker middleware that feeds it, and the service's own metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.middleware = PrometheusMiddleware[IncomingMessage, RabbitPublishCommand](
            settings_provider_factory=lambda _: RoutingKeyLabels(),
            registry=registry,
            app_name=PREFIX,
            metrics_prefix=PREFIX,
        )
        self.intake = ConsumeMetrics(registry)
        self.publishing = PublishMetrics(registry)
        self.errors = Counter(
            "errors",
            "Messages answered or dead-lettered with a contract error, by error code.",
            ["routing_key", "code"],
            namespace=PREFIX,
            registry=registry,
        )
        self.dead_lettered = Counter(
            "dead_lettered",
            "Messages put on the dead-letter exchange, by routing key and error code.",
            ["routing_key", "code"],
            namespace=PREFIX,
            registry=registry,
        )
        self.undecodable_properties = Counter(
            "undecodable_properties",
            "Messages whose AMQP properties the client layer could not decode (refused as "
            "bad_request and dead-lettered), by routing key and property (`headers` for a "
            "header entry).",
            ["routing_key", "property"],
            namespace=PREFIX,
            registry=registry,
        )
        self.partition_actions = Counter(
            "partition_actions",
            "Actions of each action partition that this worker carried through (applied, "
            "refused or dead-lettered): taken from the partition's queue, or, while it is "
            "the only live worker, straight from orders.action.",
            ["partition"],
            namespace=PREFIX,
            registry=registry,
        )
        self.partition_handovers = Counter(
            "partition_handovers",
            "Times this worker handed an action partition to the worker that owns it.",
            ["partition"],
            namespace=PREFIX,
            registry=registry,
        )
        self.action_routing_direct = Gauge(
            "action_routing_direct",
            "1 while this worker's action router applies actions itself (it is the only live "
            "worker, and nothing it forwarded is on its way), 0 while it forwards them to the "
            "partition queues.",
            namespace=PREFIX,
            registry=registry,
        )
        self.outbox_backlog = Gauge(
            "outbox_backlog",
            "Events committed but not yet published (the writes after the events feed's "
            "checkpoint), counted every 2 s.",
            namespace=PREFIX,
            registry=registry,
        )

    def refused(self, routing_key: str, code: str) -> None:
        self.errors.labels(routing_key=routing_key_label(routing_key), code=code).inc()

    def dead_letter(self, routing_key: str, code: str) -> None:
        self.dead_lettered.labels(routing_key=routing_key_label(routing_key), code=code).inc()

    def undecodable(self, routing_key: str, properties: Iterable[str]) -> None:
        for name in properties:
            self.undecodable_properties.labels(routing_key=routing_key, property=name).inc()

    def partition_action(self, partition: int) -> None:
        self.partition_actions.labels(partition=str(partition)).inc()

    def action_routing(self, *, direct: bool) -> None:
        self.action_routing_direct.set(1 if direct else 0)

    def partition_handover(self, partition: int) -> None:
        self.partition_handovers.labels(partition=str(partition)).inc()

    def backlog(self, pending: int) -> None:
        self.outbox_backlog.set(pending)
