"""Structural checks of a message against the HL7 v2 standard's message structures, by
hl7apy: for people reading the message log, never for accepting or refusing a message.

hl7apy is strict and has false positives (fields our senders leave empty that its tables
call required, versions it does not know), so what it finds is shown as warnings beside
the message; the listener decides on its own, cheaper checks (`services._check`).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from hl7apy.validation import Validator

# Enough to see what is wrong; a badly broken message could list hundreds.
MAX_WARNINGS = 30
# hl7apy takes ~0.2 s for a 20 kB result; a page does not wait on a multi-megabyte one.
MAX_CHECKED_CHARS = 100_000


def structure_warnings(text: str) -> list[str]:
    """What hl7apy finds wrong with the message: the first problem that stops its parser,
    or every problem of the parsed structure (missing, unexpected or repeated segments and
    fields, bad data types). An empty list: nothing found."""
    if len(text) > MAX_CHECKED_CHARS:
        return [f"Not checked: longer than {MAX_CHECKED_CHARS:,} characters."]
    text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    try:
        message = parse_message(text, find_groups=True, validation_level=VALIDATION_LEVEL.STRICT)
    except Exception as error:  # hl7apy raises many kinds, and ValueError on bad values
        return [_describe(error)]
    # Validator.validate raises the first problem only; its report file has them all.
    with tempfile.TemporaryDirectory() as directory:
        report = Path(directory) / "report.txt"
        try:
            Validator.validate(message, report_file=str(report))
        except Exception as error:
            problems = _report_lines(report) or [_describe(error)]
        else:
            problems = _report_lines(report)
    # The same problem in every OBX of a long report is one line, counted.
    counted = Counter(problems)
    problems = [p if counted[p] == 1 else f"{p} ({counted[p]} times)" for p in counted]
    if len(problems) > MAX_WARNINGS:
        hidden = len(problems) - MAX_WARNINGS
        problems = [*problems[:MAX_WARNINGS], f"… and {hidden} more."]
    return problems


def _report_lines(report: Path) -> list[str]:
    if not report.exists():
        return []
    lines = report.read_text(encoding="utf-8", errors="replace").splitlines()
    return [line.removeprefix("Error: ").removeprefix("Warning: ") for line in lines if line]


def _describe(error: Exception) -> str:
    return str(error) or type(error).__name__
