"""The HTTP gateway's request reading (service/gateway/requests.py) and its OpenAPI document;
no services: the app is built but never started."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.types import Message

from orders_vocabulary.statuses import OrderStatus
from schemas.commands import OrderAction, PlaceOrder
from schemas.queries import ListOrders, ListStatuses, OrderStatsQuery
from schemas.replies import ErrorReply, ListReply, OrderReply, StatsReply, StatusesReply
from service.application.parsing import parse
from service.config import Settings
from service.domain.errors import BadRequest, ValidationFailed
from service.gateway import openapi
from service.gateway.app import create_app
from service.gateway.requests import (
    BodyTooLarge,
    NotJson,
    field_kinds,
    query_object,
    read_object,
    require_json,
    with_header,
)

Json = dict[str, Any]
EXAMPLE_ORDER = Path(__file__).parents[2] / "docs" / "example-order.json"
REF = "#/components/schemas/"
ERROR_CODES = {
    400: {"bad_request"},
    401: {"bad_request"},
    413: {"bad_request"},
    415: {"bad_request"},
    404: {"not_found"},
    409: {"invalid_transition", "version_conflict"},
    422: {"validation_error", "unknown_action", "idempotency_conflict"},
    500: {"internal_error"},
    503: {"internal_error"},
}
ACTION_VARIANTS = {"UpdateStatus", "CancelOrder", "CompleteOrder", "UpdateMetadata"}


# -- query_object -----------------------------------------------------------------------------


def test_integers_and_booleans_are_read_as_their_fields_types() -> None:
    body = query_object(
        ListOrders,
        QueryParams("page=2&per_page=007&active_only=TRUE&customer_id=42&search=17"),
    )
    assert body == {
        "page": 2,
        "per_page": 7,
        "active_only": True,
        "customer_id": "42",  # a string field keeps its digits as text
        "search": "17",
    }
    assert query_object(ListOrders, QueryParams("active_only=0")) == {"active_only": False}
    assert query_object(ListOrders, QueryParams("active_only=false")) == {"active_only": False}
    assert query_object(ListOrders, QueryParams("active_only=1")) == {"active_only": True}
    assert query_object(ListOrders, QueryParams("page=-1")) == {"page": -1}
    assert query_object(ListOrders, QueryParams("page=%2B3")) == {"page": 3}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("per_page=abc", {"per_page": "abc"}),
        ("per_page=1.5", {"per_page": "1.5"}),
        ("per_page=", {"per_page": ""}),
        ("per_page=1e3", {"per_page": "1e3"}),
        ("page=" + "9" * 21, {"page": "9" * 21}),
        ("active_only=yes", {"active_only": "yes"}),
        ("active_only=", {"active_only": ""}),
    ],
)
def test_a_value_that_does_not_read_as_its_type_stays_text_and_the_model_names_it(
    query: str, expected: Json
) -> None:
    body = query_object(ListOrders, QueryParams(query))
    assert body == expected
    with pytest.raises(ValidationFailed) as refused:
        parse(ListOrders, body)
    assert [detail["loc"][0] for detail in refused.value.details] == list(expected)


def test_status_is_always_a_list_in_the_order_given() -> None:
    assert query_object(ListOrders, QueryParams("status=pending")) == {"status": ["pending"]}
    body = query_object(ListOrders, QueryParams("status=completed&customer_id=C-1&status=pending"))
    assert body == {"status": ["completed", "pending"], "customer_id": "C-1"}
    query = parse(ListOrders, body)
    assert query.status == [OrderStatus.COMPLETED, OrderStatus.PENDING]
    assert query.customer_id == "C-1"
    stats = parse(OrderStatsQuery, query_object(OrderStatsQuery, QueryParams("status=on_hold")))
    assert stats.status == [OrderStatus.ON_HOLD]


def test_a_repeated_single_valued_parameter_is_refused_not_picked() -> None:
    body = query_object(ListOrders, QueryParams("page=1&page=2&customer_id=a&customer_id=b"))
    assert body == {"page": ["1", "2"], "customer_id": ["a", "b"]}
    with pytest.raises(ValidationFailed) as refused:
        parse(ListOrders, body)
    assert {detail["loc"][0] for detail in refused.value.details} == {"page", "customer_id"}


def test_unknown_parameters_are_kept_so_the_model_refuses_them() -> None:
    body = query_object(ListStatuses, QueryParams("colour=blue&n=3"))
    assert body == {"colour": "blue", "n": "3"}
    with pytest.raises(ValidationFailed) as refused:
        parse(ListStatuses, body)
    assert {detail["loc"][0] for detail in refused.value.details} == {"colour", "n"}
    assert query_object(ListStatuses, QueryParams("")) == {}
    assert parse(ListStatuses, {}) == ListStatuses()


def test_field_kinds_follow_the_models_json_schema() -> None:
    kinds = field_kinds(ListOrders)
    assert set(kinds) == set(ListOrders.model_fields)
    assert kinds["status"] == "array"
    assert kinds["active_only"] == "boolean"
    assert kinds["page"] == kinds["per_page"] == "integer"
    assert kinds["customer_id"] == kinds["search"] == kinds["order_by"] == "string"
    assert set(field_kinds(OrderStatsQuery)) == set(OrderStatsQuery.model_fields)
    assert "page" not in field_kinds(OrderStatsQuery)


# -- with_header ------------------------------------------------------------------------------


def test_without_a_header_the_body_is_unchanged() -> None:
    body: Json = {"action": "complete", "request_id": "from-body"}
    assert with_header(body, "request_id", None) == {
        "action": "complete",
        "request_id": "from-body",
    }


def test_the_header_fills_the_field_without_changing_the_callers_body() -> None:
    body: Json = {"action": "complete"}
    assert with_header(body, "request_id", "k-1") == {"action": "complete", "request_id": "k-1"}
    assert body == {"action": "complete"}
    same: Json = {"customer_id": "C", "idempotency_key": "k-2"}
    assert with_header(same, "idempotency_key", "k-2") == same


def test_a_null_in_the_body_counts_as_absent() -> None:
    body: Json = {"action": "complete", "request_id": None}
    assert with_header(body, "request_id", "k-3") == {"action": "complete", "request_id": "k-3"}


@pytest.mark.parametrize("in_body", ["other", "", 5])
def test_a_header_that_differs_from_the_body_is_a_validation_error(in_body: object) -> None:
    with pytest.raises(ValidationFailed) as refused:
        with_header({"idempotency_key": in_body}, "idempotency_key", "from-header")
    assert refused.value.code == "validation_error"
    assert [detail["loc"] for detail in refused.value.details] == [["idempotency_key"]]
    assert "Idempotency-Key" in refused.value.message


# -- read_object ------------------------------------------------------------------------------


class Body:
    """A request body arriving in chunks; counts how many the reader asked for."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)
        self.received = 0

    async def receive(self) -> Message:
        self.received += 1
        if not self.chunks:
            return {"type": "http.disconnect"}
        chunk = self.chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}

    def request(self, headers: dict[str, str] | None = None) -> Request:
        """A POST of this body, as `application/json` unless `headers` say otherwise."""
        sent = {"content-type": "application/json"} | (headers or {})
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/api/orders/place",
            "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in sent.items()],
        }
        return Request(scope, self.receive)


async def test_the_body_is_read_as_a_json_object_with_exact_decimals() -> None:
    body = Body(b'{"price": 0.1', b'0, "quantity": 3, "items": [1.005]}')
    assert await read_object(body.request(), limit=1024) == {
        "price": Decimal("0.10"),
        "quantity": 3,
        "items": [Decimal("1.005")],
    }


async def test_a_body_of_exactly_the_limit_is_read() -> None:
    raw = b'{"notes": "' + b"x" * 1000 + b'"}'
    assert await read_object(Body(raw).request({"content-length": str(len(raw))}), limit=len(raw))


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    body = Body(b"{}")
    with pytest.raises(BodyTooLarge, match="2000 bytes; the limit is 1024") as refused:
        await read_object(body.request({"content-length": "2000"}), limit=1024)
    assert body.received == 0
    assert (refused.value.code, refused.value.status) == ("bad_request", 413)


async def test_an_undeclared_body_is_read_no_further_than_the_limit() -> None:
    body = Body(b"{" + b" " * 600, b" " * 600, b"}", b"never read")
    with pytest.raises(BodyTooLarge, match="more than 1024 bytes"):
        await read_object(body.request(), limit=1024)
    assert body.received == 2
    assert body.chunks == [b"}", b"never read"]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "APPLICATION/JSON",
        " application/json ",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        'application/json; charset="utf-8"',
        "application/json; charset=utf8",
    ],
)
def test_application_json_with_a_utf8_charset_or_none_is_accepted(content_type: str) -> None:
    require_json(content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        "",
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
        "application/json; charset=utf-16",
        "application/jsonx",
        "application/problem+json",
        "text/json",
        "application/json, text/plain",
    ],
)
async def test_any_other_content_type_is_refused_before_the_body_is_read(
    content_type: str,
) -> None:
    body = Body(b"{}")
    with pytest.raises(NotJson) as refused:
        await read_object(body.request({"content-type": content_type}), limit=1024)
    assert body.received == 0
    assert (refused.value.code, refused.value.status) == ("bad_request", 415)


async def test_without_a_content_type_the_body_is_refused() -> None:
    body = Body(b"{}")
    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"", "headers": []}
    with pytest.raises(NotJson, match="not none"):
        await read_object(Request(scope, body.receive), limit=1024)


@pytest.mark.parametrize(
    "raw", [b"", b"[]", b"null", b'"text"', b"{", b'{"a": "\xff"}', b'{"a": NaN}']
)
async def test_anything_but_a_json_object_is_a_bad_request(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        await read_object(Body(raw).request(), limit=1024)


# -- the OpenAPI document ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def document() -> Json:
    app = create_app(Settings())
    first = app.openapi()
    assert app.openapi() is first  # built once
    return first


def operations(document: Json) -> Iterator[tuple[str, str, Json]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def resolve(document: Json, ref: str) -> Json:
    assert ref.startswith(REF), ref
    schema: Json = document["components"]["schemas"][ref.removeprefix(REF)]
    return schema


def refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref":
                yield item
            else:
                yield from refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from refs(item)


def json_schema(response: Json) -> Json:
    schema: Json = response["content"]["application/json"]["schema"]
    return schema


def test_the_document_has_every_route(document: Json) -> None:
    assert document["openapi"].startswith("3.")
    json.dumps(document)  # serialisable as it is served
    assert {(path, method) for path, method, _ in operations(document)} == {
        ("/api/orders/place", "post"),
        ("/api/orders/{id}", "get"),
        ("/api/orders/{id}/action", "post"),
        ("/api/orders/list", "get"),
        ("/api/orders/stats", "get"),
        ("/api/orders/stats/overview", "get"),
        ("/api/orders/meta/statuses", "get"),
        ("/api/orders/statuses/available", "get"),
    }
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert sorted(ids) == [
        "act_on_order",
        "get_order",
        "list_orders",
        "order_stats",
        "order_stats_overview",
        "order_statuses",
        "order_statuses_available",
        "place_order",
    ]


def test_every_reference_resolves(document: Json) -> None:
    found = set(refs(document))
    assert found
    for ref in found:
        resolve(document, ref)


def test_every_operation_answers_with_a_schema(document: Json) -> None:
    expected = {
        "/api/orders/place": OrderReply,
        "/api/orders/{id}": OrderReply,
        "/api/orders/{id}/action": OrderReply,
        "/api/orders/list": ListReply,
        "/api/orders/stats": StatsReply,
        "/api/orders/stats/overview": StatsReply,
        "/api/orders/meta/statuses": StatusesReply,
        "/api/orders/statuses/available": StatusesReply,
    }
    for path, _, operation in operations(document):
        responses = operation["responses"]
        successes = sorted(code for code in responses if code.startswith("2"))
        assert successes == (["200", "201"] if path.endswith("/place") else ["200"]), path
        for code in successes:
            model = expected[path]
            assert json_schema(responses[code]) == {"$ref": REF + model.__name__}, (path, code)
            assert responses[code]["content"]["application/json"]["example"]["success"] is True


def test_every_operation_documents_its_errors_as_error_replies(document: Json) -> None:
    for path, method, operation in operations(document):
        responses = operation["responses"]
        assert {"401", "422", "500", "503"} <= set(responses), (path, method)
        errors = [code for code in responses if not code.startswith("2")]
        for code in errors:
            assert json_schema(responses[code]) == {"$ref": REF + "ErrorReply"}, (path, code)
            example = responses[code]["content"]["application/json"]["example"]
            assert example["success"] is False
            assert example["error"]["code"] in ERROR_CODES[int(code)], (path, code)
            assert responses[code]["description"]
        assert set(responses["503"]["headers"]) == {"Retry-After"}, (path, method)
        assert set(responses["401"]["headers"]) == {"WWW-Authenticate"}, (path, method)
    schema = resolve(document, REF + "ErrorReply")
    assert {"success", "message", "error"} <= set(schema["properties"])


DECLARED = openapi.ROUTES
MODELS = {
    model.__name__: model
    for model in (OrderReply, ListReply, StatsReply, StatusesReply, ErrorReply)
}


def test_the_reply_examples_are_the_replies_as_sent_nulls_included(document: Json) -> None:
    for (path, method), declared in DECLARED.items():
        responses = document["paths"][path][method]["responses"]
        for code, response in declared["responses"].items():
            example = responses[str(code)]["content"]["application/json"]["example"]
            assert example == response["content"]["application/json"]["example"], (path, code)
            MODELS[json_schema(responses[str(code)])["$ref"].removeprefix(REF)].model_validate(
                example
            )


def test_changes_document_their_http_codes(document: Json) -> None:
    paths = document["paths"]
    assert {"400", "413", "415", "422"} <= set(paths["/api/orders/place"]["post"]["responses"])
    assert {"400", "404", "409", "413", "415", "422"} <= set(
        paths["/api/orders/{id}/action"]["post"]["responses"]
    )
    assert "404" in paths["/api/orders/{id}"]["get"]["responses"]


def test_the_action_body_is_one_of_four_actions_without_the_order(document: Json) -> None:
    body = document["paths"]["/api/orders/{id}/action"]["post"]["requestBody"]
    assert body["required"] is True
    content = body["content"]["application/json"]
    assert content["schema"] == {"$ref": REF + "OrderActionRequest"}
    action = resolve(document, REF + "OrderActionRequest")
    variants = {ref.removeprefix(REF) for ref in (v["$ref"] for v in action["oneOf"])}
    assert variants == ACTION_VARIANTS
    assert action["discriminator"]["propertyName"] == "action"
    assert set(action["discriminator"]["mapping"]) == {
        "update_status",
        "cancel",
        "complete",
        "update_metadata",
    }
    for name in ACTION_VARIANTS:
        schema = resolve(document, REF + name)
        assert {"id", "order_id"}.isdisjoint(schema["properties"]), name
        assert {"id", "order_id"}.isdisjoint(schema.get("required", [])), name
        assert {"action", "expected_version", "request_id"} <= set(schema["properties"]), name
        assert schema.get("additionalProperties") is False, name
        assert "id" not in json.dumps(schema.get("examples", [])), name

    adapter: TypeAdapter[OrderAction] = TypeAdapter(OrderAction)
    assert content["examples"]
    for name, example in content["examples"].items():
        assert {"id", "order_id"}.isdisjoint(example["value"]), name
        adapter.validate_python(example["value"] | {"id": 1})  # what the route sends on


def test_the_place_example_is_the_documented_example_order(document: Json) -> None:
    assert json.loads(EXAMPLE_ORDER.read_text()) == openapi.PLACE_EXAMPLE
    body = document["paths"]["/api/orders/place"]["post"]["requestBody"]
    content = body["content"]["application/json"]
    assert content["schema"] == {"$ref": REF + "PlaceOrder"}
    assert [example["value"] for example in content["examples"].values()] == [openapi.PLACE_EXAMPLE]
    PlaceOrder.model_validate(openapi.PLACE_EXAMPLE)
    place = resolve(document, REF + "PlaceOrder")
    assert {"customer_id", "items", "billing"} <= set(place["required"])
    assert "idempotency_key" in place["properties"]


def test_the_request_bodies_reference_input_schemas_of_their_own(document: Json) -> None:
    """Billing is read and written: the request's schema may not be the reply's."""
    place = resolve(document, REF + "PlaceOrder")
    billing_ref = place["properties"]["billing"]["$ref"]
    billing = resolve(document, billing_ref)
    assert set(billing["required"]) >= {"first_name", "last_name", "email"}
    assert billing.get("additionalProperties") is False


def parameters(document: Json, path: str) -> dict[str, Json]:
    return {p["name"]: p for p in document["paths"][path]["get"].get("parameters", [])}


def test_the_list_parameters_are_the_list_query_with_status_as_an_exploded_array(
    document: Json,
) -> None:
    listed = parameters(document, "/api/orders/list")
    assert set(listed) == set(ListOrders.model_fields)
    assert all(p["in"] == "query" and p["required"] is False for p in listed.values())
    status = listed["status"]
    assert status["schema"]["type"] == "array"
    assert (status["style"], status["explode"]) == ("form", True)
    statuses = resolve(document, status["schema"]["items"]["$ref"])
    assert statuses["enum"] == [str(s) for s in OrderStatus]
    assert listed["per_page"]["schema"]["type"] == "integer"
    assert (listed["per_page"]["schema"]["minimum"], listed["per_page"]["schema"]["maximum"]) == (
        1,
        100,
    )
    assert listed["active_only"]["schema"]["type"] == "boolean"
    for name, parameter in listed.items():
        assert "null" not in json.dumps(parameter["schema"]), name
        if name != "status":
            assert "explode" not in parameter, name


def test_the_stats_and_statuses_parameters_are_their_queries(document: Json) -> None:
    for path in ("/api/orders/stats", "/api/orders/stats/overview"):
        assert set(parameters(document, path)) == set(OrderStatsQuery.model_fields)
        assert parameters(document, path)["status"]["explode"] is True
    for path in ("/api/orders/meta/statuses", "/api/orders/statuses/available"):
        assert parameters(document, path) == {}


def test_the_order_is_named_by_a_positive_integer_path_id(document: Json) -> None:
    for path, method in (("/api/orders/{id}", "get"), ("/api/orders/{id}/action", "post")):
        declared = {p["name"]: p for p in document["paths"][path][method]["parameters"]}
        assert declared["id"]["in"] == "path"
        assert declared["id"]["required"] is True
        assert declared["id"]["schema"]["type"] == "integer"
        assert declared["id"]["schema"]["minimum"] == 1


def test_changes_take_an_idempotency_key_header(document: Json) -> None:
    for path in ("/api/orders/place", "/api/orders/{id}/action"):
        declared = {p["name"]: p for p in document["paths"][path]["post"]["parameters"]}
        key = declared["Idempotency-Key"]
        assert (key["in"], key["required"]) == ("header", False)
        assert key["description"]
