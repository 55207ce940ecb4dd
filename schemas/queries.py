"""Queries: `orders.get`, `orders.list`, `orders.stats`, `orders.statuses`."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Literal

from pydantic import BeforeValidator, ConfigDict, Field, StringConstraints, model_validator

from schemas.commands import Contract
from schemas.types import DatabaseId, PublicOrderId, Reference, Status


class ListStatuses(Contract):
    """The eight statuses, in order (routing key `orders.statuses`): `{}` or an empty body."""


class GetOrder(Contract):
    """Fetch one order by database `id` or public `order_id`."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"id": 3}, {"order_id": 421409}]})

    id: DatabaseId | None = Field(
        default=None, description="Database id (give this or order_id).", examples=[3]
    )
    order_id: PublicOrderId | None = Field(
        default=None, description="Public order number (give this or id).", examples=[421409]
    )

    @model_validator(mode="after")
    def _one_key(self) -> GetOrder:
        if (self.id is None) == (self.order_id is None):
            raise ValueError("give exactly one of id or order_id")
        return self


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _iso_date(value: object) -> date:
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _DAY.fullmatch(value):
        raise ValueError("expected a date as YYYY-MM-DD")
    return date.fromisoformat(value)


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")

Day = Annotated[
    date,
    BeforeValidator(_iso_date),
    Field(description="YYYY-MM-DD, UTC, inclusive.", examples=["2025-11-06"]),
]

OrderBy = Literal["created_at", "updated_at", "total", "order_id", "id", "status", "customer_id"]


class OrderFilters(Contract):
    """Filters shared by `orders.list` and `orders.stats`."""

    customer_id: Reference | None = Field(
        default=None, description="Orders of this customer only.", examples=["CUST-12345"]
    )
    user_id: Reference | None = Field(
        default=None, description="Orders placed by this userhub user only.", examples=["USER-789"]
    )
    status: Annotated[list[Status], BeforeValidator(_as_list), Field(min_length=1)] | None = Field(
        default=None, description="A status or a list of statuses.", examples=[["pending"]]
    )
    active_only: bool = Field(
        default=False,
        strict=True,
        description="Exclude completed, cancelled and refunded.",
        examples=[True],
    )
    search: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None,
        description="Literal, case-insensitive substring of customer_id, billing names, email, "
        "phone; a number also matches order_id or id exactly.",
        examples=["doe"],
    )
    date_from: Day | None = Field(
        default=None,
        description="Created on or after this day (YYYY-MM-DD, UTC).",
        examples=["2025-11-01"],
    )
    date_to: Day | None = Field(
        default=None,
        description="Created on or before this day (YYYY-MM-DD, UTC, inclusive).",
        examples=["2025-11-30"],
    )

    @model_validator(mode="after")
    def _ordered_dates(self) -> OrderFilters:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError("date_from must not be after date_to")
        return self


class ListOrders(OrderFilters):
    """A page of orders (routing key `orders.list`)."""

    order_by: OrderBy = Field(
        default="created_at", description="The sort field.", examples=["created_at"]
    )
    order_direction: Literal["asc", "desc"] = Field(
        default="desc", description="The sort direction.", examples=["desc"]
    )
    page: int = Field(default=1, ge=1, le=1_000_000, description="From 1.", examples=[1])
    per_page: int = Field(
        default=15, ge=1, le=100, description="Orders per page, 1 to 100.", examples=[15]
    )
    cursor: Annotated[str, StringConstraints(max_length=1000)] | None = Field(
        default=None,
        description='Keyset paging: "" for the first page, then the `pagination.next_cursor` of '
        "the previous reply (same filters and sort). Deep pages cost what the first page "
        "costs; `page` is not used. Cursors are opaque and signed: one the service did not "
        "issue for this query is a `validation_error`.",
        examples=[""],
    )


class OrderStatsQuery(OrderFilters):
    """Counts and revenue over the filtered orders (routing key `orders.stats`)."""
