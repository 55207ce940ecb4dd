"""The one settings class. Built once in the app factory and passed down."""

from __future__ import annotations

import logging
import re
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from orders_vocabulary.broker_url import node_urls
from orders_vocabulary.money import CURRENCY_SYMBOLS

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_ORIGIN = re.compile(r"https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")


class Settings(BaseSettings):
    """Every knob of the worker, read from `ORDERS_*` environment variables."""

    # Errors name the setting and the problem, never the value: some values are secrets.
    model_config = SettingsConfigDict(
        env_prefix="ORDERS_", extra="ignore", hide_input_in_errors=True
    )

    amqp_url: SecretStr = Field(
        default=SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        description="RabbitMQ URL, credentials included; never logged. A cluster's nodes go "
        "in one URL, `amqp://user:password@host1:5672,host2:5672,host3:5672/vhost`: the "
        "first that answers is used, and a lost connection moves to the next.",
    )
    mongo_url: SecretStr = Field(
        default=SecretStr("mongodb://127.0.0.1:27018/?replicaSet=rs0"),
        description="MongoDB URL (a replica set: transactions and change streams need one).",
    )
    mongo_database: str = Field(default="orders", min_length=1)
    cursor_key: SecretStr | None = Field(
        default=None,
        min_length=32,
        description="Key that signs `orders.list` cursors (at least 32 characters); every "
        "worker and gateway on one database must have the same. Unset: a random key created "
        "once in the database (collection `service_keys`) and shared through it.",
    )
    exchange: str = Field(default="orders", description="Commands and queries exchange (topic).")
    events_exchange: str = Field(default="orders.events", description="Events exchange (topic).")
    dead_letter_exchange: str = Field(default="orders.dlx")
    dead_letter_queue: str = Field(default="orders.dead")
    history_stream: str = Field(
        default="orders.events.history",
        min_length=1,
        description="Stream that keeps every event, in publish order, for the retention "
        "below (bound to the events exchange with `#`); consumers read it from any point with "
        "`x-stream-offset` (docs/event-history.md).",
    )
    history_max_age: str = Field(
        default="7D",
        pattern=r"^[1-9][0-9]{0,8}[YMDhms]$",
        description="How long the history stream keeps events, in RabbitMQ's `x-max-age` "
        "form: a number and Y, M, D, h, m or s (`7D`, `36h`). Applies when the stream is "
        "created; an existing stream keeps its own (a policy changes it: docs/event-history.md).",
    )
    history_max_bytes: Annotated[int, Field(ge=1)] = Field(
        default=10_000_000_000,
        description="Most bytes the history stream keeps on each node (`x-max-length-bytes`); "
        "the oldest segments go first. Applies when the stream is created, as above.",
    )
    history_segment_bytes: Annotated[int, Field(ge=1, le=3_000_000_000)] = Field(
        default=100_000_000,
        description="Size of one segment file of the history stream "
        "(`x-stream-max-segment-size-bytes`): retention removes whole segments, never the "
        "one being written. Applies when the stream is created, as above.",
    )
    prefetch: Annotated[int, Field(ge=1, le=10_000)] = 32
    delivery_limit: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=20,
        description="How many times a message may come back to its work queue (a quorum "
        "queue) unacked and be delivered again: each nack with requeue, crash or shutdown "
        "hand-over counts, for every message the worker held (up to `prefetch`); the next "
        "return dead-letters it (`x-first-death-reason: delivery_limit`). Changing it "
        "changes the queues' arguments: `make migrate-queues`.",
    )
    queue_max_length: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="Most messages waiting in one work queue; a publish to a full queue is "
        "refused (a nack to a publisher with confirms), never dropped. Unset: unbounded. "
        "Changing it changes the queues' arguments: `make migrate-queues`.",
    )
    default_currency: str = Field(default="EUR", description="ISO 4217 code of new orders.")
    log_level: str = Field(default="INFO")
    log_json: bool = Field(
        default=False,
        description="Write logs as one JSON object per line instead of plain text.",
    )
    max_message_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024
    max_in_flight_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=1024 * 1024,
        description="Bytes of message bodies worked on at once; a body parses into objects "
        "of 10-50 times its size. Further messages wait (in delivery order) for room.",
    )
    transient_retry_seconds: Annotated[float, Field(gt=0)] = Field(
        default=120.0,
        description="How long a message waits out MongoDB or broker outages before dead-lettering.",
    )
    retry_delays_ms: tuple[Annotated[int, Field(ge=1, le=86_400_000)], ...] = Field(
        default=(1000, 5000, 15000),
        max_length=10,
        description="Delays before the 2nd, 3rd, ... attempt at a message whose handler failed "
        "unexpectedly; after the last one it is dead-lettered. JSON list, e.g. [1000,5000].",
    )
    reply_queue_pattern: str = Field(
        default="",
        max_length=1000,
        description="Regular expression (Python syntax) for named queues that may receive "
        "replies, matched against the whole reply_to, e.g. `replies\\..+`. Server-named "
        "(amq.gen-...) queues and direct reply-to are always allowed; empty (the default) "
        "allows no other queue. Any other reply_to gets no reply and is dead-lettered as "
        "bad_request.",
    )
    action_partitions: Annotated[int, Field(ge=1, le=256)] = Field(
        default=8,
        description="Partition queues that share out `orders.action` among the workers by "
        "order (`orders.action.<n>`); the same on every worker. Change it only with the "
        "action queues empty.",
    )
    membership_seconds: Annotated[float, Field(gt=0, le=60)] = Field(
        default=2.0,
        description="How often a worker renews its entry among the live workers (collection "
        "`workers`); an entry three times this old counts as gone and its partitions move.",
    )
    batch_max_size: Annotated[int, Field(ge=1, le=5000)] = Field(
        default=200, description="Most places handled in one micro-batch."
    )
    batch_wait_ms: Annotated[float, Field(ge=0, le=1000)] = Field(
        default=2.0, description="How long a micro-batch waits for more places to arrive."
    )
    shutdown_seconds: Annotated[float, Field(gt=0)] = Field(
        default=20.0,
        description="How long SIGTERM waits for in-flight messages and unpublished events.",
    )
    http_host: str = Field(
        default="127.0.0.1",
        description="Address of the health and metrics endpoints (0.0.0.0 in a container).",
    )
    http_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=8081,
        description="Port of /health/live, /health/ready and /metrics; 0 serves none of them.",
    )
    api_host: str = Field(
        default="127.0.0.1",
        description="Address of the HTTP gateway (`make http`; 0.0.0.0 in a container).",
    )
    api_port: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=8080, description="Port of the HTTP gateway."
    )
    api_retry_seconds: Annotated[float, Field(gt=0)] = Field(
        default=10.0,
        description="How long an HTTP request waits out a MongoDB outage before it is "
        "answered 503.",
    )
    api_key_hashes: frozenset[str] = Field(
        default=frozenset(),
        description="SHA-256 hex digests of the API keys the HTTP gateway accepts on "
        '/api/orders (JSON list, e.g. ["9f86d0..."]; `make api-key` makes a key and its '
        "digest). Empty: every /api/orders request is answered 401.",
    )
    api_cors_origins: tuple[str, ...] = Field(
        default=(),
        description="Origins a browser may call the HTTP gateway from (CORS), e.g. "
        '["https://shop.example.com"]. Empty: no cross-origin call is allowed.',
    )
    failpoints: frozenset[str] = Field(
        default=frozenset(),
        description="Fault injection for the reliability tests only, e.g. "
        '["crash-before-publish"]: the worker kills itself with SIGKILL at that point; '
        '["fail-handler"]: a handler fails unexpectedly on messages marked for it '
        "(service/failpoints.py).",
    )

    @field_validator("amqp_url")
    @classmethod
    def _broker_url(cls, value: SecretStr) -> SecretStr:
        node_urls(value.get_secret_value())  # its BrokerUrlError never holds the credentials
        return value

    @field_validator("default_currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        code = value.upper()
        if code not in CURRENCY_SYMBOLS:
            raise ValueError(f"unknown currency {value!r}")
        return code

    @field_validator("api_key_hashes")
    @classmethod
    def _sha256_digests(cls, value: frozenset[str]) -> frozenset[str]:
        digests = frozenset(digest.strip().lower() for digest in value)
        for digest in digests:
            if not _SHA256_HEX.fullmatch(digest):
                raise ValueError(
                    "each API key hash is the 64 hex digits of a SHA-256 digest, not the key"
                )
        return digests

    @field_validator("api_cors_origins")
    @classmethod
    def _plain_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an origin: scheme://host[:port], no path, no wildcard"
                )
        return value

    @field_validator("reply_queue_pattern")
    @classmethod
    def _valid_pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in logging.getLevelNamesMapping():
            raise ValueError(f"unknown log level {value!r}")
        return level
