"""The HTTP gateway as a process, the way ``make http`` runs it, beside the module's worker.

The gateway runs ``python -m service.gateway`` on a free port with the module worker's
``ORDERS_MONGO_DATABASE`` and the session's RabbitMQ vhost (``amqp_url``, which the worker
and the AMQP client use too), so HTTP and AMQP act on the same orders and publish to the
same events exchange. Schemathesis fuzzes every operation of the live ``/openapi.json``
(and runs linked sequences of them); the other tests walk the documented flow as curl
would and mix HTTP with AMQP on one order.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import Flaky, FlakyStrategyDefinition
from schemathesis import BaseSchema, Case, CheckFunction, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.engine.errors import is_inconsistent_replay
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ensure_resource_availability,
    response_schema_conformance,
    status_code_conformance,
    use_after_free,
)

from .amqp_client import AmqpClient, Event, EventCollector, JSONObject, decode_object
from .contract import (
    STATUSES,
    act,
    assert_example_order_placed,
    assert_json_number,
    assert_success,
    get_order,
    new_customer_id,
    simple_order,
)
from .gateway import Gateway, start_gateway, stop_gateway, wait_until_serving
from .worker import REPO_ROOT, Worker

EXAMPLE_ORDER_FILE = REPO_ROOT / "docs" / "example-order.json"
OPERATIONS = {
    "POST /api/orders/place",
    "GET /api/orders/{id}",
    "POST /api/orders/{id}/action",
    "GET /api/orders/list",
    "GET /api/orders/stats",
    "GET /api/orders/stats/overview",
    "GET /api/orders/meta/statuses",
    "GET /api/orders/statuses/available",
}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
FUZZ_EXAMPLES = 25
STATEFUL_SCENARIOS = 50
STATEFUL_STEPS = 8
STATEFUL_RUNS = 3
HTTP_TIMEOUT = 15.0
JSON = "application/json"


@pytest.fixture(scope="module")
def gateway(
    worker_process: Worker,
    amqp_url: str,
    mongo_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    """The gateway on the worker's database and vhost; SIGTERM at the end must stop it
    cleanly (exit code 0) within the bound."""
    log_path = tmp_path_factory.mktemp("e2e-gateway") / "gateway.log"
    gateway = start_gateway(amqp_url, mongo_url, worker_process.database, log_path)
    try:
        wait_until_serving(gateway)
        yield gateway
    finally:
        code = stop_gateway(gateway)
    assert code == 0, (
        f"gateway did not exit with 0 on SIGTERM (code {code}; None: killed after the bound); "
        f"log tail:\n{gateway.log_tail()}"
    )


@pytest.fixture
def http(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=HTTP_TIMEOUT, headers=gateway.auth) as session:
        yield session


@pytest_asyncio.fixture(loop_scope="session")
async def ahttp(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=gateway.url, timeout=HTTP_TIMEOUT, headers=gateway.auth
    ) as session:
        yield session


def envelope(response: httpx.Response, status: int) -> JSONObject:
    """The JSON envelope of a response with this status (numbers decoded exactly)."""
    assert response.status_code == status, f"expected {status}: {response.text[:1000]}"
    assert response.headers["content-type"] == "application/json"
    return decode_object(response.content)


# --- Schemathesis against the live document --------------------------------------------


@pytest.fixture(scope="module")
def api_schema(gateway: Gateway) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{gateway.url}/openapi.json", timeout=HTTP_TIMEOUT)


Exercised = Counter[tuple[str, int]]
"""(operation, status class) -> how many of Schemathesis' cases got such an answer."""


@pytest.fixture(scope="module")
def exercised() -> Exercised:
    """Filled by the fuzz test, read by the test after it."""
    return Counter()


@pytest.fixture
def pytest_node_id(request: pytest.FixtureRequest) -> None:
    """Schemathesis 4.32.5's lazy schema reads and rewrites the private `item._nodeid`, which
    pytest 9.2 no longer has (it keeps a `NodeId` in `_id`): give it the plain attribute."""
    node = request.node
    if not hasattr(node, "_nodeid"):
        node._nodeid = node.nodeid


live_schema = schemathesis.pytest.from_fixture("api_schema")


@live_schema.parametrize()
@pytest.mark.usefixtures("pytest_node_id")
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_operation_conforms_to_the_document(
    case: Case[Any], exercised: Exercised, gateway: Gateway
) -> None:
    """No 5xx, only documented status codes and content types, bodies as documented.

    Schemathesis' examples, coverage (edge values, missing and wrong-typed fields,
    undocumented methods) and fuzzing phases, with valid and invalid data, each sent with
    the gateway's API key; `max_examples` bounds the fuzzing only: about 1,100 requests over
    the eight operations in all."""
    response = case.call_and_validate(headers=gateway.auth, checks=CHECKS, timeout=HTTP_TIMEOUT)
    exercised[case.operation.label, response.status_code // 100] += 1


def test_every_operation_was_exercised(api_schema: BaseSchema, exercised: Exercised) -> None:
    """Each documented operation got cases, and some of them were accepted (2xx): the
    generated requests reach past validation."""
    if not exercised:
        pytest.skip("checks what test_every_operation_conforms_to_the_document did")
    documented = {
        result.ok().label for result in api_schema.get_all_operations() if isinstance(result, Ok)
    }
    assert documented == OPERATIONS
    assert {operation for operation, _ in exercised} == OPERATIONS, exercised
    accepted = {operation for operation, status_class in exercised if status_class == 2}
    assert accepted == OPERATIONS, f"no 2xx answer for {OPERATIONS - accepted}: {exercised}"


def test_linked_sequences_conform_to_the_document(api_schema: BaseSchema, gateway: Gateway) -> None:
    """Stateful: sequences of calls that follow the links Schemathesis infers from the
    document (the `id` of the order a reply names feeds the `{id}` of the next call), with
    the same checks plus: an order just placed is found, and stays found.

    The server's state decides which links are open, so Hypothesis, replaying a prefix of
    an earlier scenario, may draw differently and give up with a flaky-generation error;
    Schemathesis' own runner then starts the suite again, and so does this test (bounded).
    A check that failed on the way is reported whatever Hypothesis made of the replay."""
    machine = api_schema.as_state_machine()
    calls: Counter[tuple[str, int]] = Counter()
    scenarios = Counter[str]()
    failures: list[FailureGroup] = []

    class Sequences(machine):  # type: ignore[valid-type, misc]
        def get_call_kwargs(self, case: Case[Any]) -> dict[str, Any]:
            return {"headers": gateway.auth}

        def after_call(self, response: Response, case: Case[Any]) -> None:
            super().after_call(response, case)
            calls[case.operation.label, response.status_code] += 1

        def validate_response(
            self,
            response: Response,
            case: Case[Any],
            additional_checks: list[CheckFunction] | None = None,
            **kwargs: Any,
        ) -> None:
            try:
                case.validate_response(
                    response,
                    checks=[*CHECKS, ensure_resource_availability, use_after_free],
                    additional_checks=additional_checks,
                    transport_kwargs=kwargs or None,
                    recorder=self.recorder,
                )
            except FailureGroup as exc:
                failures.append(exc)
                raise

        def teardown(self) -> None:
            super().teardown()
            scenarios["ended"] += 1

    hypothesis_settings = settings(
        max_examples=STATEFUL_SCENARIOS,
        stateful_step_count=STATEFUL_STEPS,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    for _ in range(STATEFUL_RUNS):
        try:
            Sequences.run(settings=hypothesis_settings)
        except (Flaky, AssertionError) as exc:
            if failures:
                pytest.fail("\n".join(str(failure) for failure in failures))
            if not (isinstance(exc, FlakyStrategyDefinition) or is_inconsistent_replay(exc)):
                raise
        if scenarios["ended"] >= STATEFUL_SCENARIOS:
            break
    # Random bodies make most actions fail validation; a get by the id a place or a list
    # answered with shows that the links were followed.
    assert calls["GET /api/orders/{id}", 200] > 0, calls


# --- The documented example, as curl would send it --------------------------------------


def test_documented_example_flow_over_http(http: httpx.Client) -> None:
    customer_id = new_customer_id()
    raw = EXAMPLE_ORDER_FILE.read_bytes()
    assert raw.count(b'"CUST-12345"') == 1
    body = raw.replace(b'"CUST-12345"', f'"{customer_id}"'.encode())

    placed = envelope(
        http.post("/api/orders/place", content=body, headers={"Content-Type": "application/json"}),
        201,
    )
    assert placed["success"] is True
    assert placed["message"] == "Order placed successfully"
    order = placed["data"]
    assert_example_order_placed(order, customer_id)
    order_db_id = order["id"]

    started = envelope(
        http.post(
            f"/api/orders/{order_db_id}/action",
            json={"action": "update_status", "status": "in_progress", "notes": "Crew on site"},
        ),
        200,
    )
    assert started["success"] is True
    assert started["data"]["status"] == "in_progress"
    assert started["data"]["version"] == 2

    completed = envelope(
        http.post(f"/api/orders/{order_db_id}/action", json={"action": "complete"}), 200
    )["data"]
    assert completed["status"] == "completed"
    assert completed["version"] == 3
    assert [(h["from"], h["to"], h["action"]) for h in completed["status_history"]] == [
        (None, "pending", "place"),
        ("pending", "in_progress", "update_status"),
        ("in_progress", "completed", "complete"),
    ]
    assert completed["status_history"][1]["notes"] == "Crew on site"
    assert envelope(http.get(f"/api/orders/{order_db_id}"), 200)["data"] == completed

    listed = envelope(
        http.get("/api/orders/list", params={"customer_id": customer_id, "status": "completed"}),
        200,
    )
    assert listed["success"] is True
    assert [row["id"] for row in listed["data"]] == [order_db_id]
    assert listed["data"][0]["total"] == "300.00"
    assert listed["data"][0]["status"] == "completed"
    assert listed["pagination"] == {"current_page": 1, "per_page": 15, "total": 1, "last_page": 1}

    stats = envelope(
        http.get("/api/orders/stats/overview", params={"customer_id": customer_id}), 200
    )
    data = stats["data"]
    assert data["total_orders"] == 1
    assert data["completed_orders"] == 1
    assert data["active_orders"] == 0
    assert data["status_breakdown"] == {status: int(status == "completed") for status in STATUSES}
    assert_json_number(data["total_revenue"], 300)
    assert_json_number(data["average_order_value"], 300)
    assert data["unique_customers"] == 1
    assert data["repeat_customers"] == 0
    assert [(row["customer_id"], row["orders"]) for row in data["top_customers"]] == [
        (customer_id, 1)
    ]
    assert envelope(http.get("/api/orders/stats", params={"customer_id": customer_id}), 200) == (
        stats
    )

    available = envelope(http.get("/api/orders/statuses/available"), 200)
    assert available == {"success": True, "data": STATUSES}
    assert envelope(http.get("/api/orders/meta/statuses"), 200) == available


def test_http_errors_use_the_contract_envelope(http: httpx.Client) -> None:
    """A few refusals the flow above can meet, each with its status and contract code."""
    order = envelope(http.post("/api/orders/place", json=simple_order(new_customer_id())), 201)
    order_db_id = order["data"]["id"]

    def refused(response: httpx.Response, status: int, code: str) -> JSONObject:
        reply = envelope(response, status)
        assert reply["success"] is False, reply
        assert reply["error"]["code"] == code, reply
        assert isinstance(reply["message"], str), reply
        assert reply["message"].strip(), reply
        error: JSONObject = reply["error"]
        return error

    refused(
        http.post(f"/api/orders/{order_db_id}/action", json={"action": "refund"}),
        422,
        "unknown_action",
    )
    transition = refused(
        http.post(
            f"/api/orders/{order_db_id}/action",
            json={"action": "update_status", "status": "refunded"},
        ),
        409,
        "invalid_transition",
    )
    assert transition["details"]["from"] == "pending"
    assert transition["details"]["to"] == "refunded"
    conflict = refused(
        http.post(
            f"/api/orders/{order_db_id}/action",
            json={"action": "cancel", "expected_version": 7},
        ),
        409,
        "version_conflict",
    )
    assert conflict["details"]["current_version"] == 1
    refused(http.get("/api/orders/999999999"), 404, "not_found")
    refused(
        http.post("/api/orders/place", content=b"[1, 2]", headers={"Content-Type": JSON}),
        400,
        "bad_request",
    )
    refused(http.get("/api/orders/list", params={"per_page": 1000}), 422, "validation_error")
    # Nothing of that changed the order.
    assert envelope(http.get(f"/api/orders/{order_db_id}"), 200)["data"] == order["data"]


# --- HTTP and AMQP on the same order -----------------------------------------------------


async def test_http_and_amqp_act_on_the_same_order(
    ahttp: httpx.AsyncClient, client: AmqpClient, events: EventCollector
) -> None:
    redeliveries_before = events.redeliveries
    correlation_id = f"http-{uuid.uuid4()}"
    headers = {"X-Correlation-ID": correlation_id}

    response = await ahttp.post(
        "/api/orders/place", json=simple_order(new_customer_id()), headers=headers
    )
    assert response.headers["X-Correlation-ID"] == correlation_id
    placed = envelope(response, 201)["data"]
    order_db_id = placed["id"]

    processing = assert_success(
        await act(client, order_db_id, "update_status", status="processing")
    )
    assert processing["status"] == "processing"
    assert processing["version"] == 2

    response = await ahttp.post(
        f"/api/orders/{order_db_id}/action", json={"action": "complete"}, headers=headers
    )
    completed = envelope(response, 200)["data"]
    assert completed["status"] == "completed"
    assert completed["version"] == 3

    over_amqp = await get_order(client, order_db_id)
    assert over_amqp == completed
    assert envelope(await ahttp.get(f"/api/orders/{order_db_id}"), 200)["data"] == completed
    assert [(h["from"], h["to"]) for h in over_amqp["status_history"]] == [
        (None, "pending"),
        ("pending", "processing"),
        ("processing", "completed"),
    ]

    def of_this_order(event: Event) -> bool:
        return bool(event.order_db_id == order_db_id)

    seen = await events.wait_for_all(of_this_order, 3)
    assert [(e.routing_key, e.body.get("version")) for e in seen] == [
        ("order.placed", None),
        ("order.status_changed", 2),
        ("order.status_changed", 3),
    ]
    placed_event, to_processing, to_completed = seen
    assert placed_event.body["order"] == placed
    assert placed_event.correlation_id == correlation_id
    assert (to_processing.body["from_status"], to_processing.body["to_status"]) == (
        "pending",
        "processing",
    )
    assert to_processing.body["action"] == "update_status"
    assert (to_completed.body["from_status"], to_completed.body["to_status"]) == (
        "processing",
        "completed",
    )
    assert to_completed.body["action"] == "complete"
    assert to_completed.correlation_id == correlation_id
    event_ids = [event.body["event_id"] for event in seen]
    assert len(set(event_ids)) == 3
    assert [event.message_id for event in seen] == event_ids
    # Exactly once each: the collector drops a copy of an event it saw, and counts it.
    assert events.redeliveries == redeliveries_before
    assert len(events.for_order(order_db_id)) == 3
