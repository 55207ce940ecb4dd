"""Field types shared by the wire models: money, metadata, short texts."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints

from orders_vocabulary.money import CURRENCY_SYMBOLS, MoneyError, to_money
from orders_vocabulary.statuses import OrderStatus

_DECIMAL_TEXT = re.compile(r"^[+-]?\d{1,20}(\.\d{1,20})?$")
_INT64 = 2**63
MAX_METADATA_DEPTH = 16


def _money(value: object) -> Decimal:
    if isinstance(value, bool):
        raise ValueError("amount must be a number or a decimal string")  # noqa: TRY004
    if isinstance(value, str):
        if not _DECIMAL_TEXT.match(value.strip()):
            raise ValueError("amount must be a decimal such as 150.00")
        return to_money(value.strip())
    if isinstance(value, float):
        return to_money(repr(value))
    if isinstance(value, int | Decimal):
        return to_money(value)
    raise ValueError("amount must be a number or a decimal string")


def _money_or_error(value: object) -> Decimal:
    try:
        return _money(value)
    except MoneyError as exc:
        raise ValueError(str(exc)) from exc


Money = Annotated[
    Decimal,
    BeforeValidator(_money_or_error),
    Field(
        description="Exact amount: a JSON number or a decimal string, at most two decimals, >= 0.",
        examples=["150.00"],
    ),
]


def _check_value(value: Any, path: str, depth: int) -> None:
    if depth > MAX_METADATA_DEPTH:
        raise ValueError(f"metadata nested deeper than {MAX_METADATA_DEPTH} levels at {path}")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or key.startswith("$") or "." in key or "\x00" in key:
                raise ValueError(
                    f"metadata key {key!r} at {path} must not start with '$' or contain '.'"
                )
            _check_value(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_value(item, f"{path}[{index}]", depth + 1)
    else:
        _check_scalar(value, path)


def _check_scalar(value: Any, path: str) -> None:
    """A JSON scalar that BSON stores exactly: int64, Decimal128, text, bool or null."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise ValueError(f"metadata integer at {path} is out of the 64-bit range")
        return
    if not isinstance(value, Decimal | float):
        raise ValueError(f"metadata value at {path} is not JSON")  # noqa: TRY004
    number = Decimal(repr(value)) if isinstance(value, float) else value
    digits, exponent = number.as_tuple().digits, number.as_tuple().exponent
    if not isinstance(exponent, int) or len(digits) > 34 or not -6143 <= exponent <= 6111:
        raise ValueError(f"metadata number at {path} is not representable exactly")


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    _check_value(value, "metadata", 1)
    return value


Metadata = Annotated[
    dict[str, Any],
    AfterValidator(_metadata),
    Field(
        description="Free JSON object; keys must not start with '$' or contain '.'.",
        examples=[{"source": "webform", "campaign_id": "SUMMER2025"}],
    ),
]


def _currency(value: str) -> str:
    code = value.upper()
    if code not in CURRENCY_SYMBOLS:
        raise ValueError(f"unsupported currency; one of {', '.join(sorted(CURRENCY_SYMBOLS))}")
    return code


Currency = Annotated[
    str,
    StringConstraints(min_length=3, max_length=3),
    AfterValidator(_currency),
    Field(description="ISO 4217 code.", examples=["EUR"]),
]

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
Reference = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
Notes = Annotated[str, StringConstraints(max_length=5000)]
DatabaseId = Annotated[
    int, Field(strict=True, ge=1, le=2**62, description="Database id.", examples=[3])
]
PublicOrderId = Annotated[
    int, Field(strict=True, ge=1, le=2**62, description="Public order number.", examples=[421409])
]
Status = Annotated[
    OrderStatus, Field(description="One of the eight order statuses.", examples=["pending"])
]
