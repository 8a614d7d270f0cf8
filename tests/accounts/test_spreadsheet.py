from decimal import Decimal

from accounts.spreadsheet import safe_cell


def test_text_that_a_spreadsheet_would_take_for_a_formula_gets_a_quote():
    assert [safe_cell(t) for t in ("=SUM(A1)", "+1", "-x", "@A", "\tx", "\rx")] == [
        "'=SUM(A1)",
        "'+1",
        "'-x",
        "'@A",
        "'\tx",
        "'\rx",
    ]


def test_plain_text_numbers_and_negative_amounts_stay_as_they_are():
    assert safe_cell("Doe^Jane") == "Doe^Jane"
    assert safe_cell(Decimal("-12.50")) == Decimal("-12.50")
    assert safe_cell(-3) == -3
    assert safe_cell("") == ""
