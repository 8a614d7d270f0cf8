"""The calendar grid of the schedule pages: which cell of which row shows what.

Pure layout, no queries: the caller passes each column's opening hours, closures and
appointments. Rows are ROW_MINUTES long; a cell spans rows with an HTML `rowspan`,
because the Content-Security-Policy forbids inline styles (so no per-block
`grid-row` style), and a rowspan needs neither JavaScript nor a class per row number.
Times are the facility's local wall clock (settings.TIME_ZONE), as in ris.scheduling.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.utils import timezone

from ris.models import Appointment, RoomClosure

ROW_MINUTES = 5
QUARTER = 15
DEFAULT_HOURS = (7 * 60, 19 * 60)
DAY_MINUTES = 24 * 60
MINUTE = dt.timedelta(minutes=1)

Hours = list[tuple[dt.time, dt.time]]


@dataclass
class ColumnSpec:
    """What one column shows. `hours` None: the room has no opening hours at all, so it
    takes bookings at any time and is shaded open all day."""

    day: dt.date
    hours: Hours | None
    closures: Sequence[RoomClosure] = ()
    appointments: Sequence[Appointment] = ()


@dataclass
class Cell:
    kind: str  # "appointment", "closure", "open" or "closed"
    rowspan: int
    line: str = ""  # "hour" or "quarter": the cell starts on that boundary
    appointment: Appointment | None = None
    closure: RoomClosure | None = None
    time: str = ""  # "09:00-09:20", with an en dash
    short: bool = False  # under a quarter of an hour tall: one line of text
    in_closure: bool = False  # booked before the room was closed: needs moving
    links: dict[str, str] = field(default_factory=dict)  # action URLs, set by the page


@dataclass
class Row:
    label: str  # "09:15" on quarter rows, else ""
    line: str
    cells: list[Cell] = field(default_factory=list)


@dataclass
class Grid:
    first_minute: int
    last_minute: int
    rows: list[Row]
    # Appointments that found no row (only when rounding to ROW_MINUTES piles several
    # into the last row of the day): listed under the grid, never dropped.
    unplaced: list[Appointment] = field(default_factory=list)


def _minute(local: dt.datetime, day: dt.date) -> int:
    """Minutes of a local time from the midnight starting `day`, clamped to that day."""
    minutes = (local.replace(tzinfo=None) - dt.datetime.combine(day, dt.time.min)) // MINUTE
    return min(max(minutes, 0), DAY_MINUTES)


def time_range(columns: Sequence[ColumnSpec]) -> tuple[int, int]:
    """From the earliest opening to the latest closing (whole hours), widened to show
    every appointment; 07:00-19:00 when nothing is open."""
    starts, ends = [], []
    for column in columns:
        for opens, closes in column.hours or ():
            starts.append(opens.hour * 60 + opens.minute)
            ends.append(closes.hour * 60 + closes.minute)
    first, last = (min(starts), max(ends)) if starts else DEFAULT_HOURS
    tz = timezone.get_current_timezone()
    for column in columns:
        for appointment in column.appointments:
            first = min(first, _minute(appointment.starts_at.astimezone(tz), column.day))
            last = max(last, _minute(appointment.ends_at.astimezone(tz), column.day))
    first = first // 60 * 60
    last = min(-(-last // 60) * 60, DAY_MINUTES)
    return first, max(last, first + 60)


def _line(minute: int) -> str:
    if minute % 60 == 0:
        return "hour"
    return "quarter" if minute % QUARTER == 0 else ""


def _column_cells(column: ColumnSpec, first: int, count: int) -> tuple[list, list]:
    """(start row, Cell) pairs covering every row of the column once, and the
    appointments that could not be placed."""
    minute_of = [first + r * ROW_MINUTES for r in range(count)]
    if column.hours is None:
        is_open = [True] * count
    else:
        spans = [(o.hour * 60 + o.minute, c.hour * 60 + c.minute) for o, c in column.hours]
        is_open = [any(o <= m < c for o, c in spans) for m in minute_of]

    # Which closure or appointment holds each row; appointments win over closures.
    tz = timezone.get_current_timezone()
    owner: list[RoomClosure | Cell | None] = [None] * count
    for closure in column.closures:
        start = (_minute(closure.starts_at.astimezone(tz), column.day) - first) // ROW_MINUTES
        end = -(-(_minute(closure.ends_at.astimezone(tz), column.day) - first) // ROW_MINUTES)
        for r in range(max(start, 0), min(end, count)):
            owner[r] = closure

    unplaced: list[Appointment] = []
    taken_until = 0
    for appointment in sorted(column.appointments, key=lambda a: a.starts_at):
        local_start = appointment.starts_at.astimezone(tz)
        local_end = appointment.ends_at.astimezone(tz)
        start = max((_minute(local_start, column.day) - first) // ROW_MINUTES, 0)
        start = max(start, taken_until)
        if start >= count:
            unplaced.append(appointment)
            continue
        end = -(-(_minute(local_end, column.day) - first) // ROW_MINUTES)
        end = min(max(end, start + 1), count)
        cell = Cell(
            "appointment",
            0,
            appointment=appointment,
            time=f"{local_start:%H:%M}\u2013{local_end:%H:%M}",
            short=end - start < QUARTER // ROW_MINUTES,
        )
        for r in range(start, end):
            if isinstance(owner[r], RoomClosure):
                cell.in_closure = True
            owner[r] = cell
        taken_until = end

    # Runs of rows with one owner become one cell; free time breaks at every quarter,
    # so the quarter-hour lines run across the free cells.
    placed: list[tuple[int, Cell]] = []
    previous: tuple = ()
    current = Cell("closed", 0)
    for r, held in enumerate(owner):
        line = _line(minute_of[r])
        if held is None:
            kind = "open" if is_open[r] else "closed"
            key: tuple = (kind,)
            if key != previous or line:
                current = Cell(kind, 0, line=line)
                placed.append((r, current))
        elif isinstance(held, Cell):
            key = ("appointment", id(held))
            if key != previous:
                current = held
                current.line = line
                placed.append((r, current))
        else:
            key = ("closure", id(held))
            if key != previous:
                current = Cell("closure", 0, line=line, closure=held)
                placed.append((r, current))
        current.rowspan += 1
        previous = key
    return placed, unplaced


def grid(columns: Sequence[ColumnSpec]) -> Grid:
    """Rows of a table: each row holds the cells that start in it, column by column,
    so the browser's table layout puts every cell in its column."""
    first, last = time_range(columns)
    count = (last - first) // ROW_MINUTES
    rows = []
    for r in range(count):
        minute = first + r * ROW_MINUTES
        label = f"{minute // 60:02d}:{minute % 60:02d}" if minute % QUARTER == 0 else ""
        rows.append(Row(label=label, line=_line(minute)))
    unplaced: list[Appointment] = []
    for column in columns:
        placed, lost = _column_cells(column, first, count)
        unplaced += lost
        for r, cell in placed:
            rows[r].cells.append(cell)
    return Grid(first_minute=first, last_minute=last, rows=rows, unplaced=unplaced)
