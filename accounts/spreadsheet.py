"""Text that goes into a CSV or XLSX file someone opens in a spreadsheet."""

from __future__ import annotations

from typing import Any

# A cell starting with one of these is read as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """Text from data that a spreadsheet never takes for a formula: a leading quote
    where it would. Numbers and dates stay as they are."""
    if isinstance(value, str) and value[:1] in FORMULA_STARTS:
        return "'" + value
    return value
