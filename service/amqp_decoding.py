"""Lenient decoding of AMQP message properties, so that no message can stop a consumer.

RabbitMQ accepts message properties that pamqp, the codec under aiormq and aio-pika,
cannot decode: a short string that is not UTF-8 (`message_id`, `correlation_id`,
`reply_to`, `type`, `app_id`, `content_type`, `content_encoding`, `cluster_id`, or a header
name at any depth) and a timestamp past the year 9999 (the `timestamp` property, or a
`T` field anywhere in the headers). pamqp raises on the content header; aiormq then drops
the whole connection, the broker redelivers the message when the worker reconnects, and
no queue on that connection is served again.

`install()`, called once by the worker's composition root (service/app.py), makes pamqp's
content-header decoding fall back, only when its strict decoding fails, to
`decode_properties` here. That decodes what it can and leaves out what it cannot: such a
property is None, such a header entry is absent. What was left out, with its raw bytes,
is recorded as `Undecodable` under the header `UNDECODABLE`. No producer can forge that
record: a header decoded from the wire is never an `Undecodable`. A property that the
client layer would choke on after decoding is recorded in the same way: a `delivery_mode`
other than 1 or 2 (aio-pika raises) or an `expiration` that is not a number.

The Courier (service/worker/delivery.py) refuses a message with that record as
`bad_request` and dead-letters it with `republishable` headers. Well-formed headers keep
taking pamqp's own path, unchanged. The HTTP gateway consumes nothing, so it needs none of
this.

What is left to the strict path: a content header shorter than its 12 fixed bytes (RabbitMQ
never sends one), and method frames. A `basic.deliver` carries the routing key, which a
producer chooses; one that is not UTF-8 still makes aiormq drop the connection. It can only
reach a work queue through an exchange bound with wildcards (`orders.requeue`,
`orders.retry`), which only the worker may write to (deploy/rabbitmq/definitions.json):
producers write to `orders` alone, with the six routing keys.
"""

from __future__ import annotations

import datetime
import logging
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pamqp import commands, decode, encode
from pamqp.header import ContentHeader

from service.domain.errors import BadRequest

log = logging.getLogger(__name__)

UNDECODABLE = "x-undecodable-properties"
"""The header under which the decoder records what it could not decode."""

BAD_PROPERTIES = "x-bad-properties"
"""On a dead letter: each undecodable property and its raw value, escaped."""

_DECODE_ERRORS = (ValueError, struct.error, OverflowError, OSError, KeyError, IndexError)
"""What decoding a hostile content header can raise (UnicodeDecodeError is a ValueError;
datetime raises ValueError, OverflowError or OSError for a timestamp it cannot hold)."""


@dataclass(frozen=True)
class Problem:
    """One property, or one header entry, that could not be decoded."""

    name: str
    """`message_id`, `timestamp`, `headers`, or a header's path: `headers.a.b`, `headers.a[2]`
    (names escaped: `headers.\\xff`)."""
    raw: bytes | int | str
    reason: str

    def escaped(self) -> str:
        """The raw value as printable text (bytes that are not UTF-8 as `\\xNN`)."""
        if isinstance(self.raw, bytes):
            return _escape(self.raw)[:250]
        return str(self.raw)[:250]


@dataclass(frozen=True)
class Undecodable:
    """What the lenient decoder left out of one message's properties."""

    problems: tuple[Problem, ...]

    def describe(self) -> str:
        """For the error message: `message_id (not UTF-8), timestamp (out of range)`."""
        shown = ", ".join(f"{p.name} ({p.reason})" for p in self.problems[:10])
        more = len(self.problems) - 10
        return shown + (f" and {more} more" if more > 0 else "")

    def escaped(self) -> dict[str, str]:
        """For the dead letter's `x-bad-properties` header: name -> escaped raw value."""
        escaped: dict[str, str] = {}
        for problem in self.problems[:20]:
            escaped.setdefault(problem.name[:128], problem.escaped())
        return escaped

    @property
    def names(self) -> frozenset[str]:
        """The top-level properties concerned (`headers` for any header entry)."""
        return frozenset(p.name.split(".", 1)[0].split("[", 1)[0] for p in self.problems)


def undecodable(headers: Mapping[str, Any] | None) -> Undecodable | None:
    """What could not be decoded in the message with these headers, or None."""
    found = (headers or {}).get(UNDECODABLE)
    return found if isinstance(found, Undecodable) else None


class UndecodableProperties(BadRequest):
    """A message whose properties the client layer could not decode: always dead-lettered
    (with `republishable` headers), also answered when its `reply_to` was decodable."""

    def __init__(self, found: Undecodable) -> None:
        super().__init__(
            f"Message properties cannot be decoded: {found.describe()}",
            {"properties": sorted(found.names)},
        )
        self.found = found


# --- decoding ----------------------------------------------------------------------------


def decode_properties(data: bytes) -> tuple[commands.Basic.Properties, list[Problem]]:
    """The properties of a content header (from the property flags on), decoded leniently:
    never raises; what cannot be decoded is left out and returned as problems."""
    properties = commands.Basic.Properties()
    problems: list[Problem] = []
    try:
        consumed, flags = _flags(data)
        data = data[consumed:]
        for name in properties.__slots__:
            if not flags & properties.flags[name]:
                continue
            data_type = getattr(properties, "_" + name)
            wire_name = "type" if name == "message_type" else name  # pamqp's name for `type`
            consumed, value = _PROPERTY_DECODERS[data_type](data, wire_name, problems)
            setattr(properties, name, value)
            data = data[consumed:]
    except _DECODE_ERRORS as exc:  # a structure that cannot be followed: stop there
        problems.append(Problem("properties", data, f"cannot be decoded: {exc}"[:200]))
    _check_client_limits(properties, problems)
    _record(properties, problems)
    return properties, problems


def _record(properties: commands.Basic.Properties, problems: list[Problem]) -> None:
    """Put the problems where the Courier finds them: the headers are the one property
    that reaches it as decoded (aio-pika copies the rest into its own message)."""
    if problems:
        record: Any = Undecodable(tuple(problems))  # no wire type: never from a producer
        properties.headers = {**(properties.headers or {}), UNDECODABLE: record}


def _flags(data: bytes) -> tuple[int, int]:
    consumed, flags, index = 0, 0, 0
    while True:
        (partial,) = struct.unpack_from(">H", data, consumed)
        consumed += 2
        flags |= partial << (index * 16)
        if not partial & 1:
            return consumed, flags
        index += 1


def _short_string(data: bytes, name: str, problems: list[Problem]) -> tuple[int, str | None]:
    length = data[0]
    raw = _take(data, 1, length)
    try:
        return 1 + length, raw.decode("utf-8")
    except UnicodeDecodeError:
        problems.append(Problem(name, raw, "not UTF-8"))
        return 1 + length, None


def _octet(data: bytes, _: str, __: list[Problem]) -> tuple[int, int]:
    return 1, data[0]


def _timestamp_property(
    data: bytes, name: str, problems: list[Problem]
) -> tuple[int, datetime.datetime | None]:
    (raw,) = struct.unpack_from(">Q", data)
    return 8, _timestamp(raw, name, problems)


def _timestamp(raw: int, name: str, problems: list[Problem]) -> datetime.datetime | None:
    """As pamqp reads it (above 2**32, milliseconds), or None past what datetime holds."""
    try:
        return decode.timestamp(struct.pack(">Q", raw))[1]
    except (ValueError, OverflowError, OSError):
        problems.append(Problem(name, raw, "timestamp out of range"))
        return None


def _table_property(
    data: bytes, name: str, problems: list[Problem]
) -> tuple[int, dict[str, Any] | None]:
    (length,) = struct.unpack_from(">I", data)
    raw = _take(data, 4, length)
    try:
        return 4 + length, _table(raw, name, problems)
    except _DECODE_ERRORS as exc:  # an unknown field type: the rest of the table is lost
        problems.append(Problem(name, raw, f"field table cannot be decoded: {exc}"[:200]))
        return 4 + length, None


def _table(raw: bytes, path: str, problems: list[Problem]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    offset = 0
    while offset < len(raw):
        key_length = raw[offset]
        key_raw = _take(raw, offset + 1, key_length)
        offset += 1 + key_length
        try:
            key: str | None = key_raw.decode("utf-8")
        except UnicodeDecodeError:
            key = None
        entry = f"{path}.{key if key is not None else _escape(key_raw)}"
        if key is None:
            problems.append(Problem(entry, key_raw, "header name not UTF-8"))
        consumed, value = _value(raw[offset:], entry, problems)
        offset += consumed
        if key is not None:
            table[key] = value
    return table


def _array(raw: bytes, path: str, problems: list[Problem]) -> list[Any]:
    values: list[Any] = []
    offset = 0
    while offset < len(raw):
        consumed, value = _value(raw[offset:], f"{path}[{len(values)}]", problems)
        offset += consumed
        values.append(value)
    return values


def _value(data: bytes, path: str, problems: list[Problem]) -> tuple[int, Any]:
    """One tagged field value: nested tables, arrays and timestamps here, the rest by pamqp."""
    tag = data[0:1]
    if tag in (b"F", b"A"):
        (length,) = struct.unpack_from(">I", data, 1)
        raw = _take(data, 5, length)
        nested = _table(raw, path, problems) if tag == b"F" else _array(raw, path, problems)
        return 5 + length, nested
    if tag == b"T":
        (stamp,) = struct.unpack_from(">Q", data, 1)
        return 9, _timestamp(stamp, path, problems)
    consumed, value = decode.TABLE_MAPPING[tag](data[1:])
    return 1 + consumed, value


def _take(data: bytes, start: int, length: int) -> bytes:
    raw = data[start : start + length]
    if len(raw) < length:
        raise ValueError("truncated")
    return raw


def _escape(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


_PROPERTY_DECODERS: dict[str, Callable[[bytes, str, list[Problem]], tuple[int, Any]]] = {
    "shortstr": _short_string,
    "octet": _octet,
    "timestamp": _timestamp_property,
    "table": _table_property,
}


def _check_client_limits(properties: commands.Basic.Properties, problems: list[Problem]) -> None:
    """Values pamqp decodes but aio-pika cannot take: `DeliveryMode(3)` raises, and so does
    `float()` of an expiration that is no number, when it builds the incoming message."""
    if properties.delivery_mode not in (None, 0, 1, 2):
        problems.append(Problem("delivery_mode", properties.delivery_mode, "not 1 or 2"))
        properties.delivery_mode = None
    if properties.expiration is not None:
        try:
            float(properties.expiration)
        except ValueError:
            problems.append(Problem("expiration", properties.expiration, "not a number"))
            properties.expiration = None


# --- installing --------------------------------------------------------------------------

_strict_unmarshal = ContentHeader.unmarshal


def _unmarshal(self: ContentHeader, data: bytes) -> None:
    """pamqp's own decoding; when it fails, the lenient one (the body size is fixed-width
    and always readable, so the frames that follow stay in step)."""
    try:
        _strict_unmarshal(self, data)
    except _DECODE_ERRORS:
        self.class_id, self.weight, self.body_size = struct.unpack_from(">HHQ", data)
        self.properties, problems = decode_properties(data[12:])
        log.debug("content header decoded leniently: %s", Undecodable(tuple(problems)).describe())
        return
    problems = []
    _check_client_limits(self.properties, problems)
    _record(self.properties, problems)


def install() -> None:
    """Make every content header this process receives decode leniently (idempotent)."""
    ContentHeader.unmarshal = _unmarshal  # type: ignore[method-assign]


def installed() -> bool:
    return ContentHeader.unmarshal is _unmarshal


# --- republishing ------------------------------------------------------------------------


def republishable(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Headers that pamqp can encode again, and that fit a frame, for a dead letter or a
    retry: otherwise publishing it would fail (or the broker would close the connection)
    on every redelivery.

    Every value pamqp decodes but cannot encode again (text that is not UTF-8, kept as
    bytes; a double beyond a float's range, which it writes as a float; a decimal mantissa
    of 2**31 or more) is written as text. If the headers take more than `HEADER_BUDGET`
    bytes, the largest are left out and named in `DROPPED_HEADERS`. The decoder's record,
    when there is one, becomes `BAD_PROPERTIES`: name -> raw value, escaped.
    """
    found = undecodable(headers)
    result = {
        key: value if _encodable(value) else _as_text(value)
        for key, value in (headers or {}).items()
        if not (found is not None and key == UNDECODABLE)
    }
    result = _within_budget(result)
    if found is not None:
        result[BAD_PROPERTIES] = found.escaped()
    return result


HEADER_BUDGET = 64 * 1024
"""Bytes of a message's own headers that a dead letter or retry carries. RabbitMQ's
default frame_max is 128 KiB and the content header must fit one frame, with the
service's own headers (x-error-message, x-bad-properties: about 30 KiB at most)."""

DROPPED_HEADERS = "x-dropped-headers"
"""On a dead letter or retry: the headers left out to fit `HEADER_BUDGET`, with sizes."""


def _within_budget(headers: dict[str, Any]) -> dict[str, Any]:
    sizes = {
        key: 1 + min(len(key.encode()), 128) + len(encode.encode_table_value(value))
        for key, value in headers.items()
    }
    total = sum(sizes.values())
    if total <= HEADER_BUDGET:
        return headers
    dropped: list[str] = []
    for key in sorted(sizes, key=lambda k: sizes[k], reverse=True):
        if total <= HEADER_BUDGET - 16 * 1024:  # room for the list of what was dropped
            break
        total -= sizes[key]
        dropped.append(key)
    kept = {key: value for key, value in headers.items() if key not in dropped}
    kept[DROPPED_HEADERS] = [f"{key[:100]} ({sizes[key]} bytes)" for key in dropped[:100]]
    return kept


def _encodable(value: Any) -> bool:
    """Whether pamqp encodes it, as something the broker takes (no NaN or infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if isinstance(value, dict):
        return all(_encodable(item) for item in value.values()) and _encodable_alone(value)
    if isinstance(value, list):
        return all(_encodable(item) for item in value) and _encodable_alone(value)
    return _encodable_alone(value)


def _encodable_alone(value: Any) -> bool:
    try:
        encode.encode_table_value(value)
    except (TypeError, ValueError, struct.error, OverflowError):
        return False
    return True


def _as_text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return _escape(bytes(value))[:1000]
    return repr(value)[:1000]
