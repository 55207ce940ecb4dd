"""The lenient content-header decoder (service/amqp_decoding.py), on raw bytes.

Each property a hostile producer can send, and RabbitMQ accepts, is written byte by byte
(tests/raw_amqp.py); pamqp's strict decoding is shown to fail on it, the lenient one to
leave it out and record it, and aio-pika to build its incoming message from the result.
"""

from __future__ import annotations

import datetime
import struct
from decimal import Decimal
from typing import Any

import pytest
from aio_pika import IncomingMessage
from aiormq.abc import DeliveredMessage
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands, encode, frame
from pamqp.exceptions import UnmarshalingException
from pamqp.header import ContentHeader

from service import amqp_decoding
from service.amqp_decoding import (
    UNDECODABLE,
    Undecodable,
    decode_properties,
    republishable,
    undecodable,
)
from tests.raw_amqp import (
    Tagged,
    encode_properties,
    octet,
    short_string,
    table,
    text_properties,
    timestamp,
)

T = Tagged
BODY_SIZE = 2


def header_frame(properties: dict[str, bytes]) -> bytes:
    """A whole content-header frame on channel 1, as the broker sends it."""
    payload = struct.pack(">HHQ", 60, 0, BODY_SIZE) + encode_properties(properties)
    return struct.pack(">BHI", 2, 1, len(payload)) + payload + b"\xce"


@pytest.fixture
def lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    """`install()` for one test; pamqp's own decoding is put back afterwards."""
    monkeypatch.setattr(ContentHeader, "unmarshal", ContentHeader.unmarshal)
    amqp_decoding.install()
    assert amqp_decoding.installed()


def decoded(properties: dict[str, bytes]) -> tuple[commands.Basic.Properties, Undecodable | None]:
    result, problems = decode_properties(encode_properties(properties))
    found = undecodable(result.headers)
    assert (found is not None) == bool(problems)
    return result, found


def incoming(properties: commands.Basic.Properties) -> IncomingMessage:
    """The message aio-pika builds for a consumer from these properties."""
    delivered = DeliveredMessage(
        delivery=commands.Basic.Deliver("ctag", 1, False, "orders", "orders.place"),
        header=ContentHeader(body_size=BODY_SIZE, properties=properties),
        body=b"{}",
        channel=None,  # type: ignore[arg-type]
    )
    return IncomingMessage(delivered)


POISON: dict[str, tuple[dict[str, bytes], str]] = {
    "timestamp past 9999": ({"timestamp": timestamp(10**15)}, "timestamp"),
    "largest timestamp": ({"timestamp": timestamp(2**64 - 1)}, "timestamp"),
    **{
        f"{name} not UTF-8": (text_properties(**{name: b"x\xff\xfe"}), name)
        for name in (
            "message_id",
            "correlation_id",
            "reply_to",
            "type",
            "app_id",
            "content_type",
            "content_encoding",
            "cluster_id",
        )
    },
    "header name not UTF-8": ({"headers": table([(b"\xc3\x28", T.int8(1))])}, "headers"),
    "nested header name not UTF-8": (
        {"headers": table([(b"a", T.table([(b"\xed\xa0\x80", T.void())]))])},
        "headers",
    ),
    "header timestamp past 9999": ({"headers": table([(b"t", T.timestamp(10**15))])}, "headers"),
    "timestamp in a header array": (
        {"headers": table([(b"a", T.array([T.int8(1), T.timestamp(10**16)]))])},
        "headers",
    ),
}


@pytest.mark.parametrize("case", list(POISON))
def test_pamqp_cannot_decode_what_the_broker_accepts(case: str) -> None:
    properties, _ = POISON[case]
    with pytest.raises(UnmarshalingException):
        frame.unmarshal(header_frame(properties))


@pytest.mark.parametrize("case", list(POISON))
@pytest.mark.usefixtures("lenient")
def test_installed_decoder_reads_the_frame_and_records_the_property(case: str) -> None:
    properties, name = POISON[case]
    consumed, channel, header = frame.unmarshal(header_frame(properties))
    assert isinstance(header, ContentHeader)
    assert (consumed, channel, header.body_size) == (len(header_frame(properties)), 1, 2)
    found = undecodable(header.properties.headers)
    assert found is not None
    assert found.names == {name}
    message = incoming(header.properties)  # aio-pika takes it
    assert undecodable(message.headers) == found


def test_undecodable_short_strings_are_absent_with_their_raw_bytes() -> None:
    result, found = decoded(
        {
            **text_properties(message_id=b"m\xff", reply_to=b"amq.gen-\xc0\xaf", app_id="app"),
            "timestamp": timestamp(10**15),
            "priority": octet(7),
        }
    )
    assert (result.message_id, result.reply_to, result.timestamp) == (None, None, None)
    assert (result.app_id, result.priority) == ("app", 7)
    assert found is not None
    assert found.escaped() == {
        "reply_to": "amq.gen-\\xc0\\xaf",
        "message_id": "m\\xff",
        "timestamp": str(10**15),
    }
    assert found.describe() == (
        "reply_to (not UTF-8), message_id (not UTF-8), timestamp (timestamp out of range)"
    )


def test_a_bad_header_entry_is_left_out_and_the_rest_kept() -> None:
    headers = table(
        [
            ("keep", T.text("yes")),
            (b"\xff", T.int8(1)),
            ("when", T.timestamp(10**15)),
            ("list", T.array([T.int8(1), T.timestamp(10**15), T.text(b"\xff")])),
            ("inner", T.table([("ok", T.boolean(True)), (b"\xfe", T.void())])),
        ]
    )
    result, found = decoded({"headers": headers, **text_properties(message_id="m-1")})
    assert result.message_id == "m-1"
    assert result.headers is not None
    visible = {k: v for k, v in result.headers.items() if k != UNDECODABLE}
    assert visible == {
        "keep": "yes",
        "when": None,
        "list": [1, None, b"\xff"],  # a long string that is not UTF-8 stays bytes, as in pamqp
        "inner": {"ok": True},
    }
    assert found is not None
    assert [p.name for p in found.problems] == [
        "headers.\\xff",
        "headers.when",
        "headers.list[1]",
        "headers.inner.\\xfe",
    ]


def test_a_table_that_cannot_be_followed_costs_the_headers_only() -> None:
    """An unknown field type: the rest of the table cannot be read, the length still skips
    it, and the properties after it are decoded."""
    result, found = decoded(
        {"headers": table([("a", T.int8(1)), ("b", b"Z\x00")]), **text_properties(app_id="a")}
    )
    assert result.app_id == "a"
    assert found is not None
    assert found.names == {"headers"}
    assert set(result.headers or {}) == {UNDECODABLE}


@pytest.mark.parametrize(
    ("properties", "name", "error"),
    [
        ({"delivery_mode": octet(3)}, "delivery_mode", "is not a valid DeliveryMode"),
        (text_properties(expiration="soon"), "expiration", "could not convert"),
    ],
)
def test_values_aio_pika_cannot_take_are_recorded(
    properties: dict[str, bytes], name: str, error: str
) -> None:
    """Decodable, but aio-pika would raise building the message (and never ack it)."""
    strict = commands.Basic.Properties()
    strict.unmarshal(*_flags_and_rest(encode_properties(properties)))
    with pytest.raises(ValueError, match=error):
        incoming(strict)
    result, found = decoded(properties)
    assert found is not None
    assert found.names == {name}
    incoming(result)


@pytest.mark.usefixtures("lenient")
def test_well_formed_properties_take_pamqps_path_unchanged() -> None:
    stamp = datetime.datetime(2025, 11, 6, 12, 0, tzinfo=datetime.UTC)
    properties = commands.Basic.Properties(
        content_type="application/json",
        headers={"x-a": 1, "b": [Decimal("1.5"), "c"], "t": stamp},
        delivery_mode=2,
        priority=5,
        correlation_id="c-1",
        reply_to="amq.gen-1",
        expiration="60000",
        message_id="m-1",
        timestamp=stamp,
        message_type="t",
        app_id="app",
    )
    data = frame.marshal(ContentHeader(0, BODY_SIZE, properties), 1)
    _, _, header = frame.unmarshal(data)
    assert isinstance(header, ContentHeader)
    for name in properties.__slots__:
        assert getattr(header.properties, name) == getattr(properties, name), name
    assert undecodable(header.properties.headers) is None


short_strings = st.one_of(st.binary(max_size=40), st.text(max_size=20).map(str.encode))
field_values = st.recursive(
    st.one_of(
        st.booleans().map(T.boolean),
        st.integers(-(2**63), 2**63 - 1).map(T.int64),
        st.floats(allow_nan=False).map(T.float64),
        st.tuples(st.integers(0, 255), st.integers(0, 2**32 - 1)).map(lambda v: T.decimal(*v)),
        st.binary(max_size=20).map(T.text),
        st.integers(0, 2**64 - 1).map(T.timestamp),
        st.just(T.void()),
        st.binary(max_size=10).map(T.byte_array),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(T.array),
        st.lists(st.tuples(short_strings, inner), max_size=3).map(T.table),
    ),
    max_leaves=10,
)
hostile_properties = st.fixed_dictionaries(
    {},
    optional={
        **{name: short_strings.map(short_string) for name in ("message_id", "reply_to", "type")},
        "headers": st.lists(st.tuples(short_strings, field_values), max_size=5).map(table),
        "timestamp": st.integers(0, 2**64 - 1).map(timestamp),
        "priority": st.integers(0, 255).map(octet),
        "delivery_mode": st.integers(0, 255).map(octet),
    },
)


@settings(max_examples=300, deadline=None)
@given(hostile_properties)
def test_any_property_list_decodes_and_aio_pika_takes_it(properties: dict[str, bytes]) -> None:
    result, found = decoded(properties)
    message = incoming(result)
    if found is None:  # then pamqp agrees with every value
        strict = commands.Basic.Properties()
        strict.unmarshal(*_flags_and_rest(encode_properties(properties)))
        assert {n: getattr(result, n) for n in result.__slots__} == {
            n: getattr(strict, n) for n in strict.__slots__
        }
    # What a dead letter carries can always be encoded again.
    encode.field_table(republishable(message.headers))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_no_bytes_make_the_decoder_raise(data: bytes) -> None:
    decode_properties(data)


def _flags_and_rest(data: bytes) -> tuple[int, bytes]:
    (flags,) = struct.unpack_from(">H", data)
    return flags, data[2:]


def test_republishable_headers_encode_again_and_carry_the_raw_values() -> None:
    found = Undecodable((amqp_decoding.Problem("message_id", b"\xff", "not UTF-8"),))
    headers: dict[str, Any] = {
        "x-bad-properties": "forged by the producer",
        "text": b"\xff\xfe",
        "double": 1e300,
        "decimal": Decimal(2**31),
        "nested": {"ok": 1, "bad": b"\xff"},
        "fine": [1, "two", None],
        UNDECODABLE: found,
    }
    result = republishable(headers)
    assert result == {
        "x-bad-properties": {"message_id": "\\xff"},
        "text": "\\xff\\xfe",
        "double": "1e+300",
        "decimal": "Decimal('2147483648')",
        "nested": "{'ok': 1, 'bad': b'\\xff'}",
        "fine": [1, "two", None],
    }
    encode.field_table(result)


def test_a_producer_cannot_forge_the_record() -> None:
    assert undecodable({UNDECODABLE: "message_id"}) is None
    assert republishable({UNDECODABLE: "x"}) == {UNDECODABLE: "x"}


def test_install_is_idempotent(lenient: None) -> None:
    amqp_decoding.install()
    assert amqp_decoding.installed()
    _, _, header = frame.unmarshal(header_frame({"timestamp": timestamp(10**15)}))
    assert isinstance(header, ContentHeader)
    assert undecodable(header.properties.headers) is not None


def test_republishable_headers_fit_a_frame() -> None:
    """A producer's header table may fill a whole frame; with the service's own headers
    added, it would not fit one, and the broker would close the worker's connection."""
    headers: dict[str, Any] = {f"k{i}": "v" * 1000 for i in range(128)}
    headers |= {"small": 1, "pad": "p" * 1700}
    assert len(encode.field_table(headers)) > 130_000
    result = republishable(headers)
    assert len(encode.field_table(result)) <= amqp_decoding.HEADER_BUDGET
    dropped = result[amqp_decoding.DROPPED_HEADERS]
    assert dropped[0] == "pad (1709 bytes)"  # the largest go first
    assert len(dropped) + len(result) - 1 == len(headers)
    assert result["small"] == 1
    assert republishable({"a": 1}) == {"a": 1}
