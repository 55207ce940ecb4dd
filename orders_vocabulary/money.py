"""Money: exact decimals with two places, currencies and their symbols."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
MAX_AMOUNT = Decimal("1000000000000")  # one trillion: far inside Decimal128's 34 digits

CURRENCY_SYMBOLS: dict[str, str] = {
    "EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥", "CHF": "CHF", "CAD": "CA$", "AUD": "A$",
    "NZD": "NZ$", "SEK": "kr", "NOK": "kr", "DKK": "kr", "ISK": "kr", "PLN": "zł", "CZK": "Kč",
    "HUF": "Ft", "RON": "lei", "BGN": "лв", "TRY": "₺", "UAH": "₴", "CNY": "CN¥", "HKD": "HK$",
    "SGD": "S$", "INR": "₹", "KRW": "₩", "BRL": "R$", "MXN": "MX$", "ZAR": "R", "ILS": "₪",
    "AED": "AED", "SAR": "SAR", "THB": "฿", "IDR": "Rp", "MYR": "RM", "PHP": "₱", "VND": "₫",
}  # fmt: skip
"""Accepted ISO 4217 codes and the symbol shown beside amounts."""


class MoneyError(ValueError):
    """An amount that is not a finite, non-negative value with at most two decimals."""


def to_money(value: Decimal | int | str) -> Decimal:
    """Read an exact amount; refuse anything that would need rounding.

    `150`, `"150.5"` and `"150.500"` are all 150.50; `"1.005"` is refused.
    """
    try:
        amount = Decimal(value)
    except InvalidOperation as exc:
        raise MoneyError("not a decimal amount") from exc
    if not amount.is_finite():
        raise MoneyError("amount must be finite")
    if amount < 0:
        raise MoneyError("amount must not be negative")
    if amount > MAX_AMOUNT:
        raise MoneyError(f"amount must not exceed {MAX_AMOUNT}")
    cents = amount.quantize(CENT)
    if cents != amount:
        raise MoneyError("amount must have at most two decimals")
    return cents.copy_abs() if cents.is_zero() else cents  # -0.00 reads as 0.00


def round_money(value: Decimal) -> Decimal:
    """Round a computed amount (an average, say) to cents, half up."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def format_money(value: Decimal) -> str:
    """`Decimal("300")` -> `"300.00"`."""
    return f"{value.quantize(CENT):f}"
