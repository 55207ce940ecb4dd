"""Money: exact two-decimal amounts, refused rather than rounded."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orders_vocabulary.money import (
    CURRENCY_SYMBOLS,
    MAX_AMOUNT,
    MoneyError,
    format_money,
    round_money,
    to_money,
)

CENTS = st.integers(min_value=0, max_value=int(MAX_AMOUNT * 100)).map(
    lambda cents: Decimal(cents).scaleb(-2)
)
"""Every amount the service accepts."""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (150, "150.00"),
        (0, "0.00"),
        ("150", "150.00"),
        ("150.5", "150.50"),
        ("150.500", "150.50"),
        ("0.01", "0.01"),
        (Decimal("75.00"), "75.00"),
        (Decimal("1E+2"), "100.00"),
        (MAX_AMOUNT, "1000000000000.00"),
    ],
)
def test_to_money_accepts_exact_amounts(value: Decimal | int | str, expected: str) -> None:
    amount = to_money(value)

    assert amount == Decimal(expected)
    assert str(amount) == expected


@pytest.mark.parametrize(
    "value",
    [
        "1.005",
        Decimal("0.001"),
        "-1",
        -1,
        Decimal("-0.01"),
        "NaN",
        Decimal("NaN"),
        "sNaN",
        "Infinity",
        "-Infinity",
        Decimal("Infinity"),
        MAX_AMOUNT + Decimal("0.01"),
        "1e13",
        "abc",
        "",
        "1,50",
    ],
)
def test_to_money_refuses_what_would_need_rounding_or_is_not_an_amount(
    value: Decimal | int | str,
) -> None:
    with pytest.raises(MoneyError):
        to_money(value)


def test_money_error_is_a_value_error() -> None:
    assert issubclass(MoneyError, ValueError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("300"), "300.00"),
        (Decimal("300.5"), "300.50"),
        (Decimal("0"), "0.00"),
        (Decimal("1E+3"), "1000.00"),
        (Decimal("1000000000000"), "1000000000000.00"),
    ],
)
def test_format_money_gives_two_decimals(value: Decimal, expected: str) -> None:
    assert format_money(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("2.345"), "2.35"),
        (Decimal("2.335"), "2.34"),
        (Decimal("2.344999"), "2.34"),
        (Decimal("0.005"), "0.01"),
        (Decimal("0.004"), "0.00"),
        (Decimal("10"), "10.00"),
        (Decimal("100") / Decimal("3"), "33.33"),
        (Decimal("200") / Decimal("3"), "66.67"),
    ],
)
def test_round_money_rounds_half_up(value: Decimal, expected: str) -> None:
    assert str(round_money(value)) == expected


def test_negative_zero_is_read_as_zero() -> None:
    """CONTRACT.md: `price` >= 0, money shown as a two-decimal string such as "300.00".

    "-0.00" passes the `amount < 0` check unchanged and then shows as "-0.00".
    """
    assert format_money(to_money("-0.00")) == "0.00"
    assert format_money(to_money(Decimal("-0"))) == "0.00"


@given(CENTS)
def test_formatted_money_reads_back_exactly(amount: Decimal) -> None:
    text = format_money(amount)

    assert to_money(text) == amount
    assert text == f"{amount:.2f}"


@given(CENTS, st.integers(min_value=1, max_value=9))
def test_a_third_decimal_is_always_refused(amount: Decimal, digit: int) -> None:
    text = f"{format_money(amount)}{digit}"

    with pytest.raises(MoneyError):
        to_money(text)


def test_every_currency_is_an_iso_code_with_a_symbol() -> None:
    assert CURRENCY_SYMBOLS["EUR"] == "€"
    for code, symbol in CURRENCY_SYMBOLS.items():
        assert len(code) == 3
        assert code.isupper()
        assert symbol
