"""HL7 v2 data types read into Python values: DT and DTM/TS (HL7 v2.5.1 2.A.21, 2.A.22,
2.A.77), the degree of precision the sender chose kept as far as Python can.

Django stays out, like the rest of the protocol code; a bad value raises Hl7Error with
error code 102 (data type error) and the field's location, so the sender's ACK says which.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ris.hl7.parse import DATA_TYPE_ERROR, Hl7Error

# YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]
_DTM = re.compile(
    r"^(?P<year>\d{4})(?P<month>\d{2})?(?P<day>\d{2})?"
    r"(?P<hour>\d{2})?(?P<minute>\d{2})?(?P<second>\d{2})?(?:\.(?P<fraction>\d{1,4}))?"
    r"(?P<offset>[+-]\d{4})?$"
)


def _bad(text: str, kind: str, location: str) -> Hl7Error:
    where = f" ({location})" if location else ""
    return Hl7Error(
        f"{text!r}{where} is not a valid HL7 {kind}.",
        location=location,
        error_code=DATA_TYPE_ERROR,
    )


def _parts(text: str, kind: str, location: str) -> tuple[re.Match[str], dt.datetime]:
    match = _DTM.match(text.strip())
    if match is None:
        raise _bad(text, kind, location)
    fields = match.groupdict()
    # Components left out are the start of the period: 2024 is 2024-01-01 00:00.
    try:
        value = dt.datetime(
            int(fields["year"]),
            int(fields["month"] or 1),
            int(fields["day"] or 1),
            int(fields["hour"] or 0),
            int(fields["minute"] or 0),
            int(fields["second"] or 0),
            int((fields["fraction"] or "0").ljust(6, "0")),
        )
    except ValueError as error:
        raise _bad(text, kind, location) from error
    return match, value


def hl7_date(text: str, *, location: str = "") -> dt.date | None:
    """A DT (or the date of a DTM, as v2.3 PID-7 senders send it): YYYY[MM[DD]]; None
    for "". A date given to the year or month is its first day (a birth date known
    only to the year is, in a DateField, the 1st of January of it). A time or offset
    after the date is ignored: a birth date is the date as written, wherever read."""
    if not text.strip():
        return None
    _, value = _parts(text, "date (YYYY[MM[DD]])", location)
    return value.date()


def hl7_datetime(
    text: str, tz: str | dt.tzinfo = "UTC", *, location: str = ""
) -> dt.datetime | None:
    """A DTM/TS, YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ], as an aware datetime;
    None for "". Without an offset the time is local to `tz` (the facility's time zone,
    as HL7 v2.5.1 2.A.22 leaves it to the receiver's site)."""
    if not text.strip():
        return None
    kind = "date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])"
    match, value = _parts(text, kind, location)
    offset = match.group("offset")
    if offset:
        hours, minutes = int(offset[1:3]), int(offset[3:5])
        if hours > 14 or minutes > 59:
            raise _bad(text, kind, location)
        delta = dt.timedelta(hours=hours, minutes=minutes)
        return value.replace(tzinfo=dt.timezone(-delta if offset[0] == "-" else delta))
    return value.replace(tzinfo=zone(tz))


def zone(tz: str | dt.tzinfo) -> dt.tzinfo:
    """A time zone by IANA name; UTC for a name this machine does not know."""
    if isinstance(tz, dt.tzinfo):
        return tz
    try:
        return ZoneInfo(tz or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC
