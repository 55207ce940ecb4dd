"""The OpenAPI document of the HTTP gateway: each route's parameters, body, replies and
examples, taken from the same pydantic models that validate the requests.

The routes read their bodies and query strings themselves (service/gateway/requests.py), so
FastAPI cannot see those models: they are declared here, in each route's `openapi_extra`,
and their schemas are added to the document's components by `document`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from orders_vocabulary.statuses import OrderStatus
from schemas.commands import OrderAction, PlaceOrder
from schemas.orders import ORDER_EXAMPLE
from schemas.queries import ListOrders, ListStatuses, OrderStatsQuery
from schemas.replies import (
    STATS_EXAMPLE,
    ErrorReply,
    ListReply,
    OrderReply,
    StatsReply,
    StatusesReply,
)

DESCRIPTION = (
    "The orders service over HTTP: the same use cases, store, envelopes and events as its "
    "AMQP interface (docs/asyncapi.json). Every `/api/orders` route needs an API key, sent "
    "as `Authorization: Bearer <key>` or `X-API-Key: <key>` (401 otherwise). Bodies are UTF-8 "
    "JSON objects of at most 256 KiB, sent as `Content-Type: application/json`; amounts are "
    'exact decimals (send `150.00` or `"150.00"`, never more than two decimals). Every reply '
    "is the envelope `{success, message?, data | error}`; errors carry the contract's code: "
    "400 bad_request (also 401 no or unknown API key, 413 body too large, 415 not JSON), 404 "
    "not_found, 409 invalid_transition and version_conflict, 422 validation_error, "
    "unknown_action and idempotency_conflict, 500 internal_error, 503 while MongoDB is "
    "unreachable (retry; the same "
    "`Idempotency-Key` makes a retry safe). Changes publish the same events (`order.placed`, "
    "`order.status_changed`, `order.metadata_updated`) on the `orders.events` exchange. "
    "`X-Correlation-ID` is echoed and carried by the events."
)

REF = "#/components/schemas/{model}"

PLACE_EXAMPLE: dict[str, Any] = {
    "customer_id": "CUST-12345",
    "items": [
        {
            "product_id": 1,
            "product_name": "Premium Cleaning Service",
            "quantity": 1,
            "price": 150.00,
            "metadata": {"filter_options": [1, 2, 3]},
        },
        {"product_id": 2, "product_name": "Window Cleaning", "quantity": 2, "price": 75.00},
    ],
    "billing": {
        "first_name": "John",
        "last_name": "Doe",
        "email": "john.doe@example.com",
        "phone": "+31612345678",
        "address": "123 Main Street",
        "city": "Amsterdam",
        "postal_code": "1012AB",
        "country": "NL",
    },
    "notes": "Please call before arrival",
    "metadata": {"source": "webform", "campaign_id": "SUMMER2025"},
}
"""The documented example order (../shared/ORIGINAL_API.txt; docs/example-order.json)."""

ACTION_EXAMPLES: dict[str, dict[str, Any]] = {
    "update_status": {
        "action": "update_status",
        "status": "in_progress",
        "notes": "Work has started",
    },
    "complete": {"action": "complete", "notes": "Order delivered successfully"},
    "cancel": {"action": "cancel", "reason": "Customer request"},
    "update_metadata": {"action": "update_metadata", "metadata": {"priority": "high"}},
    "expected_version": {"action": "update_status", "status": "confirmed", "expected_version": 2},
}

PLACED_EXAMPLE = {"success": True, "message": "Order placed successfully", "data": ORDER_EXAMPLE}
ERROR_EXAMPLES: dict[int, dict[str, Any]] = {
    400: {"code": "bad_request", "message": "Message body is not valid JSON", "details": None},
    401: {"code": "bad_request", "message": "Invalid API key", "details": None},
    404: {"code": "not_found", "message": "Order with id 999 not found", "details": {"id": 999}},
    409: {
        "code": "invalid_transition",
        "message": "Cannot change status from completed to pending",
        "details": {"from": "completed", "to": "pending", "allowed": ["refunded"]},
    },
    413: {
        "code": "bad_request",
        "message": "Request body is 300000 bytes; the limit is 262144",
        "details": None,
    },
    415: {
        "code": "bad_request",
        "message": "Content-Type must be application/json, not text/plain",
        "details": None,
    },
    422: {
        "code": "validation_error",
        "message": "Invalid items: Field required",
        "details": [{"loc": ["items"], "msg": "Field required"}],
    },
    500: {"code": "internal_error", "message": "Internal error", "details": None},
    503: {
        "code": "internal_error",
        "message": "Storage unavailable; try again (with the same Idempotency-Key to be safe)",
        "details": None,
    },
}
ERROR_MEANING = {
    400: "bad_request: the body is not a JSON object, or not UTF-8.",
    401: "bad_request: no API key, or not one of the gateway's (`WWW-Authenticate` says "
    "how to send one).",
    413: "bad_request: the body is larger than 256 KiB.",
    415: "bad_request: the body is not sent as `Content-Type: application/json`.",
    404: "not_found: no order with this id.",
    409: "invalid_transition (the table does not allow it) or version_conflict "
    "(expected_version is not the order's).",
    422: "validation_error (details: [{loc, msg}]), unknown_action, or idempotency_conflict "
    "(details: key; the key was used before with a different body, nothing changed).",
    500: "internal_error: nothing internal is shown.",
    503: "MongoDB is unreachable: retry after Retry-After seconds; with the same "
    "Idempotency-Key a retry cannot apply the request twice.",
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {
            "model": ErrorReply,
            "description": ERROR_MEANING[status],
            "content": {
                "application/json": {
                    "example": {
                        "success": False,
                        "message": ERROR_EXAMPLES[status]["message"],
                        "error": {
                            "code": ERROR_EXAMPLES[status]["code"],
                            "details": ERROR_EXAMPLES[status]["details"],
                        },
                    }
                }
            },
        }
        | ({"headers": HEADERS[status]} if status in HEADERS else {})
        for status in (401, *statuses, 500, 503)
    }


HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": 'The challenge: `Bearer realm="orders"`, with '
            '`error="invalid_token"` when the key sent is not accepted.',
            "schema": {"type": "string"},
        }
    },
    503: {
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "schema": {"type": "integer", "minimum": 0},
        }
    },
}


def _ok(model: type[BaseModel], description: str, example: Any) -> dict[str, Any]:
    return {
        "model": model,
        "description": description,
        "content": {"application/json": {"example": example}},
    }


def _body(model: str, examples: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": REF.format(model=model)},
                    "examples": {name: {"value": value} for name, value in examples.items()},
                }
            },
        }
    }


def _query(model: type[BaseModel]) -> dict[str, Any]:
    """The query parameters of `model`: each field, with its schema without `null`."""
    schema = model.model_json_schema(ref_template=REF)
    parameters = []
    for name, declared in schema["properties"].items():
        field = dict(declared)
        variants = [v for v in field.pop("anyOf", [field]) if v.get("type") != "null"]
        description = field.pop("description", None)
        examples = field.pop("examples", None)
        field.pop("title", None)
        if field.get("default") is None:
            field.pop("default", None)
        shape = variants[0] if len(variants) == 1 else {"anyOf": variants}
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": False,
            "schema": {**shape, **field},
        }
        if shape.get("type") == "array":
            parameter |= {"style": "form", "explode": True}
        if description:
            parameter["description"] = description
        if examples:
            parameter["example"] = examples[0]
        parameters.append(parameter)
    return {"parameters": parameters}


STATUSES_EXAMPLE = {"success": True, "data": [str(status) for status in OrderStatus]}

PLACE: dict[str, Any] = {
    "operation_id": "place_order",
    "summary": "Place a new order",
    "description": "Creates the order (status pending unless `status` is given) and "
    "publishes `order.placed`. `total` defaults to the items' sum plus `total_tax`. With an "
    "`Idempotency-Key` header (or `idempotency_key` in the body), placing the same body "
    "again returns the first order with 200 and creates nothing; another body with that key "
    "is an idempotency_conflict (422) and creates nothing.",
    "status_code": 201,
    "response_model": None,
    "responses": {
        201: _ok(OrderReply, "Placed: the new order.", PLACED_EXAMPLE),
        200: _ok(
            OrderReply,
            "Already placed with this key: the first order.",
            PLACED_EXAMPLE | {"message": "Order already placed"},
        ),
        **_errors(400, 413, 415, 422),
    },
    "openapi_extra": _body("PlaceOrder", {"example_order": PLACE_EXAMPLE}),
}
GET: dict[str, Any] = {
    "operation_id": "get_order",
    "summary": "Retrieve an order by its database id",
    "response_model": None,
    "responses": {
        200: _ok(OrderReply, "The order.", {"success": True, "data": ORDER_EXAMPLE}),
        **_errors(404, 422),
    },
}
ACTION: dict[str, Any] = {
    "operation_id": "act_on_order",
    "summary": "Act on an order: update_status, cancel, complete or update_metadata",
    "description": "One action per request, checked against the transition table and applied "
    "atomically; a status change publishes `order.status_changed`, a metadata update "
    "`order.metadata_updated`. `expected_version` refuses the action unless the order is at "
    "that version (409). With an `Idempotency-Key` header (or `request_id`), the same action "
    "sent again is applied once (200, the order as stored); another action with that key is "
    "an idempotency_conflict (422).",
    "response_model": None,
    "responses": {
        200: _ok(
            OrderReply,
            "Applied: the order after the action.",
            {
                "success": True,
                "message": "Action update_status applied",
                "data": ORDER_EXAMPLE | {"status": "in_progress", "version": 2},
            },
        ),
        **_errors(400, 404, 409, 413, 415, 422),
    },
    "openapi_extra": _body("OrderActionRequest", ACTION_EXAMPLES),
}
LIST: dict[str, Any] = {
    "operation_id": "list_orders",
    "summary": "List orders with filters and pagination",
    "description": "`status` may repeat (`status=pending&status=on_hold`). `search` is a "
    "literal, case-insensitive substring. Page mode (`page`) or keyset mode (`cursor`).",
    "response_model": None,
    "responses": {
        200: _ok(
            ListReply,
            "A page of orders.",
            {
                "success": True,
                "data": [ORDER_EXAMPLE | {"status": "completed"}],
                "pagination": {"current_page": 1, "per_page": 15, "total": 1, "last_page": 1},
            },
        ),
        **_errors(422),
    },
    "openapi_extra": _query(ListOrders),
}
_STATS_DESCRIPTION = (
    "Counts and revenue over the orders the filters select (the list's filters); revenue "
    "leaves out cancelled and refunded orders."
)
STATS: dict[str, Any] = {
    "operation_id": "order_stats",
    "summary": "Order statistics and metrics",
    "description": _STATS_DESCRIPTION,
    "response_model": None,
    "responses": {
        200: _ok(StatsReply, "The statistics.", {"success": True, "data": STATS_EXAMPLE}),
        **_errors(422),
    },
    "openapi_extra": _query(OrderStatsQuery),
}
STATS_OVERVIEW = STATS | {
    "operation_id": "order_stats_overview",
    "summary": "Order statistics (the same as /api/orders/stats)",
}
STATUSES: dict[str, Any] = {
    "operation_id": "order_statuses",
    "summary": "The order statuses",
    "response_model": None,
    "responses": {
        200: _ok(StatusesReply, "The eight statuses, in order.", STATUSES_EXAMPLE),
        **_errors(422),
    },
    "openapi_extra": _query(ListStatuses),
}
STATUSES_AVAILABLE = STATUSES | {
    "operation_id": "order_statuses_available",
    "summary": "The order statuses (the same as /meta/statuses)",
}


def document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the request models' schemas; cached on the app."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    _restore_examples(schema)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    _, requests = models_json_schema([(PlaceOrder, "validation")], ref_template=REF)
    action = TypeAdapter(OrderAction).json_schema(ref_template=REF)
    added = {**requests.get("$defs", {}), **action.pop("$defs", {})}
    for name in ("UpdateStatus", "CancelOrder", "CompleteOrder", "UpdateMetadata"):
        # Over HTTP the path names the order: the body has neither id nor order_id (and
        # the models' own examples, which name one, give way to the route's).
        properties = added[name]["properties"]
        properties.pop("id", None)
        properties.pop("order_id", None)
        added[name].pop("examples", None)
    added["OrderActionRequest"] = action | {"title": "OrderActionRequest"}
    # A model both read and written (Billing) may differ between the two: the request's
    # schema then gets a name of its own.
    renamed = {
        name: f"{name}Input"
        for name, model_schema in added.items()
        if name in components and components[name] != model_schema
    }
    for name, model_schema in _renamed(added, renamed).items():
        components[renamed.get(name, name)] = model_schema
    app.openapi_schema = schema
    return schema


ROUTES: dict[tuple[str, str], dict[str, Any]] = {
    ("/api/orders/place", "post"): PLACE,
    ("/api/orders/{id}", "get"): GET,
    ("/api/orders/{id}/action", "post"): ACTION,
    ("/api/orders/list", "get"): LIST,
    ("/api/orders/stats", "get"): STATS,
    ("/api/orders/stats/overview", "get"): STATS_OVERVIEW,
    ("/api/orders/meta/statuses", "get"): STATUSES,
    ("/api/orders/statuses/available", "get"): STATUSES_AVAILABLE,
}


def _restore_examples(schema: dict[str, Any]) -> None:
    """FastAPI writes the document without `null` values, examples included; put each
    reply example back as declared, so `"from": null` stays in the order's history."""
    for (path, method), route in ROUTES.items():
        responses = schema["paths"][path][method]["responses"]
        for status, response in route["responses"].items():
            example = response["content"]["application/json"]["example"]
            responses[str(status)]["content"]["application/json"]["example"] = example


def _renamed(value: Any, names: dict[str, str]) -> Any:
    """`value` with every `$ref` to a renamed component pointing at its new name."""
    if isinstance(value, dict):
        return {
            key: _ref(item, names) if key == "$ref" else _renamed(item, names)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_renamed(item, names) for item in value]
    return value


def _ref(ref: str, names: dict[str, str]) -> str:
    name = ref.rsplit("/", 1)[-1]
    return REF.format(model=names[name]) if name in names else ref
