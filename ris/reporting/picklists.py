"""Pick-lists: the places in a report's text that the radiologist still has to fill in.

Our syntax (not MRRT's; templates typed by hand use it too), one placeholder per line at most
wide, never across lines:

- ``[[Label]]`` is a free field;
- ``[[Label: one | two | three]]`` is a pick-list, its first choice the template's default;
- ``[[one | two]]`` is a pick-list without a label (accepted when typed by hand; `picklist`
  never writes one).

The first ``:`` separates the label from the choices, so a label holds no ``:``; labels and
choices hold no ``[[``, ``]]`` or ``|``. Reading is lenient on purpose: anything between
``[[`` and ``]]`` on one line is a placeholder, however malformed, because `unfilled` is what
stops a report with a blank in it from being signed. Writing (`picklist`) is strict.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# "[[", then anything but a newline, "[[" or "]]", then "]]". The three alternatives of the
# body exclude each other, so the engine never has two ways to match the same text, and a
# failed attempt stops at the next "[[", "]]" or newline: linear time on any input. The
# opening is the last "[[" of a run ("[[[a]]" is "[" and then "[[a]]").
_PLACEHOLDER = re.compile(r"\[\[(?!\[)((?:[^\[\]\n]|\[(?!\[)|\](?!\]))*)\]\]")
_COLON = re.compile(r"\s*:\s*")


@dataclass(frozen=True)
class Picklist:
    """One placeholder found in a text: ``text[start:end]`` is its ``[[...]]``.

    A free field has ``choices == ()``. A hand-typed pick-list without a label has
    ``label == ""``."""

    label: str
    choices: tuple[str, ...]
    start: int
    end: int


def _squash(value: str) -> str:
    return " ".join(value.split())


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(value for value in values if value))


def _parse(body: str) -> tuple[str, tuple[str, ...]]:
    if ":" in body:
        label, _, rest = body.partition(":")
        choices = rest.split("|")
    elif "|" in body:
        label, choices = "", body.split("|")
    else:
        label, choices = body, []
    return _squash(label), _unique(_squash(choice) for choice in choices)


def picklists(text: str) -> list[Picklist]:
    """The placeholders in `text`, in order."""
    found = []
    for match in _PLACEHOLDER.finditer(text):
        label, choices = _parse(match.group(1))
        found.append(Picklist(label, choices, match.start(), match.end()))
    return found


def _clean(value: str) -> str:
    value = value.replace("[", "(").replace("]", ")").replace("|", "/")
    return _squash(value)


def picklist(label: str, choices: Sequence[str] = ()) -> str:
    """Write one placeholder: ``[[Label]]``, or ``[[Label: one | two]]`` with choices.

    Whatever would break the syntax is replaced rather than refused, since labels and
    choices come from imported templates: brackets become parentheses, ``|`` becomes ``/``,
    a ``:`` inside the label becomes `` - `` (a trailing one is dropped: "Lungs:" is the
    label "Lungs"), whitespace is squashed. Empty and repeated choices are dropped.
    Raises ValueError if nothing is left of the label."""
    name = _squash(_COLON.sub(" - ", _clean(label).rstrip(": "))).strip(" -")
    if not name:
        raise ValueError("A pick-list needs a label.")
    options = _unique(_clean(choice) for choice in choices)
    if not options:
        return f"[[{name}]]"
    return f"[[{name}: {' | '.join(options)}]]"


def unfilled(text: str) -> list[str]:
    """The labels of the placeholders still in `text`, each once, in order; empty when the
    text can be signed. A placeholder without a label is named by its own text (e.g.
    "[[left | right]]") so the refusal message still says what to fill in."""
    names = (found.label or text[found.start : found.end] for found in picklists(text))
    return list(dict.fromkeys(names))


def choose(text: str, index: int, value: str) -> str:
    """`text` with its `index`-th placeholder (from 0) replaced by `value`, as the editor
    does in the browser. `value` need not be one of the choices: the radiologist may type
    over a pick-list. Raises IndexError when there is no such placeholder."""
    found = picklists(text)
    if not 0 <= index < len(found):
        raise IndexError(f"There is no placeholder number {index}; the text has {len(found)}.")
    target = found[index]
    return text[: target.start] + value + text[target.end :]
