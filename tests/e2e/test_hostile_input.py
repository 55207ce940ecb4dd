"""Hostile bodies on every routing key: one contract reply each, nothing stored, no stall.

A property-based test: Hypothesis generates batches of hostile bodies (random JSON of any
shape, wrong types for every known field, valid orders with one field made hostile, huge
strings up to ~300 KB, nesting 100-5000 levels deep written as bytes, lone surrogates,
NUL, emoji and RTL text, MongoDB operator objects, keys with ``$`` and ``.``,
regular-expression metacharacters, number tokens no float can hold, non-JSON and invalid
UTF-8) for all six routing keys, at least 2,000 per key. Each batch is sent concurrently
with ``reply_to``; every body must get exactly one reply within 10 s, a contract envelope
whose error code is one of the documented client errors, never ``internal_error``, with
no stack trace or connection string in it. Every tenth body that was refused for what it
is (bad_request, validation_error, unknown_action) is sent again without ``reply_to`` and
must reach ``orders.dead`` with ``x-error-code`` and ``x-error-message``. The ``orders``
collection may only grow by the orders whose placing succeeded, and the two orders placed
first may not change at all: one action in every batch is aimed at them, by ``id`` or
``order_id``, with a body that is certainly invalid.

Hypothesis runs in a worker thread and each batch runs on the session event loop (the
loop the AMQP connection lives on), so the checks after the run can use the fixtures.
Generation is seeded: a failure says ``HOSTILE_INPUT_SEED=<n>``; setting that variable
replays the same bodies. Shrinking is off (every step would be a round of broker
traffic); a failure names the exact body instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import json
import math
import os
import secrets
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import pytest_asyncio
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from .amqp_client import AmqpClient, DeadLetter, DeadLetterReader
from .contract import (
    STATUSES,
    assert_success,
    example_order,
    get_order,
    new_customer_id,
    place,
    simple_order,
)
from .worker import Worker, stop_worker

T = TypeVar("T")

PLACE, ACTION, GET, LIST, STATS, STATUSES_KEY = (
    "orders.place",
    "orders.action",
    "orders.get",
    "orders.list",
    "orders.stats",
    "orders.statuses",
)
ROUTING_KEYS = (PLACE, ACTION, GET, LIST, STATS, STATUSES_KEY)

MIN_BODIES_PER_KEY = 2000
BODIES_PER_KEY_PER_BATCH = 8
BATCHES = math.ceil(MIN_BODIES_PER_KEY / BODIES_PER_KEY_PER_BATCH)
REPLY_TIMEOUT = 10.0
RESEND_EVERY = 10
MAX_BODY_BYTES = 256 * 1024

CLIENT_ERRORS = frozenset(
    {
        "bad_request",
        "validation_error",
        "not_found",
        "invalid_transition",
        "version_conflict",
        "idempotency_conflict",
        "unknown_action",
    }
)
# Refusals that depend only on the body, so a resend without reply_to gets the same one
# (not_found does not: a random id may belong to an order placed in the meantime).
STATELESS_REFUSALS = {
    **dict.fromkeys(ROUTING_KEYS, frozenset({"bad_request", "validation_error"})),
    ACTION: frozenset({"bad_request", "validation_error", "unknown_action"}),
}
LEAKS = ("Traceback", "mongodb://", "amqp://")

ACTIONS = ("update_status", "cancel", "complete", "update_metadata")
ORDER_BY = ("created_at", "updated_at", "total", "order_id", "id", "status", "customer_id")


# --- values ------------------------------------------------------------------------------


def _weighted(*choices: tuple[st.SearchStrategy[T], int]) -> st.SearchStrategy[T]:
    """One of the strategies, in proportion to the weights (``one_of`` drops duplicates)."""
    pool = [strategy for strategy, weight in choices for _ in range(weight)]
    return st.sampled_from(pool).flatmap(_itself)


def _itself(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    return strategy


SPECIAL_TEXT = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff",
    "x\udc80y",
    "\ud83e",
    "🦄",
    "👩\u200d👩\u200d👧\u200d👦",
    "\u202egnp.exe",
    "مرحبا بالعالم",
    "שלום",
    "\ufeff",
    "\u200f\u200e",
    "\x1b[31m",
    "\r\n\t",
    ".*",
    "^$",
    "(",
    ")",
    "[a-z]+",
    "\\",
    "*",
    "(?i)",
    "(a+)+$",
    "$where",
    "$ne",
    "$",
    ".",
    "a.b",
    "null",
    "true",
    "NaN",
    "-Infinity",
    "1e309",
    "-0",
    "0x10",
    "{}",
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "%s%n%x",
    "../../../etc/passwd",
    "pending",
    "CUST-12345",
)
OPERATORS: tuple[dict[str, Any], ...] = (
    {"$ne": None},
    {"$gt": ""},
    {"$gte": 0},
    {"$where": "sleep(1000) || true"},
    {"$where": "function() { return true; }"},
    {"$regex": ".*"},
    {"$regex": "^", "$options": "i"},
    {"$in": []},
    {"$nin": [None]},
    {"$exists": True},
    {"$expr": {"$eq": [1, 1]}},
    {"$function": {"body": "function() { return 1 }", "args": [], "lang": "js"}},
    {"$set": {"status": "completed"}},
    {"$inc": {"version": 1}},
)

characters = st.one_of(
    st.characters(),
    st.characters(categories=["Cs"]),  # lone surrogates: "\ud800" escapes in the JSON text
    st.sampled_from("\x00\x01\x7f\u202e\u202d\u200f\ufeff\U0001f984\U0010ffff$.*+?^()[]{}|\\"),
)
# Lone surrogates make a whole body bad_request, so most text stays valid Unicode and
# gets as far as the field checks.
text = _weighted(
    (st.text(st.characters(), max_size=12), 4),
    (st.text(characters, max_size=12), 1),
    (st.sampled_from(SPECIAL_TEXT), 2),
    (st.from_regex(r"[.*+?^$()\[\]{}|\\a-z0-9 ]{1,12}", fullmatch=True), 2),
)


def _repeat_to_size(unit: str, size: int) -> str:
    """``unit`` repeated to about ``size`` bytes of JSON text (escapes counted)."""
    per_unit = len(json.dumps(unit)) - 2
    return unit * max(1, size // per_unit)


huge_text = st.builds(
    _repeat_to_size,
    st.text(characters, min_size=1, max_size=3),
    st.one_of(st.integers(1_000, 250_000), st.integers(MAX_BODY_BYTES, 300_000)),
)
dollar_or_dot_key = st.one_of(
    st.from_regex(r"\$[a-zA-Z_.]{0,10}", fullmatch=True),
    st.from_regex(r"[a-z]{0,5}\.[a-z.]{0,5}", fullmatch=True),
    st.sampled_from(["$where", "$ne", "$set", "a.b", ".", "$", "..", "$$ROOT"]),
)
# Valid by the contract (no "$" start, no "."), but keys that trip up careless code.
awkward_keys = st.sampled_from(["__proto__", "constructor", "_id", "", " ", "\u0000"])
keys = st.one_of(text, dollar_or_dot_key, awkward_keys)
integers = st.one_of(
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**70),  # past int64
    st.integers(min_value=-(2**70), max_value=-(2**63) + 2),
    st.sampled_from([0, -1, 1, 2**31, 2**53 + 1, 10**6, 999_999_999, 10**40]),
)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
json_leaf = st.one_of(st.none(), st.booleans(), integers, finite_floats, text)
# json.dumps writes these as NaN and Infinity, which are not JSON: a whole body bad_request.
not_json_numbers = st.sampled_from([math.nan, math.inf, -math.inf])
json_values = st.recursive(
    json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=8,
)
operator_objects = st.one_of(
    st.sampled_from(OPERATORS),
    st.dictionaries(dollar_or_dot_key, json_leaf, min_size=1, max_size=2),
)


def _nest(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


nested_values = st.builds(_nest, st.integers(10, 120), json_leaf)
hostile = _weighted(
    (operator_objects, 3),
    (json_leaf, 3),
    (json_values, 3),
    (st.sampled_from(SPECIAL_TEXT), 2),
    (nested_values, 1),
    (st.lists(operator_objects, min_size=1, max_size=2), 1),
    (not_json_numbers, 1),
)


def _field(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a plausible value, often a hostile one."""
    return _weighted((plausible, 5), (hostile, 4))


def _some_of(fields: Mapping[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """An object with any subset of ``fields``, each plausible or hostile."""
    return st.fixed_dictionaries({}, optional={name: _field(s) for name, s in fields.items()})


money = st.one_of(
    st.from_regex(r"-?[0-9]{1,6}(\.[0-9]{1,4})?", fullmatch=True),
    st.decimals(allow_nan=False, allow_infinity=False, places=2).map(str),
    st.integers(-10, 10**13),
    st.floats(min_value=-1e15, max_value=1e15),
    st.sampled_from(["1.005", "NaN", "Infinity", "-0.00", "1e3", "0x10", " 10 ", "1_000"]),
)
ids = st.one_of(integers, st.integers(1, 50))
dates = st.one_of(
    st.dates().map(lambda d: d.isoformat()),
    st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", fullmatch=True),
    st.sampled_from(
        ["2025-13-01", "2025-02-30", "06/11/2025", "2025-11-06T00:00:00Z", "0000-01-01"]
    ),
)
statuses = st.sampled_from((*STATUSES, "shipped", "PENDING", "pending ", "__proto__"))
metadata = st.one_of(
    st.dictionaries(keys, json_values, max_size=4),
    st.dictionaries(dollar_or_dot_key, json_values, min_size=1, max_size=2),
    nested_values,
)
ITEM_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "product_id": st.one_of(ids, text),
    "product_name": text,
    "quantity": st.integers(-5, 20_000),
    "price": money,
    "metadata": metadata,
}
BILLING_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "first_name": text,
    "last_name": text,
    "email": st.one_of(st.emails(), st.from_regex(r"[a-z.]{1,8}@[a-z]{1,8}")),
    "phone": st.from_regex(r"\+?[0-9 ]{0,40}", fullmatch=True),
    "address": text,
    "city": text,
    "postal_code": text,
    "country": text,
}
PLACE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "customer_id": text,
    "items": st.lists(_some_of(ITEM_FIELDS), max_size=3),
    "billing": _some_of(BILLING_FIELDS),
    "total": money,
    "total_tax": money,
    "status": statuses,
    "notes": text,
    "metadata": metadata,
    "user_id": text,
    "currency": st.sampled_from(["EUR", "USD", "JPY", "XXX", "eur", "", "€"]),
    "idempotency_key": text,
}
ACTION_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "action": st.sampled_from((*ACTIONS, "explode", "CANCEL", "cancel ", "__class__", "$set")),
    "status": statuses,
    "notes": text,
    "reason": text,
    "metadata": metadata,
    "mode": st.sampled_from(["merge", "replace", "MERGE", "patch"]),
    "expected_version": ids,
    "request_id": text,
}
FILTER_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "customer_id": text,
    "user_id": text,
    "status": st.one_of(statuses, st.lists(statuses, max_size=3)),
    "active_only": st.booleans(),
    "search": st.one_of(text, st.from_regex(r"[.*+?^$()\[\]{}|\\]{1,8}", fullmatch=True)),
    "date_from": dates,
    "date_to": dates,
}
LIST_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    **FILTER_FIELDS,
    "order_by": st.sampled_from((*ORDER_BY, "password", "_id", "$natural", "outbox")),
    "order_direction": st.sampled_from(["asc", "desc", "ASC", "sideways"]),
    "page": st.one_of(st.integers(-2, 1_000_002), integers),
    "per_page": st.one_of(st.integers(-1, 101), integers),
}


def _object(fields: Mapping[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Some of the known fields (each plausible or hostile), sometimes plus stray keys."""
    stray = st.dictionaries(keys, hostile, max_size=2)
    return st.builds(
        lambda a, b: {**b, **a}, _some_of(fields), _weighted((st.just({}), 3), (stray, 1))
    )


def _replaced(base: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    body = copy.deepcopy(base)
    target: Any = body
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return body


def _near_valid_orders() -> st.SearchStrategy[dict[str, Any]]:
    """A valid PlaceOrder with one field, at any level, plausible or hostile.

    These get past the envelope checks into the deepest validation, and now and then the
    new value is valid: such an order is placed, which the growth check accounts for.
    """
    paths: dict[tuple[str | int, ...], st.SearchStrategy[Any]] = {
        **{(name,): s for name, s in PLACE_FIELDS.items()},
        **{("items", 0, name): s for name, s in ITEM_FIELDS.items()},
        **{("billing", name): s for name, s in BILLING_FIELDS.items()},
    }
    base = simple_order(new_customer_id())
    return st.one_of(
        [
            st.builds(
                functools.partial(_replaced, base, path),
                _weighted((_field(plausible), 9), (huge_text, 1)),
            )
            for path, plausible in paths.items()
        ]
    )


# --- bodies as bytes -----------------------------------------------------------------------


def _json_bytes(value: Any, ascii_only: bool) -> bytes:
    """Lone surrogates: ``"\\ud800"`` escapes when ``ascii_only``, else raw (invalid UTF-8)."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _encoded(values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return st.builds(_json_bytes, values, _weighted((st.just(True), 3), (st.just(False), 1)))


NEST_LEAVES = (b"1", b"null", b'"x"', b'{"$ne":null}', b"[]", b"")


def _deep(depth: int, shape: str, leaf: bytes, field_name: str) -> bytes:
    """Nesting ``depth`` levels deep, written directly as bytes (no encoder recursion)."""
    if shape == "array":
        return b"[" * depth + leaf + b"]" * depth
    if shape == "object":
        return b'{"a":' * depth + leaf + b"}" * depth
    if shape == "mixed":
        return b'{"a":[' * depth + leaf + b"]}" * depth
    if shape == "unclosed":
        return b'{"a":[' * depth + leaf
    inner = b'{"a":' * depth + leaf + b"}" * depth
    return b'{"' + field_name.encode() + b'":' + inner + b"}"


def _deep_bodies(field_names: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    return st.builds(
        _deep,
        st.integers(100, 5000),
        st.sampled_from(["array", "object", "mixed", "unclosed", "field", "field"]),
        st.sampled_from(NEST_LEAVES),
        st.sampled_from(field_names or ("metadata",)),
    )


# A lone byte, a reversed BOM, a broken pair, an encoded surrogate, past U+10FFFF, overlong.
INVALID_UTF8 = (
    b"\xff",
    b"\xfe\xff",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xc0\xaf",
)
invalid_utf8 = st.builds(
    lambda head, bad, tail: head + bad + tail,
    st.sampled_from([b"", b"{", b'{"', b'{"customer_id":"', b'{"search":"', b'{"id":1,"x":"']),
    st.sampled_from(INVALID_UTF8),
    st.sampled_from([b"", b'"}', b"}", b'":1}']),
)


def _truncate(raw: bytes, cut: int) -> bytes:
    return raw[: max(0, len(raw) - 1 - cut % max(1, len(raw)))]


def _duplicate_keys(name: str, first: bytes, second: bytes) -> bytes:
    key = json.dumps(name).encode()
    return b"{" + key + b":" + first + b"," + key + b":" + second + b"}"


def _not_an_object_or_not_json(
    objects: st.SearchStrategy[bytes], field_names: tuple[str, ...]
) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=40),
        invalid_utf8,
        st.text(characters, max_size=20).map(lambda s: s.encode("utf-8", "surrogatepass")),
        _encoded(st.one_of(json_leaf, st.lists(json_values, max_size=3))),
        st.builds(_truncate, objects, st.integers(0, 50)),
        objects.map(lambda raw: b"\xef\xbb\xbf" + raw),  # a byte-order mark in front
        objects.map(lambda raw: raw + b"garbage"),
        st.sampled_from([b"", b" ", b"{", b"}", b"{}{}", b"[]", b"{'a': 1}", b'{"a":1,}']),
        st.builds(
            _duplicate_keys,
            st.sampled_from(field_names or ("id",)),
            _encoded(json_leaf),
            _encoded(operator_objects),
        ),
    )


# JSON number tokens that no float can carry: 30 digits, exponents of up to ten digits.
number_tokens = st.from_regex(
    r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,10})?", fullmatch=True
).map(str.encode)


def _with_member(raw_object: bytes, name: str, token: bytes) -> bytes:
    """``{"name": token, ...rest}``: a member written as raw JSON text into an object."""
    rest = raw_object[1:].lstrip()
    member = json.dumps(name).encode() + b":" + token
    return b"{" + member + (b"" if rest.startswith(b"}") else b",") + rest


def _with_numbers(
    objects: st.SearchStrategy[bytes], number_fields: tuple[str, ...]
) -> st.SearchStrategy[bytes]:
    return st.builds(
        _with_member,
        objects.filter(lambda raw: raw.startswith(b"{")),
        st.sampled_from(number_fields),
        number_tokens,
    )


def _bodies(
    fields: Mapping[str, st.SearchStrategy[Any]],
    number_fields: tuple[str, ...],
    *,
    known_ids: frozenset[int] = frozenset(),
    near_valid: st.SearchStrategy[dict[str, Any]] | None = None,
) -> st.SearchStrategy[bytes]:
    """Everything that can be thrown at one routing key, as the bytes on the wire."""
    structured: st.SearchStrategy[Any] = _object(fields)
    if near_valid is not None:
        structured = _weighted((structured, 1), (near_valid, 1))
    random_object: st.SearchStrategy[Any] = st.dictionaries(keys, json_values, max_size=5)
    if known_ids:  # untargeted actions never name an order that existed before
        structured = structured.filter(lambda body: not _names_known_order(body, known_ids))
        random_object = random_object.filter(lambda body: not _names_known_order(body, known_ids))
    field_names = tuple(fields)
    objects = _encoded(structured)
    huge = st.builds(_with_value, structured, st.sampled_from(field_names or ("x",)), huge_text)
    return _weighted(
        (objects, 20),
        (_encoded(huge), 1),
        (_encoded(random_object), 4),
        (_not_an_object_or_not_json(objects, field_names), 6),
        (_deep_bodies(field_names), 2),
        (_with_numbers(objects, number_fields), 4),
    )


def _with_value(body: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    return {**body, name: value}


def _names_known_order(body: Any, known_ids: frozenset[int]) -> bool:
    if not isinstance(body, dict):
        return False
    return any(
        isinstance(body.get(name), int | float) and body.get(name) in known_ids
        for name in ("id", "order_id")
    )


# --- actions aimed at the orders that existed before ------------------------------------


def _targeted_actions(known: list[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    """An action on a known order whose body is certainly invalid, plus more garbage.

    Certainly invalid by the contract: ``expected_version`` that is no integer,
    ``update_status`` to a status that is an operator object, ``update_metadata`` with a
    ``$``/``.`` key, or an action name that is none of the four.
    """
    not_an_integer = st.one_of(
        operator_objects,
        text,
        st.booleans(),
        st.lists(integers, min_size=1, max_size=2),
        finite_floats.filter(lambda f: not f.is_integer()),
    )
    poison = st.one_of(
        st.fixed_dictionaries(
            {"action": ACTION_FIELDS["action"], "expected_version": not_an_integer}
        ),
        st.fixed_dictionaries({"action": st.just("update_status"), "status": operator_objects}),
        st.fixed_dictionaries(
            {
                "action": st.just("update_metadata"),
                "metadata": st.dictionaries(dollar_or_dot_key, json_values, min_size=1, max_size=2),
            }
        ),
        st.fixed_dictionaries(
            {"action": st.one_of(operator_objects, text.filter(_not_an_action), st.just(None))}
        ),
    )
    others = {name: s for name, s in ACTION_FIELDS.items() if name not in ("action", "metadata")}
    garbage = st.fixed_dictionaries({}, optional=dict.fromkeys(others, hostile))
    target = st.builds(
        lambda order, name: {name: order[name]},
        st.sampled_from(known),
        st.sampled_from(["id", "order_id"]),
    )
    body = st.builds(lambda t, g, p: {**g, **p, **t}, target, garbage, poison)
    return _encoded(body)


def _not_an_action(name: str) -> bool:
    return name.strip() not in ACTIONS


# --- the run -------------------------------------------------------------------------------


class Probe:
    """One body for one routing key (``repr`` stays short for huge bodies)."""

    __slots__ = ("body", "routing_key", "targeted")

    def __init__(self, routing_key: str, body: bytes, *, targeted: bool = False) -> None:
        self.routing_key = routing_key
        self.body = body
        self.targeted = targeted

    def __repr__(self) -> str:
        return (
            f"Probe({self.routing_key}, {len(self.body)} bytes"
            f"{', targeted' if self.targeted else ''}: {_shorten(self.body, 300)})"
        )

    def brief(self) -> str:
        return f"{self.routing_key} {len(self.body)} bytes: {_shorten(self.body, 80)}"


def _shorten(raw: bytes, limit: int) -> str:
    shown = repr(raw)
    return shown if len(shown) <= limit else f"{shown[:limit]}..."


def _batches(known: list[dict[str, Any]]) -> st.SearchStrategy[list[Probe]]:
    known_ids = frozenset(v for order in known for v in (order["id"], order["order_id"]))
    per_key: dict[str, st.SearchStrategy[bytes]] = {
        PLACE: _bodies(
            PLACE_FIELDS,
            ("total", "total_tax", "customer_id", "status"),
            near_valid=_near_valid_orders(),
        ),
        # Untargeted actions never name a known order; raw numbers go elsewhere.
        ACTION: _bodies(
            {"id": ids, "order_id": ids, **ACTION_FIELDS},
            ("expected_version", "action", "status", "notes"),
            known_ids=known_ids,
        ),
        GET: _bodies({"id": ids, "order_id": ids}, ("id", "order_id")),
        LIST: _bodies(LIST_FIELDS, ("page", "per_page", "active_only", "search")),
        STATS: _bodies(FILTER_FIELDS, ("active_only", "customer_id", "status")),
        STATUSES_KEY: _bodies({}, ("x", "status")),
    }
    n = BODIES_PER_KEY_PER_BATCH
    lists = [
        st.lists(strategy.map(functools.partial(Probe, key)), min_size=n, max_size=n)
        for key, strategy in per_key.items()
    ]
    # One action per batch is aimed at an order that existed before.
    targeted = _targeted_actions(known).map(lambda b: Probe(ACTION, b, targeted=True))
    return st.builds(
        lambda groups, aimed: [aimed, *(p for group in groups for p in group)],
        st.tuples(*lists),
        targeted,
    )


@dataclass
class Ledger:
    """What was sent and what the checks after the run still need."""

    with_reply: Counter[str] = field(default_factory=Counter)
    without_reply: Counter[str] = field(default_factory=Counter)
    codes: Counter[tuple[str, str]] = field(default_factory=Counter)
    targeted: int = 0
    oversized: int = 0
    bytes_sent: int = 0
    placed_ids: set[Any] = field(default_factory=set)
    dead_expected: dict[str, tuple[Probe, str]] = field(default_factory=dict)
    sent: int = 0


def _describe(probe: Probe, problem: str, reply: bytes | None = None) -> str:
    shown = "" if reply is None else f"\n    reply: {_shorten(reply, 600)}"
    return f"{problem}\n    body: {probe!r}{shown}"


def _integer(text: str) -> int | Decimal:
    """Echoed input may hold integers longer than ``int()`` parses by default."""
    return int(text) if len(text) <= 4000 else Decimal(text)


def _decode_reply(raw: bytes) -> Any:
    return json.loads(raw, parse_float=Decimal, parse_int=_integer)


def _envelope_problem(reply: Any, raw: bytes) -> str | None:
    """What is wrong with a reply to a hostile body, or None."""
    if not isinstance(reply, dict) or not isinstance(reply.get("success"), bool):
        return "the reply is not an envelope with a bool `success`"
    leaks = [leak for leak in LEAKS if leak.encode() in raw]
    if leaks:
        return f"the reply leaks {leaks}"
    if reply["success"]:
        return None if "data" in reply else "a success without `data`"
    return _error_problem(reply)


def _error_problem(reply: dict[str, Any]) -> str | None:
    error, message = reply.get("error"), reply.get("message")
    code = error.get("code") if isinstance(error, dict) else None
    if code == "internal_error":
        return "internal_error: a hostile body crashed a handler"
    if code not in CLIENT_ERRORS or not isinstance(error, dict):
        return f"`error.code` {code!r} is none of the contract's client errors"
    if not isinstance(message, str) or not message.strip() or 'File "' in message:
        return "`message` is not a human-readable text"
    if code == "validation_error":
        return _details_problem(error.get("details"))
    return None


def _details_problem(details: Any) -> str | None:
    if not isinstance(details, list) or not details:
        return "validation_error `details` is not a non-empty list"
    for detail in details:
        if not (
            isinstance(detail, dict)
            and isinstance(detail.get("loc"), list)
            and isinstance(detail.get("msg"), str)
        ):
            return f"a validation_error detail is not {{loc: list, msg: str}}: {detail!r}"
    return None


async def _ask(client: AmqpClient, probe: Probe) -> tuple[bytes, Any] | str:
    """The raw and decoded reply, or what went wrong."""
    try:
        reply = await client.request_message(probe.routing_key, probe.body, timeout=REPLY_TIMEOUT)
    except TimeoutError:
        return _describe(probe, f"no reply within {REPLY_TIMEOUT}s")
    try:
        return reply.body, _decode_reply(reply.body)
    except ValueError:
        return _describe(probe, "the reply is not JSON", reply.body)


@dataclass
class HostileRun:
    """Sends the batches Hypothesis draws and checks each one; fills the ledger."""

    client: AmqpClient
    orders: AsyncCollection[dict[str, Any]]
    known: list[dict[str, Any]]  # the orders that existed before, as orders.get shows them
    ledger: Ledger

    async def batch(self, probes: list[Probe]) -> None:
        """Send one batch with reply_to, check every reply, resend a sample without it."""
        before = await self.orders.count_documents({})
        answers = await asyncio.gather(*(_ask(self.client, probe) for probe in probes))
        failed: list[tuple[Probe, str]] = []
        resend: list[tuple[Probe, str]] = []
        placed: set[Any] = set()
        for probe, answer in zip(probes, answers, strict=True):
            code, problem = self._check(probe, answer, placed)
            if problem is not None:
                failed.append((probe, problem))
            elif code in STATELESS_REFUSALS[probe.routing_key] and (
                self.ledger.sent % RESEND_EVERY == 0
            ):
                resend.append((probe, code))
        assert not failed, (
            f"{len(failed)} of {len(probes)} bodies in this batch got no good reply "
            "(when all time out, the worker is stuck on one of them):\n"
            + "\n".join(f"  - {probe.brief()}" for probe, _ in failed)
            + "\nfirst:\n"
            + "\n".join(f"  {problem}" for _, problem in failed[:3])
        )

        for probe, code in resend:
            message_id = await self.client.publish(probe.routing_key, probe.body)
            self.ledger.without_reply[probe.routing_key] += 1
            self.ledger.dead_expected[message_id] = (probe, code)

        created = placed - self.ledger.placed_ids
        self.ledger.placed_ids |= placed
        after = await self.orders.count_documents({})
        assert after - before == len(created), (
            f"the orders collection grew by {after - before}, but {len(created)} new "
            f"order(s) were placed in this batch {sorted(created)}; batch: {probes!r}"
        )
        changes = await self.known_changes()
        assert not changes, (
            f"an order that existed before changed: {changes}\n"
            f"  bodies aimed at known orders in this batch: {[p for p in probes if p.targeted]!r}"
        )

    async def known_changes(self) -> list[str]:
        """How the known orders differ from before, as orders.get and the stored version say."""
        changes: list[str] = []
        for before in self.known:
            after = (await self.client.request(GET, {"id": before["id"]})).get("data")
            stored = await self.orders.find_one({"order_id": before["order_id"]})
            version = None if stored is None else stored.get("version")
            if after != before or version != before["version"]:
                changes.append(
                    f"order {before['id']} (stored version {version}): {_changes(before, after)}"
                )
        return changes

    def _check(
        self, probe: Probe, answer: tuple[bytes, Any] | str, placed: set[Any]
    ) -> tuple[str, str | None]:
        """Count the probe; its reply's code ("ok" on success) and what is wrong, if anything."""
        self.ledger.sent += 1
        self.ledger.with_reply[probe.routing_key] += 1
        self.ledger.targeted += probe.targeted
        self.ledger.oversized += len(probe.body) > MAX_BODY_BYTES
        self.ledger.bytes_sent += len(probe.body)
        if isinstance(answer, str):
            return "", answer
        raw, reply = answer
        problem = _envelope_problem(reply, raw)
        if problem is not None:
            return "", _describe(probe, problem, raw)
        code = "ok" if reply["success"] else str(reply["error"]["code"])
        self.ledger.codes[probe.routing_key, code] += 1
        if probe.targeted and code == "ok":
            return code, _describe(probe, "an invalid action on a known order succeeded", raw)
        if len(probe.body) > MAX_BODY_BYTES and code != "bad_request":
            return code, _describe(probe, "a body over 256 KiB is not bad_request", raw)
        if probe.routing_key == PLACE and code == "ok":
            placed.add(reply["data"]["id"])
        return code, None


def _changes(before: dict[str, Any], after: Any) -> str:
    """``field: before -> after`` for every field that differs."""
    if not isinstance(after, dict):
        return f"now {after!r}"
    changed = sorted(
        key for key in before.keys() | after.keys() if before.get(key) != after.get(key)
    )
    return "; ".join(f"{key}: {before.get(key)!r} -> {after.get(key)!r}" for key in changed)


async def _dead_letters_for(
    reader: DeadLetterReader, message_ids: list[str], within: float
) -> dict[str, DeadLetter]:
    """The dead letters with these message ids that arrive within ``within`` seconds in all."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    found: dict[str, DeadLetter] = {}
    for message_id in message_ids:
        try:
            found[message_id] = await reader.wait_for(
                functools.partial(_has_message_id, message_id),
                timeout=max(0.0, deadline - loop.time()),
            )
        except AssertionError:
            continue
    return found


def _has_message_id(message_id: str, letter: DeadLetter) -> bool:
    return letter.message_id == message_id


def _dead_letter_problem(probe: Probe, code: str, letter: DeadLetter | None) -> str | None:
    if letter is None:
        return _describe(probe, f"refused ({code}) without reply_to, but not in orders.dead")
    reason = letter.headers.get("x-error-message")
    if (
        letter.routing_key != probe.routing_key
        or letter.headers.get("x-error-code") != code
        or not isinstance(reason, str)
        or not reason.strip()
        or any(leak in reason for leak in LEAKS)
    ):
        return _describe(probe, f"dead letter for {code}: {letter.routing_key} {letter.headers}")
    return None


def _run_hypothesis(
    loop: asyncio.AbstractEventLoop,
    known: list[dict[str, Any]],
    on_batch: Callable[[list[Probe]], Coroutine[Any, Any, None]],
    generation_seed: int,
) -> None:
    """Hypothesis drives the batches from this (worker) thread; each runs on ``loop``."""

    @seed(generation_seed)
    @settings(
        max_examples=BATCHES,
        database=None,
        derandomize=False,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        verbosity=Verbosity.quiet,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )
    @given(batch=_batches(known))
    def throw(batch: list[Probe]) -> None:
        asyncio.run_coroutine_threadsafe(on_batch(batch), loop).result()

    throw()


@pytest_asyncio.fixture(scope="module", loop_scope="session", autouse=True)
async def _no_poison_left_behind(
    worker_process: Worker, amqp_client: AmqpClient
) -> AsyncIterator[None]:
    """A body the worker can never settle (it requeues it for ever) would haunt the next
    module's worker: once this module's worker has stopped, empty the six work queues."""
    yield
    await asyncio.to_thread(stop_worker, worker_process)
    for name in ROUTING_KEYS:  # the worker's queues are named like their routing keys
        with contextlib.suppress(AMQPError, ChannelInvalidStateError):
            channel = await amqp_client.connection.channel()
            try:
                await (await channel.get_queue(name, ensure=True)).purge()
            finally:
                if not channel.is_closed:
                    await channel.close()


async def test_hostile_bodies_get_contract_errors_and_change_nothing(
    client: AmqpClient, worker: Worker, dead_letters: DeadLetterReader, mongo_url: str
) -> None:
    generation_seed = int(os.environ.get("HOSTILE_INPUT_SEED") or secrets.randbits(32))
    sys.stderr.write(f"hostile input: HOSTILE_INPUT_SEED={generation_seed}\n")
    started = time.monotonic()
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    try:
        ledger = await _throw_everything(client, worker, dead_letters, mongo, generation_seed)
    except BaseException as exc:
        exc.add_note(f"reproduce with HOSTILE_INPUT_SEED={generation_seed}")
        raise
    finally:
        await mongo.close()
    sys.stderr.write(
        f"hostile input: {ledger.sent} bodies with reply_to {dict(ledger.with_reply)}; "
        f"{sum(ledger.without_reply.values())} without {dict(ledger.without_reply)}; "
        f"{ledger.targeted} aimed at known orders; {ledger.oversized} over 256 KiB; "
        f"{ledger.bytes_sent / 2**20:.0f} MiB; "
        f"{len(ledger.placed_ids)} placed; replies {sorted(ledger.codes.items())}; "
        f"{time.monotonic() - started:.1f}s\n"
    )


async def _throw_everything(
    client: AmqpClient,
    worker: Worker,
    dead_letters: DeadLetterReader,
    mongo: AsyncMongoClient[dict[str, Any]],
    generation_seed: int,
) -> Ledger:
    orders = mongo[worker.database]["orders"]
    placed = [await place(client, example_order(new_customer_id())) for _ in range(2)]
    known = [await get_order(client, order["id"]) for order in placed]
    count_before = await orders.count_documents({})
    ledger = Ledger()
    run = HostileRun(client, orders, known, ledger)
    await asyncio.to_thread(
        _run_hypothesis, asyncio.get_running_loop(), known, run.batch, generation_seed
    )

    # Every routing key got its bodies; some were aimed at known orders, some too large.
    for key in ROUTING_KEYS:
        assert ledger.with_reply[key] >= MIN_BODIES_PER_KEY, (key, ledger.with_reply)
        assert ledger.without_reply[key] > 0, (key, ledger.without_reply)
    assert ledger.targeted >= BATCHES, ledger.targeted
    assert ledger.oversized > 0, "no body above 256 KiB was generated"

    # The resends without reply_to are in orders.dead, with the reason in the headers.
    letters = await _dead_letters_for(dead_letters, list(ledger.dead_expected), within=15.0)
    problems = [
        problem
        for message_id, (probe, code) in ledger.dead_expected.items()
        if (problem := _dead_letter_problem(probe, code, letters.get(message_id))) is not None
    ]
    assert not problems, (
        f"{len(problems)} of {len(ledger.dead_expected)} refused bodies sent without "
        "reply_to are not dead-lettered as the contract says; first:\n" + "\n".join(problems[:5])
    )

    # Nothing was stored from a refused body; the known orders did not change.
    assert await orders.count_documents({}) == count_before + len(ledger.placed_ids)
    assert not await run.known_changes()
    assert [order["version"] for order in known] == [1, 1]

    # The worker still answers and is alive; nobody got two replies.
    assert assert_success(await client.request(STATUSES_KEY, {})) == STATUSES
    assert worker.process.poll() is None, worker.log_tail()
    assert not client.duplicate_replies, client.duplicate_replies
    return ledger
