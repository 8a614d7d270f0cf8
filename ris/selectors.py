"""Read queries of the RIS, always scoped to the facilities of the asking user."""

from __future__ import annotations

import datetime as dt
import functools
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable

from django.db import connection
from django.db.models import Prefetch, Q, QuerySet
from django.utils import timezone

from accounts.models import Facility, User
from accounts.roles import Capability
from accounts.scoping import facility_ids_for
from config import plain_sql
from ris import scheduling
from ris.models import (
    Appointment,
    Order,
    Patient,
    PatientIdentifier,
    Procedure,
    Room,
    RoomClosure,
    RoomHours,
    overlapping,
)

ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def patient_search(
    *, user: User, query: str = "", include_merged: bool = False
) -> QuerySet[Patient]:
    """Patients matching every word of the query: a name start, the MRN or another
    identifier, a birth date (YYYY-MM-DD). Records merged into another are left out
    unless asked for: their survivor is the one to work on."""
    patients = Patient.objects.visible_to(user, Capability.VIEW_PATIENTS)
    if not include_merged:
        patients = patients.filter(merged_into__isnull=True)
    query = query.strip()
    if not query:
        return patients
    terms = Q()
    for word in query.replace(",", " ").split():
        if ISO_DATE.fullmatch(word):
            try:
                terms &= Q(birth_date=dt.date.fromisoformat(word))
                continue
            except ValueError:
                pass
        terms &= (
            Q(family_name__istartswith=word)
            | Q(given_name__istartswith=word)
            | Q(mrn__iexact=word)
            | Q(pk__in=_holders_of(word))
        )
    # An identifier may hold spaces ("AB 12 34"): the whole query matches it too.
    return patients.filter(terms | Q(pk__in=_holders_of(query)))


def _holders_of(value: str) -> QuerySet[PatientIdentifier]:
    return PatientIdentifier.objects.filter(value__iexact=value).values("patient_id")


def possible_duplicates(
    *,
    facility: Facility,
    family_name: str,
    given_name: str = "",
    birth_date: dt.date | None = None,
    exclude_pk: int | None = None,
    limit: int = 10,
) -> list[Patient]:
    """Registered patients who may be the person being registered, to warn the clerk.

    With a birth date: the same family name, or the same given name and a family name
    starting alike (a typo, a married name), or the two names swapped; a record without
    a birth date counts when both names agree. Without one: both names agree. Names
    compare without case, accents or punctuation (Müller = MULLER, O'Brien = OBrien).
    """
    family, given = name_key(family_name), name_key(given_name)
    if not family:
        return []
    candidates = Patient.objects.filter(facility=facility, merged_into__isnull=True)
    if exclude_pk is not None:
        candidates = candidates.exclude(pk=exclude_pk)
    same_names = Q(family_name__iexact=family_name.strip())
    if birth_date is not None:
        candidates = candidates.filter(
            Q(birth_date=birth_date) | (Q(birth_date__isnull=True) & same_names)
        )
    else:
        candidates = candidates.filter(same_names)

    def alike(patient: Patient) -> bool:
        their_family, their_given = name_key(patient.family_name), name_key(patient.given_name)
        if birth_date is None or patient.birth_date is None:
            return their_family == family and their_given == given
        return (
            their_family == family
            or bool(given and their_given == given and their_family[:3] == family[:3])
            or bool(given and their_family == given and their_given == family)
        )

    rows = candidates.order_by("family_name", "given_name", "id")[:500]
    return [patient for patient in rows if alike(patient)][:limit]


def name_key(name: str) -> str:
    """A name folded for comparison: no accents, case or punctuation."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if c.isalnum()).casefold()


def patient_by_identifier(*, facility: Facility, value: str, issuer: str = "") -> Patient | None:
    """The live patient a Patient ID + issuer names (DICOM, HL7 CX-1 + CX-4): by MRN, else
    by another identifier; a merged record's MRN answers with its survivor."""
    patient = patient_holding(facility=facility, value=value, issuer=issuer)
    if patient is not None and patient.merged_into_id is not None:
        return Patient.objects.get(pk=patient.merged_into_id)
    return patient


def patient_holding(
    *, facility: Facility, value: str, issuer: str = "", lock: bool = False
) -> Patient | None:
    """The record (live or merged) whose MRN is this Patient ID + issuer, else the one
    holding it as another identifier; `lock`: row-locked for the caller's transaction
    (as `select_for_update`), so an update can go on from it without reading it again.

    One plain statement: every HL7 message and every new study asks this, and Django's
    building of the two lookups it replaces cost more than running them.
    """
    issuer = issuer or facility.mrn_issuer
    lock = lock and connection.features.has_select_for_update
    sql = _patient_holding_sql(lock)
    return plain_sql.select_one(Patient, sql, [facility.pk, issuer, value] * 2)


@functools.cache
def _patient_holding_sql(lock: bool) -> str:
    """Names from the models, values as parameters: the MRN's holder ranks first, and
    each half is one unique index's lookup."""
    quote = connection.ops.quote_name
    patients = quote(Patient._meta.db_table)
    identifiers = quote(PatientIdentifier._meta.db_table)
    columns = ", ".join(f"p.{quote(field.column)}" for field in Patient._meta.concrete_fields)
    holder = (
        f"SELECT {columns}, 0 AS by_identifier FROM {patients} p "  # noqa: S608
        "WHERE p.facility_id = %s AND p.mrn_issuer = %s AND p.mrn = %s "
        f"UNION ALL SELECT {columns}, 1 FROM {patients} p "
        f"JOIN {identifiers} i ON i.patient_id = p.id "
        "WHERE i.facility_id = %s AND i.issuer = %s AND i.value = %s "
        "ORDER BY by_identifier LIMIT 1"
    )
    if not lock:
        return holder
    # FOR UPDATE cannot lock the rows of a UNION: lock the one row it names.
    return (
        f"SELECT {columns} FROM {patients} p "  # noqa: S608
        f"WHERE p.id = (SELECT id FROM ({holder}) holders) FOR UPDATE"
    )


PatientKey = tuple[int, str, str]  # facility id, issuer, value: what `patient_holding` takes


def patients_holding(keys: Iterable[PatientKey]) -> dict[PatientKey, Patient]:
    """`patient_holding(lock=True)` for many keys at once, e.g. the patients of an HL7
    worker's batch: the holder of each key that has one, all row-locked by one
    statement (in id order, as any two batches lock them); a patient named by two keys
    is one instance. The issuer must be given (a facility's default already filled in).
    """
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}
    if connection.vendor != "postgresql":  # no arrays: one lookup per key
        facilities = {f.pk: f for f in Facility.objects.filter(pk__in={k[0] for k in keys})}
        found = {
            key: patient_holding(
                facility=facilities[key[0]], value=key[2], issuer=key[1], lock=True
            )
            for key in keys
            if key[0] in facilities
        }
        holders = {key: patient for key, patient in found.items() if patient is not None}
    else:
        columns = list(zip(*keys, strict=True))
        with plain_sql.cursor() as statement:
            statement.execute(_patients_holding_sql(), [list(column) for column in columns])
            rows = statement.fetchall()
        width = len(Patient._meta.concrete_fields)
        holders = {}
        for row in rows:
            holders[(row[width], row[width + 1], row[width + 2])] = plain_sql.instance_of(
                Patient, row
            )
    by_id: dict[int, Patient] = {}
    return {key: by_id.setdefault(patient.pk, patient) for key, patient in holders.items()}


@functools.cache
def _patients_holding_sql() -> str:
    """Each key's holder as `_patient_holding_sql` ranks them (its MRN's record, else the
    record holding it as another identifier), then the rows locked."""
    quote = connection.ops.quote_name
    patients = quote(Patient._meta.db_table)
    identifiers = quote(PatientIdentifier._meta.db_table)
    columns = ", ".join(f"p.{quote(field.column)}" for field in Patient._meta.concrete_fields)
    return (
        "WITH wanted AS (SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[]) "  # noqa: S608
        "AS k(facility_id, issuer, value)), "
        "holders AS ("
        "SELECT k.facility_id, k.issuer, k.value, p.id, 0 AS rank "
        f"FROM wanted k JOIN {patients} p "
        "ON p.facility_id = k.facility_id AND p.mrn_issuer = k.issuer AND p.mrn = k.value "
        "UNION ALL SELECT k.facility_id, k.issuer, k.value, i.patient_id, 1 "
        f"FROM wanted k JOIN {identifiers} i "
        "ON i.facility_id = k.facility_id AND i.issuer = k.issuer AND i.value = k.value), "
        "firsts AS (SELECT DISTINCT ON (facility_id, issuer, value) * FROM holders "
        "ORDER BY facility_id, issuer, value, rank) "
        f"SELECT {columns}, f.facility_id, f.issuer, f.value FROM {patients} p "
        "JOIN firsts f ON f.id = p.id ORDER BY p.id FOR UPDATE OF p"
    )


def order_list(*, user: User, status: str = "") -> QuerySet[Order]:
    orders = Order.objects.visible_to(user, Capability.VIEW_ORDERS).select_related(
        "patient", "procedure", "facility"
    )
    return orders.filter(status=status) if status else orders


def desk_appointments(*, user: User) -> QuerySet[Appointment]:
    """Appointments the user may act on at the desk (check in, move, cancel)."""
    return Appointment.objects.visible_to(user, Capability.EDIT_ORDERS).select_related(
        "order__patient", "room"
    )


def schedule_appointments(*, user: User) -> QuerySet[Appointment]:
    """Appointments of the facilities whose schedule the user may see."""
    return Appointment.objects.visible_to(user, Capability.VIEW_SCHEDULE).select_related(
        "room", "facility", "order__patient", "order__procedure"
    )


def day_schedule(*, user: User, day: dt.date | None = None) -> QuerySet[Appointment]:
    day = day or timezone.localdate()
    start = timezone.make_aware(dt.datetime.combine(day, dt.time.min))
    return (
        Appointment.objects.visible_to(user, Capability.VIEW_SCHEDULE)
        .filter(
            starts_at__gte=start, starts_at__lt=start + dt.timedelta(days=1), is_cancelled=False
        )
        .select_related("room", "order__patient", "order__procedure", "facility")
        .order_by("room__name", "starts_at")
    )


# ----------------------------------------------------------- front-desk schedule pages


def schedule_facilities(*, user: User) -> QuerySet[Facility]:
    return Facility.objects.filter(
        pk__in=facility_ids_for(user, Capability.VIEW_SCHEDULE)
    ).order_by("name")


def schedule_rooms(*, user: User, capability: str = Capability.VIEW_SCHEDULE) -> QuerySet[Room]:
    """Rooms of the facilities where the user holds `capability`, inactive ones included
    (their old bookings stay visible); facility, then name."""
    return (
        Room.objects.visible_to(user, capability)
        .select_related("facility")
        .order_by("facility__name", "name")
    )


def room_hours(*, rooms: Iterable[Room]) -> dict[int, dict[int, list[tuple[dt.time, dt.time]]]]:
    """Opening hours by room id, then weekday. A room missing from the result has no hours
    at all (it takes bookings at any time); one without a weekday is closed that day."""
    hours: dict[int, dict[int, list[tuple[dt.time, dt.time]]]] = {}
    rows = RoomHours.objects.filter(room__in=list(rooms)).values_list(
        "room_id", "weekday", "opens", "closes"
    )
    for room_id, weekday, opens, closes in rows.order_by("room_id", "weekday", "opens"):
        hours.setdefault(room_id, {}).setdefault(weekday, []).append((opens, closes))
    return hours


def room_closures(
    *, rooms: Iterable[Room], first: dt.date, last: dt.date
) -> dict[int, list[RoomClosure]]:
    """Closures overlapping the local days `first` to `last`, by room id."""
    start, end = _day_bounds(first, last)
    closures: dict[int, list[RoomClosure]] = defaultdict(list)
    for closure in RoomClosure.objects.filter(
        room__in=list(rooms), starts_at__lt=end, ends_at__gt=start
    ).order_by("starts_at"):
        closures[closure.room_id].append(closure)
    return closures


# What a calendar block shows: a busy day loads 200 of these, so no more than that.
CALENDAR_FIELDS = (
    "facility",
    "room",
    "order",
    "starts_at",
    "ends_at",
    "is_walk_in",
    "order__status",
    "order__accession_number",
    "order__patient",
    "order__patient__family_name",
    "order__patient__given_name",
    "order__patient__middle_name",
    "order__procedure",
    "order__procedure__name",
)


def calendar_appointments(
    *, user: User, rooms: Iterable[Room], first: dt.date, last: dt.date
) -> list[Appointment]:
    """Live appointments of the rooms overlapping the local days `first` to `last`, with
    everything a calendar block shows fetched in the same query."""
    start, end = _day_bounds(first, last)
    return list(
        Appointment.objects.visible_to(user, Capability.VIEW_SCHEDULE)
        .filter(overlapping(start, end), room__in=list(rooms), is_cancelled=False)
        .select_related("order__patient", "order__procedure")
        .only(*CALENDAR_FIELDS)
        .order_by("starts_at")
    )


def schedule_orders(*, user: User) -> QuerySet[Order]:
    """Orders the user may book or walk in (EDIT_SCHEDULE)."""
    return Order.objects.visible_to(user, Capability.EDIT_SCHEDULE).select_related(
        "patient", "procedure", "facility"
    )


def schedule_desk_appointments(*, user: User) -> QuerySet[Appointment]:
    """Appointments the user may move or cancel (EDIT_SCHEDULE)."""
    return Appointment.objects.visible_to(user, Capability.EDIT_SCHEDULE).select_related(
        "room", "order__patient", "order__procedure", "order__facility"
    )


def slot_suggestions(
    *,
    procedure: Procedure,
    first: dt.date,
    last: dt.date,
    room: Room | None = None,
    limit: int = 60,
) -> list[tuple[dt.date, list[scheduling.Slot]]]:
    """Free slots worth offering, by day: quarter-hour starts and the first start of each
    gap (so a day fills without holes), spread over each day rather than the first hour
    of the first morning; `limit` in all."""
    slots = scheduling.free_slots(procedure, first, last, limit=1_000_000)
    if room is not None:
        slots = [slot for slot in slots if slot.room.pk == room.pk]
    starts = {(slot.room.pk, slot.starts_at) for slot in slots}
    by_day: dict[dt.date, list[scheduling.Slot]] = defaultdict(list)
    for slot in slots:
        local = timezone.localtime(slot.starts_at)
        gap_start = (slot.room.pk, slot.starts_at - scheduling.SLOT_STEP) not in starts
        if local.minute % 15 == 0 or gap_start:
            by_day[local.date()].append(slot)
    per_day = max(limit // max(len(by_day), 1), 6)
    result: list[tuple[dt.date, list[scheduling.Slot]]] = []
    left = limit
    for day in sorted(by_day):
        if left <= 0:
            break
        offered = by_day[day]
        take = min(per_day, left)
        if len(offered) > take:
            step = len(offered) / take
            offered = [offered[int(n * step)] for n in range(take)]
        result.append((day, offered))
        left -= len(offered)
    return result


def procedure_rooms(*, procedure: Procedure) -> QuerySet[Room]:
    """The rooms that can perform the procedure (as ris.scheduling picks them), as a
    queryset a form can choose from; only its facility's."""
    ids = [room.pk for room in scheduling.rooms_for(procedure)]
    return Room.objects.filter(pk__in=ids, facility_id=procedure.facility_id).order_by("name")


def _day_bounds(first: dt.date, last: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = timezone.make_aware(dt.datetime.combine(first, dt.time.min))
    end = timezone.make_aware(dt.datetime.combine(last + dt.timedelta(days=1), dt.time.min))
    return start, end


# ------------------------------------------------------- rooms, for facility administrators


def managed_facilities(*, user: User) -> QuerySet[Facility]:
    """Facilities whose rooms the user sets up (MANAGE_FACILITY)."""
    return Facility.objects.filter(
        pk__in=facility_ids_for(user, Capability.MANAGE_FACILITY)
    ).order_by("name")


def managed_rooms(*, user: User) -> QuerySet[Room]:
    """Rooms the user sets up; another facility's room is not among them (a 404)."""
    return schedule_rooms(user=user, capability=Capability.MANAGE_FACILITY)


def room_procedure_choices(
    *, facilities: Iterable[Facility], room: Room | None = None
) -> QuerySet[Procedure]:
    """Procedures a room may be set to perform: the facilities' active ones, and those it
    already performs (so saving the page does not drop a retired one silently)."""
    offered = Q(facility__in=list(facilities), is_active=True)
    if room is not None:
        offered |= Q(rooms=room)
    return Procedure.objects.filter(offered).distinct().order_by("modality", "name", "code")


def next_closures(
    *, rooms: Iterable[Room], now: dt.datetime | None = None
) -> dict[int, RoomClosure]:
    """Each room's current or next closure, by room id; rooms without one are left out."""
    now = now or timezone.now()
    result: dict[int, RoomClosure] = {}
    for closure in RoomClosure.objects.filter(room__in=list(rooms), ends_at__gt=now).order_by(
        "room_id", "starts_at"
    ):
        result.setdefault(closure.room_id, closure)
    return result


def room_closure_list(
    *, room: Room, now: dt.datetime | None = None, past: int = 10
) -> tuple[list[RoomClosure], list[RoomClosure]]:
    """The room's closures not over yet (soonest first), and the last `past` that are."""
    now = now or timezone.now()
    closures = RoomClosure.objects.filter(room=room)
    coming = list(closures.filter(ends_at__gt=now).order_by("starts_at"))
    over = list(closures.filter(ends_at__lte=now).order_by("-starts_at")[:past])
    return coming, over


def closure_appointments(
    *, room: Room, starts_at: dt.datetime, ends_at: dt.datetime
) -> list[Appointment]:
    """Live appointments of the room overlapping [starts_at, ends_at): the ones to move."""
    return list(
        Appointment.objects.filter(overlapping(starts_at, ends_at), room=room, is_cancelled=False)
        .select_related("order__patient", "order__procedure")
        .order_by("starts_at")
    )


def closures_appointments(
    *, room: Room, closures: Iterable[RoomClosure]
) -> dict[int, list[Appointment]]:
    """Live appointments falling in each closure, by closure id, in one query."""
    closures = list(closures)
    if not closures:
        return {}
    during = Q()
    for closure in closures:
        during |= overlapping(closure.starts_at, closure.ends_at)
    appointments = list(
        Appointment.objects.filter(during, room=room, is_cancelled=False)
        .select_related("order__patient", "order__procedure")
        .order_by("starts_at")
    )
    return {
        closure.pk: [
            a
            for a in appointments
            if a.starts_at < closure.ends_at and a.ends_at > closure.starts_at
        ]
        for closure in closures
    }


EN_DASH = "\N{EN DASH}"
_DAY_ABBREVIATIONS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def hours_summary(by_weekday: dict[int, list[tuple[dt.time, dt.time]]] | None) -> str:
    """A week of opening hours on one line, as "Mon-Fri 07:00-12:30, 13:00-19:00; Sat
    08:00-12:00" (with en dashes). Days with the same hours go together; three days or
    more in a row as a range."""
    if not by_weekday:
        return "No opening hours: bookable at any time, not offered in slot searches"
    groups: dict[tuple[tuple[dt.time, dt.time], ...], list[int]] = {}
    for weekday in sorted(by_weekday):
        groups.setdefault(tuple(sorted(by_weekday[weekday])), []).append(weekday)
    parts = []
    for intervals, days in groups.items():
        times = ", ".join(f"{opens:%H:%M}{EN_DASH}{closes:%H:%M}" for opens, closes in intervals)
        parts.append(f"{_day_ranges(days)} {times}")
    return "; ".join(parts)


def _day_ranges(days: list[int]) -> str:
    """[0, 1, 2, 4, 5] -> "Mon-Wed, Fri, Sat" (en dash)."""
    runs: list[list[int]] = []
    for day in days:
        if runs and day == runs[-1][-1] + 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    names = []
    for run in runs:
        if len(run) >= 3:
            names.append(f"{_DAY_ABBREVIATIONS[run[0]]}{EN_DASH}{_DAY_ABBREVIATIONS[run[-1]]}")
        else:
            names += [_DAY_ABBREVIATIONS[day] for day in run]
    return ", ".join(names)


# ---- Procedure catalogue, for facility administrators ---------------------------------


def managed_procedures(*, user: User) -> QuerySet[Procedure]:
    """Procedures of the facilities the user sets up; another facility's is a 404."""
    return Procedure.objects.visible_to(user, Capability.MANAGE_FACILITY)


def procedure_catalogue(*, user: User, modality: str = "", query: str = "") -> QuerySet[Procedure]:
    """The catalogue page: the user's facilities' procedures matching the modality and a
    code or name fragment, offered ones first, each with the active rooms linked to it
    (as `linked_rooms`: the ones `scheduling.rooms_for` picks when there are any)."""
    procedures = managed_procedures(user=user).select_related("facility")
    if modality:
        procedures = procedures.filter(modality=modality)
    query = query.strip()
    if query:
        procedures = procedures.filter(Q(code__icontains=query) | Q(name__icontains=query))
    rooms = Prefetch(
        "rooms",
        queryset=Room.objects.filter(is_active=True).order_by("name"),
        to_attr="linked_rooms",
    )
    return procedures.prefetch_related(rooms).order_by(
        "-is_active", "facility__name", "modality", "name", "code"
    )


def procedure_room_choices(
    *, facilities: Iterable[Facility], procedure: Procedure | None = None
) -> QuerySet[Room]:
    """Rooms a procedure may be linked to: the facilities' active rooms, and those already
    linked to it (so saving the page does not drop a room out of use silently)."""
    offered = Q(facility__in=list(facilities), is_active=True)
    if procedure is not None:
        offered |= Q(procedures=procedure)
    return (
        Room.objects.filter(offered)
        .distinct()
        .select_related("facility")
        .order_by("facility__name", "modality", "name")
    )


def procedure_code_taken(
    *, facility: Facility, code: str, procedure: Procedure | None = None
) -> bool:
    """Whether another procedure of the facility's catalogue has this code."""
    others = Procedure.objects.filter(facility=facility, code=code)
    if procedure is not None:
        others = others.exclude(pk=procedure.pk)
    return others.exists()


# ---- end procedure catalogue ----------------------------------------------------------
