"""A raw AMQP publisher: message properties written byte by byte, as a hostile producer can.

Client libraries refuse to encode much of what the broker accepts: a short string that is
not UTF-8, a timestamp past the year 9999, a header table with field types or names of any
kind. This module writes the content header's property list itself (flags, then each
property as AMQP 0-9-1 encodes it) and sends it through aiormq, with publisher confirms.
Nothing here imports the service.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection
from pamqp import commands as spec

# The property list in wire order, with its flag bit (AMQP 0-9-1, basic class).
PROPERTY_FLAGS = {
    "content_type": 1 << 15,
    "content_encoding": 1 << 14,
    "headers": 1 << 13,
    "delivery_mode": 1 << 12,
    "priority": 1 << 11,
    "correlation_id": 1 << 10,
    "reply_to": 1 << 9,
    "expiration": 1 << 8,
    "message_id": 1 << 7,
    "timestamp": 1 << 6,
    "type": 1 << 5,
    "user_id": 1 << 4,
    "app_id": 1 << 3,
    "cluster_id": 1 << 2,
}
SHORT_STRINGS = frozenset(
    {
        "content_type",
        "content_encoding",
        "correlation_id",
        "reply_to",
        "expiration",
        "message_id",
        "type",
        "user_id",
        "app_id",
        "cluster_id",
    }
)


# --- values -----------------------------------------------------------------------------


def short_string(raw: bytes | str) -> bytes:
    data = raw.encode() if isinstance(raw, str) else raw
    if len(data) > 255:
        raise ValueError("a short string holds at most 255 bytes")
    return bytes([len(data)]) + data


def long_string(raw: bytes | str) -> bytes:
    data = raw.encode() if isinstance(raw, str) else raw
    return struct.pack(">I", len(data)) + data


def octet(value: int) -> bytes:
    return struct.pack(">B", value)


def timestamp(value: int) -> bytes:
    return struct.pack(">Q", value)


def table(entries: Iterable[tuple[bytes | str, bytes]]) -> bytes:
    """A field table from (name, tagged value) pairs, names and values as given."""
    data = b"".join(short_string(name) + value for name, value in entries)
    return struct.pack(">I", len(data)) + data


def array(values: Iterable[bytes]) -> bytes:
    data = b"".join(values)
    return struct.pack(">I", len(data)) + data


@dataclass(frozen=True)
class Tagged:
    """Builders of tagged field values (the type letter, then the value)."""

    @staticmethod
    def boolean(value: bool) -> bytes:
        return b"t" + struct.pack(">B", int(value))

    @staticmethod
    def int8(value: int) -> bytes:
        return b"b" + struct.pack(">b", value)

    @staticmethod
    def uint8(value: int) -> bytes:
        return b"B" + struct.pack(">B", value)

    @staticmethod
    def int16(value: int) -> bytes:
        return b"s" + struct.pack(">h", value)

    @staticmethod
    def uint16(value: int) -> bytes:
        return b"u" + struct.pack(">H", value)

    @staticmethod
    def int32(value: int) -> bytes:
        return b"I" + struct.pack(">i", value)

    @staticmethod
    def uint32(value: int) -> bytes:
        return b"i" + struct.pack(">I", value)

    @staticmethod
    def int64(value: int) -> bytes:
        return b"l" + struct.pack(">q", value)

    @staticmethod
    def float32(value: float) -> bytes:
        return b"f" + struct.pack(">f", value)

    @staticmethod
    def float64(value: float) -> bytes:
        return b"d" + struct.pack(">d", value)

    @staticmethod
    def decimal(scale: int, mantissa: int) -> bytes:
        return b"D" + struct.pack(">BI", scale, mantissa)

    @staticmethod
    def text(raw: bytes | str) -> bytes:
        return b"S" + long_string(raw)

    @staticmethod
    def timestamp(value: int) -> bytes:
        return b"T" + timestamp(value)

    @staticmethod
    def table(entries: Iterable[tuple[bytes | str, bytes]]) -> bytes:
        return b"F" + table(entries)

    @staticmethod
    def array(values: Iterable[bytes]) -> bytes:
        return b"A" + array(values)

    @staticmethod
    def void() -> bytes:
        return b"V"

    @staticmethod
    def byte_array(raw: bytes) -> bytes:
        return b"x" + long_string(raw)


def encode_properties(properties: Mapping[str, bytes]) -> bytes:
    """The property flags and list of a content header; each value already encoded
    (``short_string``, ``octet``, ``timestamp``, ``table``), in any order."""
    unknown = set(properties) - set(PROPERTY_FLAGS)
    if unknown:
        raise ValueError(f"no such properties: {sorted(unknown)}")
    flags = 0
    parts = []
    for name, flag in PROPERTY_FLAGS.items():
        if name in properties:
            flags |= flag
            parts.append(properties[name])
    return struct.pack(">H", flags) + b"".join(parts)


def text_properties(**values: str | bytes) -> dict[str, bytes]:
    """Short-string properties (``message_id=b"\\xff"``) encoded as they are given."""
    return {name: short_string(value) for name, value in values.items()}


# --- publishing -------------------------------------------------------------------------


class _Encoded(spec.Basic.Properties):
    """Basic.Properties whose wire form is given: aiormq marshals it as it is."""

    def __init__(self, encoded: bytes) -> None:
        super().__init__(message_id=uuid.uuid4().hex)  # aiormq's own bookkeeping only
        self.encoded = encoded

    def marshal(self) -> bytes:
        return self.encoded


class RawPublisher:
    """Publishes with raw properties; reports whether the broker took each message."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None

    async def __aenter__(self) -> RawPublisher:
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._connection is not None and not self._connection.is_closed:
            await self._connection.close()

    async def _open_channel(self) -> AbstractChannel:
        if self._connection is None or self._connection.is_closed:
            self._connection = await aiormq.connect(self.url)
            self._channel = None
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(publisher_confirms=True)
        return self._channel

    async def publish(
        self,
        routing_key: str,
        body: bytes,
        properties: Mapping[str, bytes],
        *,
        exchange: str = "orders",
    ) -> bool:
        """True once the broker confirmed the message; False if it refused it. The broker
        refuses by closing the channel, and quotes the bad property in the reason, which
        aiormq may fail to decode and then drops the connection: the next publish opens
        another channel, or another connection."""
        channel = await self._open_channel()
        try:
            confirm = await channel.basic_publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                properties=_Encoded(encode_properties(properties)),
            )
        except aiormq.exceptions.ChannelClosed:
            return False
        except (aiormq.exceptions.AMQPConnectionError, aiormq.exceptions.ProtocolSyntaxError):
            self._channel = None
            return False
        return isinstance(confirm, spec.Basic.Ack)
