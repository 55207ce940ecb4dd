"""The committed AsyncAPI document (docs/asyncapi.json) is the one the code generates, and
it is a complete catalogue: every routing key, every field described, with an example."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter

from devtools.catalogue import DOCUMENT, NEUTRAL_AMQP_URL, document, dumps, example, render
from schemas import commands, events, orders, queries, replies
from service.application.parsing import parse, parse_action
from service.worker.asyncapi_docs import AnyEvent, AnyReply

COMMANDS_AND_QUERIES = (
    "orders.place",
    "orders.action",
    "orders.get",
    "orders.list",
    "orders.stats",
    "orders.statuses",
)
EVENTS = (
    "order.placed",
    "order.status_changed",
    "order.metadata_updated",
    "order.command_rejected",
)

Json = dict[str, Any]


@pytest.fixture(scope="module")
def generated() -> Json:
    return document()


@pytest.fixture(scope="module")
def committed() -> Json:
    return json.loads(DOCUMENT.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_committed_document_is_what_the_code_generates(generated: Json) -> None:
    assert DOCUMENT.read_text(encoding="utf-8") == dumps(generated), (
        f"{DOCUMENT} is out of date with the code: run `make docs-gen` and commit it"
    )


def test_document_holds_no_secret_and_no_local_address(committed: Json) -> None:
    text = DOCUMENT.read_text(encoding="utf-8")
    assert "guest" not in text
    assert "127.0.0.1" not in text
    assert "localhost" not in text
    (server,) = committed["servers"].values()
    assert f"{server['protocol']}://{server['host']}{server['pathname']}" == NEUTRAL_AMQP_URL


def _operations(doc: Json, action: str) -> dict[str, tuple[Json, Json]]:
    """channel address -> (operation, channel), for the operations of one action."""
    found = {}
    for operation in doc["operations"].values():
        if operation["action"] == action:
            channel = doc["channels"][operation["channel"]["$ref"].rsplit("/", 1)[-1]]
            found[channel["address"]] = (operation, channel)
    return found


def test_every_command_and_query_is_received_on_its_queue(committed: Json) -> None:
    received = _operations(committed, "receive")
    assert set(received) == set(COMMANDS_AND_QUERIES)
    for routing_key, (operation, channel) in received.items():
        assert channel["bindings"]["amqp"]["queue"]["name"] == routing_key
        assert operation["bindings"]["amqp"]["cc"] == [routing_key]
        # The AMQP binding of a queue channel has no exchange: the description names it.
        assert channel["description"].startswith("Sent to the `orders` exchange (topic)")


def test_every_event_is_sent_to_the_events_exchange(committed: Json) -> None:
    sent = _operations(committed, "send")
    assert set(sent) == {*EVENTS, "<reply_to>", "#"}
    for routing_key in EVENTS:
        exchange = sent[routing_key][1]["bindings"]["amqp"]["exchange"]
        assert (exchange["name"], exchange["type"]) == ("orders.events", "topic")
    assert sent["<reply_to>"][1]["bindings"]["amqp"]["exchange"]["type"] == "default"


def test_the_event_history_stream_is_in_the_document(committed: Json) -> None:
    history = committed["channels"]["orders.events.history"]
    assert history["address"] == "#"  # its binding to the events exchange: every event
    assert history["bindings"]["amqp"]["exchange"]["name"] == "orders.events"
    for words in ("stream", "x-stream-offset", "basic.qos", "event_id", "7D"):
        assert words in history["description"]
    assert _message_payloads(committed)["#"] == "AnyEvent"
    assert "orders.events.history" in committed["info"]["description"]


def _message_payloads(doc: Json) -> dict[str, str]:
    """channel address -> the title of its message's payload schema."""
    payloads = {}
    for channel in doc["channels"].values():
        (ref,) = channel["messages"].values()
        message = doc["components"]["messages"][ref["$ref"].rsplit("/", 1)[-1]]
        payload = message["payload"]
        if "$ref" in payload:
            payload = doc["components"]["schemas"][payload["$ref"].rsplit("/", 1)[-1]]
        payloads[channel["address"]] = payload.get("title", "")
    return payloads


def test_payloads_are_the_wire_models_not_bytes(committed: Json) -> None:
    payloads = _message_payloads(committed)
    assert payloads["orders.place"] == "PlaceOrder"
    assert payloads["orders.action"] == "OrderAction"
    assert payloads["orders.get"] == "GetOrder"
    assert payloads["orders.list"] == "ListOrders"
    assert payloads["orders.stats"] == "OrderStatsQuery"
    assert payloads["orders.statuses"] == "ListStatuses"
    assert payloads["order.placed"] == "OrderPlaced"
    assert payloads["order.status_changed"] == "OrderStatusChanged"
    assert payloads["order.metadata_updated"] == "OrderMetadataUpdated"
    assert payloads["order.command_rejected"] == "OrderCommandRejected"
    assert "binary" not in DOCUMENT.read_text(encoding="utf-8")
    assert payloads["<reply_to>"] == "AnyReply"
    schemas_ = committed["components"]["schemas"]
    for reply in ("Reply", "ListReply", "StatsReply", "ErrorReply", "StatsView"):
        assert reply in schemas_


def _properties(schema: Json, where: str) -> Iterator[tuple[str, Json]]:
    for name, prop in schema.get("properties", {}).items():
        yield f"{where}.{name}", prop


def test_every_field_in_the_document_has_a_description_and_an_example(committed: Json) -> None:
    schemas_ = committed["components"]["schemas"]
    fields = [p for name, s in schemas_.items() for p in _properties(s, name)]
    assert len(fields) > 100
    missing = [
        where for where, prop in fields if not prop.get("description") or not prop.get("examples")
    ]
    assert missing == []


def _models() -> list[type[BaseModel]]:
    """Every pydantic model defined in schemas/."""
    modules = (commands, queries, orders, events, replies)
    return [
        model
        for module in modules
        for model in vars(module).values()
        if isinstance(model, type)
        and issubclass(model, BaseModel)
        and model.__module__ == module.__name__
    ]


@pytest.mark.parametrize("model", _models(), ids=lambda m: m.__name__)
def test_every_field_of_every_wire_model_has_a_description_and_an_example(
    model: type[BaseModel],
) -> None:
    missing = [
        name
        for name, field in model.model_fields.items()
        if not field.description or not field.examples
    ]
    assert missing == []


def test_every_channel_and_message_is_described(committed: Json) -> None:
    for name, channel in committed["channels"].items():
        assert channel.get("description"), name
    for name, message in committed["components"]["messages"].items():
        assert message["payload"], name


def _parsers() -> dict[str, Callable[[dict[str, Any]], object]]:
    """How each message is read: commands and queries through the worker's own parsing."""
    return {
        "orders.place": lambda body: parse(commands.PlaceOrder, body),
        "orders.action": parse_action,
        "orders.get": lambda body: parse(queries.GetOrder, body),
        "orders.list": lambda body: parse(queries.ListOrders, body),
        "orders.stats": lambda body: parse(queries.OrderStatsQuery, body),
        "orders.statuses": lambda body: parse(queries.ListStatuses, body),
        "order.placed": events.OrderPlaced.model_validate,
        "order.status_changed": events.OrderStatusChanged.model_validate,
        "order.metadata_updated": events.OrderMetadataUpdated.model_validate,
        "order.command_rejected": events.OrderCommandRejected.model_validate,
        "<reply_to>": TypeAdapter(AnyReply).validate_python,
        "#": TypeAdapter(AnyEvent).validate_python,
    }


def test_every_message_example_is_a_valid_message(committed: Json) -> None:
    """The example the page shows for each message passes the parsing it would meet."""
    parsers = _parsers()
    for channel in committed["channels"].values():
        (ref,) = channel["messages"].values()
        message = committed["components"]["messages"][ref["$ref"].rsplit("/", 1)[-1]]
        body = example(committed, message["payload"])
        parsers[channel["address"]](body)


def test_the_page_shows_every_routing_key_and_field(committed: Json) -> None:
    page = render(committed)
    for routing_key in (*COMMANDS_AND_QUERIES, *EVENTS):
        assert f"<code>{routing_key}</code></h3>" in page
    for schema in committed["components"]["schemas"]:
        assert f'id="schema-{schema}"' in page
    assert "<script" not in page  # nothing to run and nothing to fetch: it works offline
    assert "<link" not in page
    assert "src=" not in page
