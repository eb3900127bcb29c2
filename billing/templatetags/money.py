"""``{{ cents|money:currency }}``: an amount of money as a person reads it."""

from __future__ import annotations

from django import template

register = template.Library()

SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}
NO_MINOR_UNITS = {"JPY"}


@register.filter
def money(cents: int | None, currency: str = "USD") -> str:
    if cents is None:
        return ""
    code = (currency or "USD").upper()
    amount = f"{cents:,}" if code in NO_MINOR_UNITS else f"{cents / 100:,.2f}"
    symbol = SYMBOLS.get(code)
    return f"{symbol}{amount}" if symbol else f"{amount} {code}"
