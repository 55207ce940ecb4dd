"""Bodies -> commands and queries, and refusals shaped as the contract's `validation_error`.

Every refusal is checked through `service.application.parsing`, the one place that turns pydantic
errors into `{"code": "validation_error", "details": [{"loc": [...], "msg": "..."}]}`.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from orders_vocabulary.statuses import OrderStatus
from schemas.commands import CancelOrder, CompleteOrder, PlaceOrder, UpdateMetadata, UpdateStatus
from schemas.queries import GetOrder, ListOrders, OrderStatsQuery
from service.application.parsing import parse, parse_action
from service.domain.errors import OrderError, UnknownAction, ValidationFailed
from service.wire import decode_object
from tests.unit.builders import item_body, place_body

Loc = list[str | int]

ORIGINAL_API_EXAMPLE = (
    b'{ "customer_id": "CUST-12345", "items": [ { "product_id": 1, "product_name": "Premium '
    b'Cleaning Service", "quantity": 1, "price": 150.00, "metadata": { "filter_options": [1, 2, '
    b'3] } }, { "product_id": 2, "product_name": "Window Cleaning", "quantity": 2, "price": 75.00'
    b' } ], "billing": { "first_name": "John", "last_name": "Doe", "email": "john.doe@example.com"'
    b', "phone": "+31612345678", "address": "123 Main Street", "city": "Amsterdam", "postal_code":'
    b' "1012AB", "country": "NL" }, "notes": "Please call before arrival", "metadata": { "source":'
    b' "webform", "campaign_id": "SUMMER2025" } }'
)
"""The PlaceOrder example of ORIGINAL_API.txt, byte for byte."""

OPERATOR = {"$ne": None}
"""A MongoDB operator object where a plain value is expected."""

ACTION_NAMES = ["update_status", "cancel", "complete", "update_metadata"]
MINIMAL_ACTION_FIELDS: dict[str, dict[str, Any]] = {
    "update_status": {"status": "confirmed"},
    "cancel": {},
    "complete": {},
    "update_metadata": {"metadata": {"a": 1}},
}


def _locs(error: OrderError) -> list[Loc]:
    """The contract's shape of a validation error; returns the locs of its details."""
    assert error.code == "validation_error"
    assert error.message
    details = error.details
    assert isinstance(details, list)
    assert details
    for detail in details:
        assert set(detail) == {"loc", "msg"}
        assert isinstance(detail["loc"], list)
        assert all(isinstance(part, str | int) for part in detail["loc"])
        assert isinstance(detail["msg"], str)
        assert detail["msg"]
    return [detail["loc"] for detail in details]


def assert_refused(model: type[BaseModel], body: dict[str, Any], loc: Loc) -> None:
    """`parse` refuses `body`, and every detail points at `loc`."""
    with pytest.raises(ValidationFailed) as refused:
        parse(model, body)
    assert {tuple(found) for found in _locs(refused.value)} == {tuple(loc)}


def assert_action_refused(body: dict[str, Any], loc: Loc) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_action(body)
    assert {tuple(found) for found in _locs(refused.value)} == {tuple(loc)}


def _drop(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


def _billing(**changes: Any) -> dict[str, Any]:
    billing: dict[str, Any] = place_body()["billing"]
    return place_body(billing=billing | changes)


def _billing_without(key: str) -> dict[str, Any]:
    return place_body(billing=_drop(place_body()["billing"], key))


def _item(**changes: Any) -> dict[str, Any]:
    """A body whose second item carries `changes`."""
    return place_body(items=[item_body(product_id=1), item_body(**changes)])


def _item_without(key: str) -> dict[str, Any]:
    return place_body(items=[item_body(product_id=1), _drop(item_body(), key)])


# -- PlaceOrder: accepted --------------------------------------------------------------


def test_the_original_api_example_is_a_valid_place_order() -> None:
    command = parse(PlaceOrder, decode_object(ORIGINAL_API_EXAMPLE, limit=256 * 1024))

    assert command.customer_id == "CUST-12345"
    assert [item.price for item in command.items] == [Decimal("150.00"), Decimal("75.00")]
    assert command.items[0].metadata == {"filter_options": [1, 2, 3]}
    assert command.billing.email == "john.doe@example.com"
    assert command.metadata == {"source": "webform", "campaign_id": "SUMMER2025"}


def test_place_order_defaults() -> None:
    command = parse(PlaceOrder, _drop(_drop(place_body(), "notes"), "metadata"))

    assert command.status == OrderStatus.PENDING
    assert command.total is None
    assert command.total_tax is None
    assert command.currency is None
    assert command.notes is None
    assert command.metadata == {}
    assert command.user_id is None
    assert command.idempotency_key is None


def test_place_order_with_every_optional_field() -> None:
    command = parse(
        PlaceOrder,
        place_body(
            user_id="USER-7",
            total="363.00",
            total_tax=Decimal("63.00"),
            status="confirmed",
            currency="usd",
            idempotency_key="webform-7f3c2a",
        ),
    )

    assert command.user_id == "USER-7"
    assert (command.total, command.total_tax) == (Decimal("363.00"), Decimal("63.00"))
    assert command.status == OrderStatus.CONFIRMED
    assert command.currency == "USD"
    assert command.idempotency_key == "webform-7f3c2a"


def test_billing_needs_only_names_and_email() -> None:
    billing = {"first_name": "John", "last_name": "Doe", "email": "john.doe@example.com"}

    command = parse(PlaceOrder, place_body(billing=billing))

    assert command.billing.phone is None
    assert command.billing.country is None


@pytest.mark.parametrize(
    "price",
    ["75.00", "75", "75.0", "75.000", " 75.00 ", 75, Decimal("75.00"), Decimal("75"), 75.0],
    ids=repr,
)
def test_a_price_is_a_json_number_or_a_decimal_string(price: object) -> None:
    command = parse(PlaceOrder, _item(price=price))

    assert command.items[1].price == Decimal("75.00")
    assert str(command.items[1].price) == "75.00"


def test_a_price_as_a_json_number_on_the_wire_stays_exact() -> None:
    raw = ORIGINAL_API_EXAMPLE.replace(b'"price": 75.00', b'"price": 0.10')

    command = parse(PlaceOrder, decode_object(raw, limit=256 * 1024))

    assert command.items[1].price == Decimal("0.10")


@pytest.mark.parametrize("product_id", [1, "SKU-1"], ids=repr)
def test_product_id_is_an_integer_or_a_string(product_id: int | str) -> None:
    assert parse(PlaceOrder, _item(product_id=product_id)).items[1].product_id == product_id


@pytest.mark.parametrize("quantity", [1, 10_000])
def test_quantity_bounds_are_inclusive(quantity: int) -> None:
    assert parse(PlaceOrder, _item(quantity=quantity)).items[1].quantity == quantity


def test_five_hundred_items_are_accepted() -> None:
    assert len(parse(PlaceOrder, place_body(items=[item_body()] * 500)).items) == 500


def test_a_price_of_zero_is_accepted() -> None:
    assert parse(PlaceOrder, _item(price="0")).items[1].price == Decimal("0.00")


def test_metadata_may_hold_any_json() -> None:
    metadata = {"n": 1, "x": Decimal("1.5"), "ok": True, "none": None, "list": [{"a": "b"}]}

    assert parse(PlaceOrder, place_body(metadata=metadata)).metadata == metadata


# -- PlaceOrder: refused ---------------------------------------------------------------


PLACE_REFUSALS = [
    pytest.param(_drop(place_body(), "customer_id"), ["customer_id"], id="missing customer_id"),
    pytest.param(place_body(customer_id="  "), ["customer_id"], id="blank customer_id"),
    pytest.param(place_body(customer_id=12345), ["customer_id"], id="numeric customer_id"),
    pytest.param(place_body(customer_id=OPERATOR), ["customer_id"], id="operator customer_id"),
    pytest.param(place_body(user_id=OPERATOR), ["user_id"], id="operator user_id"),
    pytest.param(_drop(place_body(), "items"), ["items"], id="missing items"),
    pytest.param(place_body(items=[]), ["items"], id="0 items"),
    pytest.param(place_body(items=[item_body()] * 501), ["items"], id="501 items"),
    pytest.param(place_body(items=item_body()), ["items"], id="items not a list"),
    pytest.param(_drop(place_body(), "billing"), ["billing"], id="missing billing"),
    pytest.param(place_body(billing="John Doe"), ["billing"], id="billing not an object"),
    pytest.param(_billing_without("first_name"), ["billing", "first_name"], id="no first_name"),
    pytest.param(_billing_without("last_name"), ["billing", "last_name"], id="no last_name"),
    pytest.param(_billing_without("email"), ["billing", "email"], id="no email"),
    pytest.param(_billing(email="john.doe"), ["billing", "email"], id="bad email"),
    pytest.param(_billing(email="john@"), ["billing", "email"], id="bad email domain"),
    pytest.param(_billing(email=OPERATOR), ["billing", "email"], id="operator email"),
    pytest.param(_billing(first_name=""), ["billing", "first_name"], id="empty first_name"),
    pytest.param(_billing(first_name=OPERATOR), ["billing", "first_name"], id="op first_name"),
    pytest.param(_billing(last_name="x" * 101), ["billing", "last_name"], id="long last_name"),
    pytest.param(_billing(phone="1" * 33), ["billing", "phone"], id="long phone"),
    pytest.param(_billing(vat="NL123"), ["billing", "vat"], id="unknown billing field"),
    pytest.param(_item_without("product_id"), ["items", 1, "product_id"], id="no product_id"),
    pytest.param(_item(product_id=1.5), ["items", 1, "product_id"], id="float product_id"),
    pytest.param(_item(product_id=OPERATOR), ["items", 1, "product_id"], id="op product_id"),
    pytest.param(_item_without("product_name"), ["items", 1, "product_name"], id="no name"),
    pytest.param(_item(product_name=""), ["items", 1, "product_name"], id="empty name"),
    pytest.param(_item_without("quantity"), ["items", 1, "quantity"], id="no quantity"),
    pytest.param(_item(quantity=0), ["items", 1, "quantity"], id="quantity 0"),
    pytest.param(_item(quantity=10_001), ["items", 1, "quantity"], id="quantity 10001"),
    pytest.param(_item(quantity=-1), ["items", 1, "quantity"], id="negative quantity"),
    pytest.param(_item(quantity="2"), ["items", 1, "quantity"], id="quantity '2'"),
    pytest.param(_item(quantity=True), ["items", 1, "quantity"], id="quantity true"),
    pytest.param(_item(quantity=Decimal("2.5")), ["items", 1, "quantity"], id="quantity 2.5"),
    pytest.param(_item(quantity=Decimal("2.0")), ["items", 1, "quantity"], id="quantity 2.0"),
    pytest.param(_item_without("price"), ["items", 1, "price"], id="no price"),
    pytest.param(_item(price="75.005"), ["items", 1, "price"], id="price '75.005'"),
    pytest.param(_item(price=Decimal("75.005")), ["items", 1, "price"], id="price 75.005"),
    pytest.param(_item(price=75.005), ["items", 1, "price"], id="float price 75.005"),
    pytest.param(_item(price="-1.00"), ["items", 1, "price"], id="negative price"),
    pytest.param(_item(price=Decimal("-0.01")), ["items", 1, "price"], id="price -0.01"),
    pytest.param(_item(price=True), ["items", 1, "price"], id="price true"),
    pytest.param(_item(price=False), ["items", 1, "price"], id="price false"),
    pytest.param(_item(price=None), ["items", 1, "price"], id="price null"),
    pytest.param(_item(price="abc"), ["items", 1, "price"], id="price 'abc'"),
    pytest.param(_item(price="1e2"), ["items", 1, "price"], id="price '1e2'"),
    pytest.param(_item(price="NaN"), ["items", 1, "price"], id="price 'NaN'"),
    pytest.param(_item(price="Infinity"), ["items", 1, "price"], id="price 'Infinity'"),
    pytest.param(_item(price="75,00"), ["items", 1, "price"], id="price '75,00'"),
    pytest.param(_item(price=[75]), ["items", 1, "price"], id="price list"),
    pytest.param(_item(price=OPERATOR), ["items", 1, "price"], id="operator price"),
    pytest.param(_item(price="1000000000000.01"), ["items", 1, "price"], id="price over max"),
    pytest.param(_item(discount=5), ["items", 1, "discount"], id="unknown item field"),
    pytest.param(_item(metadata={"$where": 1}), ["items", 1, "metadata"], id="item meta $"),
    pytest.param(place_body(total="300.001"), ["total"], id="total 3 decimals"),
    pytest.param(place_body(total="-300"), ["total"], id="negative total"),
    pytest.param(place_body(total=True), ["total"], id="total true"),
    pytest.param(place_body(total_tax=Decimal("0.001")), ["total_tax"], id="tax 3 decimals"),
    pytest.param(place_body(status="shipped"), ["status"], id="unknown status"),
    pytest.param(place_body(status=OPERATOR), ["status"], id="operator status"),
    pytest.param(place_body(currency="XXX"), ["currency"], id="unknown currency"),
    pytest.param(place_body(currency="EURO"), ["currency"], id="currency of 4 letters"),
    pytest.param(place_body(notes="x" * 5001), ["notes"], id="notes too long"),
    pytest.param(place_body(notes=OPERATOR), ["notes"], id="operator notes"),
    pytest.param(place_body(idempotency_key=""), ["idempotency_key"], id="empty key"),
    pytest.param(place_body(metadata=[1]), ["metadata"], id="metadata not an object"),
    pytest.param(place_body(metadata={"$where": "1"}), ["metadata"], id="metadata $where"),
    pytest.param(place_body(metadata={"a.b": 1}), ["metadata"], id="metadata a.b"),
    pytest.param(place_body(metadata={"a": {"$gt": 1}}), ["metadata"], id="nested $ key"),
    pytest.param(place_body(metadata={"a": {"b.c": 1}}), ["metadata"], id="nested dotted key"),
    pytest.param(place_body(metadata={"a": [{"$x": 1}]}), ["metadata"], id="$ key in a list"),
    pytest.param(place_body(coupon="SUMMER"), ["coupon"], id="unknown field"),
    pytest.param(place_body(id=3), ["id"], id="id is not the caller's"),
]


@pytest.mark.parametrize(("body", "loc"), PLACE_REFUSALS)
def test_place_order_refusals(body: dict[str, Any], loc: Loc) -> None:
    assert_refused(PlaceOrder, body, loc)


def test_every_wrong_field_is_reported() -> None:
    body = _drop(place_body(customer_id=OPERATOR), "billing")

    with pytest.raises(ValidationFailed) as refused:
        parse(PlaceOrder, body)

    assert sorted(map(tuple, _locs(refused.value))) == [("billing",), ("customer_id",)]


@pytest.mark.parametrize("name", ["coupon", "int", "str", "x[0]"])
def test_an_unknown_field_is_named_in_loc_whatever_its_name(name: str) -> None:
    """CONTRACT.md: validation_error details are `{"loc": [...], "msg": "..."}`.

    `parsing._is_tag` drops loc parts named `int`/`str`/`constrained-str` or holding a `[`,
    so an unknown field with such a name is reported with an empty loc.
    """
    assert_refused(PlaceOrder, place_body(**{name: 1}), [name])


# -- OrderAction: accepted -------------------------------------------------------------


def test_update_status_with_its_fields() -> None:
    parsed = parse_action(
        {"action": "update_status", "id": 3, "status": "confirmed", "notes": "by phone"}
    )

    assert isinstance(parsed, UpdateStatus)
    assert (parsed.id, parsed.order_id) == (3, None)
    assert parsed.status == OrderStatus.CONFIRMED
    assert parsed.notes == "by phone"


def test_cancel_with_its_fields() -> None:
    parsed = parse_action(
        {"action": "cancel", "order_id": 421409, "reason": "customer asked", "notes": "n"}
    )

    assert isinstance(parsed, CancelOrder)
    assert (parsed.id, parsed.order_id) == (None, 421409)
    assert (parsed.reason, parsed.notes) == ("customer asked", "n")


def test_cancel_and_complete_need_no_fields() -> None:
    assert isinstance(parse_action({"action": "cancel", "id": 3}), CancelOrder)
    assert isinstance(parse_action({"action": "complete", "id": 3}), CompleteOrder)


def test_complete_with_notes() -> None:
    parsed = parse_action({"action": "complete", "id": 3, "notes": "signed off"})

    assert isinstance(parsed, CompleteOrder)
    assert parsed.notes == "signed off"


def test_update_metadata_merges_by_default() -> None:
    parsed = parse_action({"action": "update_metadata", "id": 3, "metadata": {"a": None}})

    assert isinstance(parsed, UpdateMetadata)
    assert parsed.mode == "merge"
    assert parsed.metadata == {"a": None}


@pytest.mark.parametrize("mode", ["merge", "replace"])
def test_update_metadata_modes(mode: str) -> None:
    parsed = parse_action({"action": "update_metadata", "id": 3, "metadata": {}, "mode": mode})

    assert isinstance(parsed, UpdateMetadata)
    assert parsed.mode == mode


@pytest.mark.parametrize("name", ACTION_NAMES)
def test_every_action_takes_expected_version_and_request_id(name: str) -> None:
    body = {"action": name, "id": 3, "expected_version": 2, "request_id": "req-1"}

    parsed = parse_action(body | MINIMAL_ACTION_FIELDS[name])

    assert parsed.action == name
    assert (parsed.expected_version, parsed.request_id) == (2, "req-1")


# -- OrderAction: refused --------------------------------------------------------------


TARGET_REFUSALS = [
    pytest.param({}, [], id="neither id nor order_id"),
    pytest.param({"id": 3, "order_id": 421409}, [], id="both id and order_id"),
    pytest.param({"id": "3"}, ["id"], id="id '3'"),
    pytest.param({"id": 0}, ["id"], id="id 0"),
    pytest.param({"id": True}, ["id"], id="id true"),
    pytest.param({"id": Decimal("3.5")}, ["id"], id="id 3.5"),
    pytest.param({"id": OPERATOR}, ["id"], id="operator id"),
    pytest.param({"order_id": -421409}, ["order_id"], id="negative order_id"),
    pytest.param({"order_id": OPERATOR}, ["order_id"], id="operator order_id"),
    pytest.param({"id": 3, "expected_version": 0}, ["expected_version"], id="version 0"),
    pytest.param({"id": 3, "expected_version": "2"}, ["expected_version"], id="version '2'"),
    pytest.param({"id": 3, "expected_version": True}, ["expected_version"], id="version true"),
    pytest.param({"id": 3, "request_id": ""}, ["request_id"], id="empty request_id"),
    pytest.param({"id": 3, "request_id": 7}, ["request_id"], id="numeric request_id"),
    pytest.param({"id": 3, "request_id": "r" * 256}, ["request_id"], id="long request_id"),
    pytest.param({"id": 3, "bogus": 1}, ["bogus"], id="unknown field"),
]


@pytest.mark.parametrize("name", ACTION_NAMES)
@pytest.mark.parametrize(("target", "loc"), TARGET_REFUSALS)
def test_every_action_checks_its_target(name: str, target: dict[str, Any], loc: Loc) -> None:
    assert_action_refused({"action": name, **MINIMAL_ACTION_FIELDS[name], **target}, loc)


ACTION_REFUSALS = [
    pytest.param({"action": "update_status"}, ["status"], id="update_status without status"),
    pytest.param({"action": "update_status", "status": "shipped"}, ["status"], id="bad status"),
    pytest.param({"action": "update_status", "status": OPERATOR}, ["status"], id="op status"),
    pytest.param(
        {"action": "update_status", "status": "pending", "notes": "x" * 5001},
        ["notes"],
        id="notes too long",
    ),
    pytest.param(
        {"action": "update_status", "status": "pending", "reason": "r"},
        ["reason"],
        id="update_status with reason",
    ),
    pytest.param({"action": "cancel", "status": "pending"}, ["status"], id="cancel with status"),
    pytest.param({"action": "cancel", "reason": 5}, ["reason"], id="numeric reason"),
    pytest.param({"action": "complete", "reason": "r"}, ["reason"], id="complete with reason"),
    pytest.param({"action": "complete", "metadata": {}}, ["metadata"], id="complete with meta"),
    pytest.param({"action": "update_metadata"}, ["metadata"], id="no metadata"),
    pytest.param({"action": "update_metadata", "metadata": "x"}, ["metadata"], id="meta string"),
    pytest.param({"action": "update_metadata", "metadata": None}, ["metadata"], id="meta null"),
    pytest.param(
        {"action": "update_metadata", "metadata": {"$set": {"a": 1}}}, ["metadata"], id="meta $"
    ),
    pytest.param(
        {"action": "update_metadata", "metadata": {"a": {"b.c": 1}}},
        ["metadata"],
        id="nested dotted key",
    ),
    pytest.param(
        {"action": "update_metadata", "metadata": {}, "mode": "patch"}, ["mode"], id="bad mode"
    ),
]


@pytest.mark.parametrize(("body", "loc"), ACTION_REFUSALS)
def test_action_field_refusals(body: dict[str, Any], loc: Loc) -> None:
    assert_action_refused({"id": 3, **body}, loc)


@pytest.mark.parametrize(
    "body",
    [
        {"action": "ship", "id": 3},
        {"action": "ship"},
        {"action": "ship", "id": "x", "status": 5, "expected_version": "1", "bogus": True},
        {"action": "", "id": 3},
        {"action": "Update_Status", "id": 3},
        {"action": 5, "id": 3},
        {"action": ["cancel"], "id": 3},
        {"action": OPERATOR, "id": 3},
    ],
    ids=repr,
)
def test_an_unknown_action_is_reported_before_its_fields(body: dict[str, Any]) -> None:
    with pytest.raises(UnknownAction) as refused:
        parse_action(body)

    assert refused.value.code == "unknown_action"
    action = body["action"]
    shown = action if isinstance(action, str) else f"<{type(action).__name__}>"  # no echo
    assert refused.value.details == {"action": shown, "allowed": ACTION_NAMES}


@pytest.mark.parametrize(
    "body", [{"id": 3, "status": "pending"}, {"action": None, "id": 3}, {}], ids=repr
)
def test_a_missing_action_is_a_validation_error(body: dict[str, Any]) -> None:
    assert_action_refused(body, ["action"])


# -- GetOrder --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "key"), [({"id": 3}, (3, None)), ({"order_id": 421409}, (None, 421409))]
)
def test_get_order_by_id_or_order_id(body: dict[str, Any], key: tuple[int | None, ...]) -> None:
    query = parse(GetOrder, body)

    assert (query.id, query.order_id) == key


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        pytest.param({}, [], id="neither"),
        pytest.param({"id": 3, "order_id": 421409}, [], id="both"),
        pytest.param({"id": "3"}, ["id"], id="id '3'"),
        pytest.param({"id": 0}, ["id"], id="id 0"),
        pytest.param({"id": OPERATOR}, ["id"], id="operator id"),
        pytest.param({"order_id": {"$gt": 0}}, ["order_id"], id="operator order_id"),
        pytest.param({"order_id": Decimal("421409.5")}, ["order_id"], id="fractional"),
        pytest.param({"id": 3, "customer_id": "C"}, ["customer_id"], id="unknown field"),
    ],
)
def test_get_order_refusals(body: dict[str, Any], loc: Loc) -> None:
    assert_refused(GetOrder, body, loc)


# -- ListOrders ------------------------------------------------------------------------


def test_list_orders_defaults() -> None:
    query = parse(ListOrders, {})

    assert query.order_by == "created_at"
    assert query.order_direction == "desc"
    assert (query.page, query.per_page) == (1, 15)
    assert query.active_only is False
    assert query.status is None
    assert query.search is None
    assert (query.date_from, query.date_to) == (None, None)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("pending", [OrderStatus.PENDING]),
        (["pending"], [OrderStatus.PENDING]),
        (["completed", "on_hold"], [OrderStatus.COMPLETED, OrderStatus.ON_HOLD]),
    ],
    ids=repr,
)
def test_list_status_is_a_status_or_a_list(status: object, expected: list[OrderStatus]) -> None:
    assert parse(ListOrders, {"status": status}).status == expected


def test_list_filters() -> None:
    query = parse(
        ListOrders,
        {
            "customer_id": "CUST-12345",
            "user_id": "USER-7",
            "active_only": True,
            "search": "doe",
            "date_from": "2025-11-01",
            "date_to": "2025-11-06",
        },
    )

    assert (query.customer_id, query.user_id) == ("CUST-12345", "USER-7")
    assert query.active_only is True
    assert query.search == "doe"
    assert (query.date_from, query.date_to) == (date(2025, 11, 1), date(2025, 11, 6))


@pytest.mark.parametrize("search", ["x", "x" * 200, ".*", "(unclosed[", "$where"])
def test_search_text_of_1_to_200_characters_is_taken_literally(search: str) -> None:
    assert parse(ListOrders, {"search": search}).search == search


def test_one_day_range_is_accepted() -> None:
    query = parse(ListOrders, {"date_from": "2025-11-06", "date_to": "2025-11-06"})

    assert query.date_from == query.date_to == date(2025, 11, 6)


@pytest.mark.parametrize(
    "order_by", ["created_at", "updated_at", "total", "order_id", "id", "status", "customer_id"]
)
@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_every_sort_key_and_direction(order_by: str, direction: str) -> None:
    query = parse(ListOrders, {"order_by": order_by, "order_direction": direction})

    assert (query.order_by, query.order_direction) == (order_by, direction)


@pytest.mark.parametrize(("page", "per_page"), [(1, 1), (2, 100), (1000, 15)])
def test_paging_in_range(page: int, per_page: int) -> None:
    query = parse(ListOrders, {"page": page, "per_page": per_page})

    assert (query.page, query.per_page) == (page, per_page)


LIST_REFUSALS = [
    pytest.param({"status": "shipped"}, ["status", 0], id="unknown status"),
    pytest.param({"status": ["pending", "shipped"]}, ["status", 1], id="unknown status in list"),
    pytest.param({"status": []}, ["status"], id="empty status list"),
    pytest.param({"status": OPERATOR}, ["status"], id="operator status"),
    pytest.param({"active_only": "true"}, ["active_only"], id="active_only 'true'"),
    pytest.param({"active_only": 1}, ["active_only"], id="active_only 1"),
    pytest.param({"search": ""}, ["search"], id="empty search"),
    pytest.param({"search": "x" * 201}, ["search"], id="search of 201"),
    pytest.param({"search": {"$regex": ".*"}}, ["search"], id="operator search"),
    pytest.param({"customer_id": OPERATOR}, ["customer_id"], id="operator customer_id"),
    pytest.param({"user_id": OPERATOR}, ["user_id"], id="operator user_id"),
    pytest.param({"date_from": "06-11-2025"}, ["date_from"], id="date DD-MM-YYYY"),
    pytest.param({"date_from": "2025-11-6"}, ["date_from"], id="date without padding"),
    pytest.param({"date_from": "2025-02-30"}, ["date_from"], id="no such day"),
    pytest.param({"date_to": "2025-11-06T00:00:00"}, ["date_to"], id="datetime"),
    pytest.param({"date_to": "20251106"}, ["date_to"], id="basic format"),
    pytest.param({"date_to": 20251106}, ["date_to"], id="number"),
    pytest.param({"date_to": "yesterday"}, ["date_to"], id="words"),
    pytest.param({"date_from": "2025-11-07", "date_to": "2025-11-06"}, [], id="from after to"),
    pytest.param({"order_by": "password"}, ["order_by"], id="order_by password"),
    pytest.param({"order_by": "billing.email"}, ["order_by"], id="order_by a path"),
    pytest.param({"order_by": "CREATED_AT"}, ["order_by"], id="order_by upper case"),
    pytest.param({"order_direction": "up"}, ["order_direction"], id="direction up"),
    pytest.param({"order_direction": -1}, ["order_direction"], id="direction -1"),
    pytest.param({"page": 0}, ["page"], id="page 0"),
    pytest.param({"page": -1}, ["page"], id="page -1"),
    pytest.param({"page": "x"}, ["page"], id="page 'x'"),
    pytest.param({"per_page": 0}, ["per_page"], id="per_page 0"),
    pytest.param({"per_page": 101}, ["per_page"], id="per_page 101"),
    pytest.param({"per_page": Decimal("1.5")}, ["per_page"], id="per_page 1.5"),
    pytest.param({"limit": 10}, ["limit"], id="unknown field"),
]


@pytest.mark.parametrize(("body", "loc"), LIST_REFUSALS)
def test_list_orders_refusals(body: dict[str, Any], loc: Loc) -> None:
    assert_refused(ListOrders, body, loc)


# -- OrderStatsQuery -------------------------------------------------------------------


def test_stats_takes_the_list_filters() -> None:
    query = parse(
        OrderStatsQuery,
        {
            "customer_id": "CUST-12345",
            "user_id": "USER-7",
            "status": "completed",
            "active_only": False,
            "search": "doe",
            "date_from": "2025-11-01",
            "date_to": "2025-11-06",
        },
    )

    assert query.status == [OrderStatus.COMPLETED]
    assert (query.date_from, query.date_to) == (date(2025, 11, 1), date(2025, 11, 6))


def test_stats_with_no_filter() -> None:
    assert parse(OrderStatsQuery, {}).status is None


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        pytest.param({"page": 1}, ["page"], id="page"),
        pytest.param({"per_page": 15}, ["per_page"], id="per_page"),
        pytest.param({"order_by": "total"}, ["order_by"], id="order_by"),
        pytest.param({"order_direction": "asc"}, ["order_direction"], id="order_direction"),
        pytest.param({"status": "shipped"}, ["status", 0], id="unknown status"),
        pytest.param({"active_only": "yes"}, ["active_only"], id="active_only 'yes'"),
        pytest.param({"search": ""}, ["search"], id="empty search"),
        pytest.param({"date_from": "2025/11/06"}, ["date_from"], id="date with slashes"),
        pytest.param({"date_from": "2025-11-07", "date_to": "2025-11-06"}, [], id="from > to"),
        pytest.param({"customer_id": OPERATOR}, ["customer_id"], id="operator customer_id"),
    ],
)
def test_stats_refusals(body: dict[str, Any], loc: Loc) -> None:
    assert_refused(OrderStatsQuery, body, loc)
