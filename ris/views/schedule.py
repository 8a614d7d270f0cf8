"""The front desk's schedule pages: the day and week calendars, today's list, and the
booking, moving, cancelling and walk-in forms. Every write is one service call."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from urllib.parse import urlencode

from django.contrib import messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import audit
from accounts.permissions import capability_required
from accounts.roles import Capability
from accounts.scoping import facility_ids_for
from ris import pdf, schedule_grid, selectors, services
from ris.models import Appointment, Order, Room
from ris.schedule_forms import CancelForm, SlotForm, SlotSearchForm, WalkInForm


@require_GET
@capability_required(Capability.VIEW_SCHEDULE)
def schedule(request: HttpRequest) -> HttpResponse:
    """Today's list with statuses: the table the desk ticks off."""
    try:
        day = dt.date.fromisoformat(request.GET["day"]) if request.GET.get("day") else None
    except ValueError:
        day = None
    appointments = list(selectors.day_schedule(user=request.user, day=day))
    audit.record_list(
        request,
        objects=appointments,
        object_type="appointment",
        query={"day": str(day or "")},
    )
    can_check_in = facility_ids_for(request.user, Capability.EDIT_ORDERS)
    order_url = _url_pattern("ris:order_detail")
    letter_url = _url_pattern("ris:appointment_letter")
    check_in_url = _url_pattern("ris:check_in")
    for appointment in appointments:
        appointment.order_url = order_url.format(appointment.order_id)
        appointment.letter_url = letter_url.format(appointment.pk)
        if (
            appointment.order.status == Order.Status.SCHEDULED
            and appointment.facility_id in can_check_in
        ):
            appointment.check_in_url = check_in_url.format(appointment.pk)
    shown = day or timezone.localdate()
    return render(
        request,
        "ris/schedule.html",
        {
            "appointments": appointments,
            "day": day,
            "can_check_in": can_check_in,
            "day_url": _day_url(shown),
            "week_url": f"{reverse('ris:schedule_week')}?week={shown.isoformat()}",
            "list_url": request.get_full_path(),
        },
    )


@require_GET
@capability_required(Capability.VIEW_SCHEDULE)
def schedule_day(request: HttpRequest) -> HttpResponse:
    """One day as a grid: a column per active room, appointments as blocks. A constant
    number of queries whatever the number of appointments."""
    day = _date_param(request, "day")
    facilities = list(selectors.schedule_facilities(user=request.user))
    facility = None
    if request.GET.get("facility"):
        facility = next((f for f in facilities if str(f.pk) == request.GET["facility"]), None)
        if facility is None:
            raise Http404("No such facility.")
    rooms_query = selectors.schedule_rooms(user=request.user).filter(is_active=True)
    if facility is not None:
        rooms_query = rooms_query.filter(facility=facility)
    rooms = list(rooms_query)
    hours = selectors.room_hours(rooms=rooms)
    closures = selectors.room_closures(rooms=rooms, first=day, last=day)
    appointments = selectors.calendar_appointments(
        user=request.user, rooms=rooms, first=day, last=day
    )
    by_room: dict[int, list[Appointment]] = defaultdict(list)
    for appointment in appointments:
        by_room[appointment.room_id].append(appointment)
    columns = [
        schedule_grid.ColumnSpec(
            day=day,
            hours=_hours_on(hours, room, day),
            closures=closures.get(room.pk, ()),
            appointments=by_room[room.pk],
        )
        for room in rooms
    ]
    audit.record_list(
        request,
        objects=appointments,
        object_type="appointment",
        query={"view": "day", "day": day.isoformat(), "facility": facility.pk if facility else ""},
    )
    several = len({room.facility_id for room in rooms}) > 1
    headers = [
        {
            "title": room.name,
            "subtitle": room.facility.code if several else room.modality,
            "url": _week_url(room, day),
        }
        for room in rooms
    ]
    step = {"facility": facility.pk} if facility else {}
    return render(
        request,
        "ris/schedule_day.html",
        {
            "day": day,
            "today": timezone.localdate(),
            "previous_url": _day_url(day - dt.timedelta(days=1), **step),
            "next_url": _day_url(day + dt.timedelta(days=1), **step),
            "today_url": _day_url(timezone.localdate(), **step),
            "list_url": f"{reverse('ris:schedule')}?day={day.isoformat()}",
            "week_url": _week_url(rooms[0], day) if rooms else reverse("ris:schedule_week"),
            "facilities": facilities,
            "facility": facility,
            "headers": headers,
            **_grid_context(request, columns),
        },
    )


@require_GET
@capability_required(Capability.VIEW_SCHEDULE)
def schedule_week(request: HttpRequest) -> HttpResponse:
    """One room, Monday to Sunday: where is there room this week."""
    picked = _date_param(request, "week")
    monday = picked - dt.timedelta(days=picked.weekday())
    days = [monday + dt.timedelta(days=n) for n in range(7)]
    rooms = list(selectors.schedule_rooms(user=request.user))
    room_id = request.GET.get("room", "")
    if room_id:
        room = next((r for r in rooms if str(r.pk) == room_id), None)
        if room is None:
            raise Http404("No such room.")
    else:
        room = next((r for r in rooms if r.is_active), None)
    context: dict[str, object] = {
        "room": room,
        "rooms": rooms,
        "monday": monday,
        "sunday": days[-1],
        "day_url": _day_url(picked),
        "list_url": f"{reverse('ris:schedule')}?day={picked.isoformat()}",
    }
    if room is None:
        audit.record_list(request, objects=[], object_type="appointment", query={"view": "week"})
        return render(request, "ris/schedule_week.html", context)
    hours = selectors.room_hours(rooms=[room])
    closures = selectors.room_closures(rooms=[room], first=monday, last=days[-1]).get(room.pk, [])
    appointments = selectors.calendar_appointments(
        user=request.user, rooms=[room], first=monday, last=days[-1]
    )
    by_day: dict[dt.date, list[Appointment]] = defaultdict(list)
    for appointment in appointments:
        by_day[timezone.localdate(appointment.starts_at)].append(appointment)
    columns = [
        schedule_grid.ColumnSpec(
            day=day,
            hours=_hours_on(hours, room, day),
            closures=closures,
            appointments=by_day[day],
        )
        for day in days
    ]
    audit.record_list(
        request,
        objects=appointments,
        object_type="appointment",
        query={"view": "week", "room": room.pk, "week": monday.isoformat()},
    )
    context.update(
        headers=[
            {
                "title": f"{day:%a}",
                "subtitle": f"{day:%d %b}",
                "url": _day_url(day, facility=room.facility_id),
                "today": day == timezone.localdate(),
            }
            for day in days
        ],
        previous_url=_week_url(room, monday - dt.timedelta(days=7)),
        next_url=_week_url(room, monday + dt.timedelta(days=7)),
        this_week_url=_week_url(room, timezone.localdate()),
        day_url=_day_url(picked, facility=room.facility_id),
        **_grid_context(request, columns),
    )
    return render(request, "ris/schedule_week.html", context)


@require_http_methods(["GET", "POST"])
@capability_required(Capability.EDIT_SCHEDULE)
def order_book(request: HttpRequest, pk: int) -> HttpResponse:
    """Book a requested exam: pick a suggested free slot, or type a room, day and time."""
    order = get_object_or_404(selectors.schedule_orders(user=request.user), pk=pk)
    rooms = selectors.procedure_rooms(procedure=order.procedure)
    form = SlotForm(_posted(request), rooms=rooms)
    status = 200
    if order.status != Order.Status.REQUESTED:
        refusal = f"This exam is {order.get_status_display().lower()}, not waiting to be booked."
        if request.method == "POST":
            form.add_error(None, refusal)
            status = 400
    elif request.method == "POST":
        if form.is_valid():
            try:
                appointment = services.appointment_book(
                    order=order,
                    room=form.cleaned_data["room"],
                    starts_at=form.cleaned_data["starts_at"],
                    actor=request.user,
                )
            except services.RisError as error:
                form.add_error(None, str(error))
            else:
                messages.success(request, f"Booked {_where_when(appointment)}.")
                return redirect(_appointment_day_url(appointment))
        status = 400
    return _slot_page(request, order=order, rooms=rooms, form=form, status=status)


@require_http_methods(["GET", "POST"])
@capability_required(Capability.EDIT_SCHEDULE)
def appointment_move(request: HttpRequest, pk: int) -> HttpResponse:
    """Move an exam to another slot; the old appointment stays, cancelled and linked."""
    appointment = get_object_or_404(selectors.schedule_desk_appointments(user=request.user), pk=pk)
    order = appointment.order
    rooms = selectors.procedure_rooms(procedure=order.procedure)
    form = SlotForm(_posted(request), rooms=rooms)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                moved = services.appointment_move(
                    appointment=appointment,
                    room=form.cleaned_data["room"],
                    starts_at=form.cleaned_data["starts_at"],
                    actor=request.user,
                    reason=form.cleaned_data["reason"].strip(),
                )
            except services.RisError as error:
                form.add_error(None, str(error))
            else:
                messages.success(request, f"Moved {_where_when(moved)}.")
                return redirect(_appointment_day_url(moved))
        status = 400
    return _slot_page(
        request, order=order, rooms=rooms, form=form, status=status, appointment=appointment
    )


@require_http_methods(["GET", "POST"])
@capability_required(Capability.EDIT_SCHEDULE)
def appointment_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    """Cancel an appointment, with a reason; the exam goes back to be booked, or is
    cancelled too when ticked."""
    appointment = get_object_or_404(selectors.schedule_desk_appointments(user=request.user), pk=pk)
    form = CancelForm(_posted(request))
    status = 200
    if request.method == "POST":
        if form.is_valid():
            cancel_exam = form.cleaned_data["cancel_exam"]
            try:
                services.appointment_cancel(
                    appointment=appointment,
                    reason=form.cleaned_data["reason"],
                    cancel_exam=cancel_exam,
                    actor=request.user,
                )
            except services.RisError as error:
                form.add_error(None, str(error))
            else:
                outcome = "the exam is cancelled" if cancel_exam else "the exam is to be rebooked"
                messages.success(request, f"Cancelled {_where_when(appointment)}; {outcome}.")
                return redirect(_appointment_day_url(appointment))
        status = 400
    audit.record_request(request, action=audit.Action.VIEW, obj=appointment)
    return render(
        request,
        "ris/appointment_cancel.html",
        {"appointment": appointment, "order": appointment.order, "form": form},
        status=status,
    )


@require_POST
@capability_required(Capability.EDIT_SCHEDULE)
def order_walk_in(request: HttpRequest, pk: int) -> HttpResponse:
    """The patient is at the desk without an appointment: the first free room now."""
    order = get_object_or_404(selectors.schedule_orders(user=request.user), pk=pk)
    form = WalkInForm(request.POST, rooms=selectors.procedure_rooms(procedure=order.procedure))
    if not form.is_valid():
        messages.error(request, " ".join(form.errors.get("room", ["Choose a room."])))
        return redirect("ris:order_detail", pk=order.pk)
    try:
        appointment = services.walk_in(
            order=order, room=form.cleaned_data["room"], actor=request.user
        )
    except services.RisError as error:
        messages.error(request, f"{order.patient.display_name}: {error}")
        return redirect("ris:order_detail", pk=order.pk)
    messages.success(request, f"Walk-in: {_where_when(appointment)}, checked in.")
    return redirect(_appointment_day_url(appointment))


@require_POST
@capability_required(Capability.EDIT_ORDERS)
def check_in(request: HttpRequest, pk: int) -> HttpResponse:
    """One click at the desk: the patient of this appointment has arrived."""
    appointment = get_object_or_404(selectors.desk_appointments(user=request.user), pk=pk)
    order = appointment.order
    try:
        services.order_status_set(order=order, status=Order.Status.ARRIVED, actor=request.user)
    except services.RisError as error:
        messages.error(request, f"{order.patient.display_name}: {error}")
    else:
        messages.success(request, f"{order.patient.display_name} checked in.")
    day = timezone.localdate(appointment.starts_at)
    return redirect(_next_or(request, f"{reverse('ris:schedule')}?day={day.isoformat()}"))


@require_GET
@capability_required(Capability.VIEW_SCHEDULE)
def appointment_letter(request: HttpRequest, pk: int) -> HttpResponse:
    """The letter the patient takes home: when, where, and how to prepare."""
    appointment = get_object_or_404(selectors.schedule_appointments(user=request.user), pk=pk)
    audit.record_request(request, action=audit.Action.VIEW, obj=appointment)
    return render(request, "ris/appointment_letter.html", {"appointment": appointment})


@require_GET
@capability_required(Capability.VIEW_SCHEDULE)
def appointment_letter_pdf(request: HttpRequest, pk: int) -> HttpResponse:
    """The same letter as a PDF, to e-mail or print without a browser's headers."""
    appointment = get_object_or_404(selectors.schedule_appointments(user=request.user), pk=pk)
    html = render_to_string("ris/appointment_letter_pdf.html", {"appointment": appointment})
    try:
        document = pdf.html_to_pdf(html)
    except pdf.PdfUnavailable as error:
        return HttpResponse(str(error), status=503, content_type="text/plain")
    audit.record_request(request, action=audit.Action.VIEW, obj=appointment, detail={"pdf": True})
    response = HttpResponse(document, content_type="application/pdf")
    name = f"appointment-{appointment.order.accession_number}.pdf"
    response["Content-Disposition"] = f'inline; filename="{name}"'
    return response


def _slot_page(
    request: HttpRequest,
    *,
    order: Order,
    rooms: QuerySet[Room],
    form: SlotForm,
    status: int,
    appointment: Appointment | None = None,
) -> HttpResponse:
    """The booking and moving page: free slots for the range asked, grouped by day, and
    the manual form. With ?partial=1 only the suggestions, for schedule.js to swap in
    (no patient data in it, so no audit row per change of the range)."""
    search = SlotSearchForm(request.GET, rooms=rooms)
    suggestions = []
    bookable = appointment is None and order.status == Order.Status.REQUESTED
    movable = appointment is not None and not appointment.is_cancelled
    if (bookable or movable) and search.is_valid():
        suggestions = selectors.slot_suggestions(
            procedure=order.procedure,
            first=search.cleaned_data["first"],
            last=search.cleaned_data["last"],
            room=search.cleaned_data["room"],
        )
    context = {
        "order": order,
        "appointment": appointment,
        "form": form,
        "search": search,
        "suggestions": suggestions,
        "can_book": bookable or movable,
    }
    if request.GET.get("partial") == "1":
        return render(request, "ris/book_suggestions.html", context, status=status)
    audit.record_request(request, action=audit.Action.VIEW, obj=appointment or order)
    return render(request, "ris/book.html", context, status=status)


def _grid_context(
    request: HttpRequest, columns: list[schedule_grid.ColumnSpec]
) -> dict[str, object]:
    grid = schedule_grid.grid(columns)
    _link_blocks(
        grid,
        can_edit=facility_ids_for(request.user, Capability.EDIT_SCHEDULE),
        can_check_in=facility_ids_for(request.user, Capability.EDIT_ORDERS),
    )
    return {"grid": grid, "here": request.get_full_path()}


BLOCK_LINKS = {
    "order": "ris:order_detail",
    "check_in": "ris:check_in",
    "move": "ris:appointment_move",
    "cancel": "ris:appointment_cancel",
    "letter": "ris:appointment_letter",
}


def _url_pattern(name: str) -> str:
    """The URL of view `name` for any primary key, as a format string: one reverse() for a
    page that links hundreds of rows."""
    marker = "987654321"
    return reverse(name, args=[int(marker)]).replace(marker, "{}")


def _link_blocks(grid: schedule_grid.Grid, *, can_edit: set[int], can_check_in: set[int]) -> None:
    """The actions each block offers this user, as URLs made from one reverse() per
    action: reversing per block was a third of the time to draw a busy day."""
    patterns = {key: _url_pattern(name) for key, name in BLOCK_LINKS.items()}
    for row in grid.rows:
        for cell in row.cells:
            appointment = cell.appointment
            if appointment is None:
                continue
            pk, status = appointment.pk, appointment.order.status
            links = {
                "order": patterns["order"].format(appointment.order_id),
                "letter": patterns["letter"].format(pk),
            }
            if status == Order.Status.SCHEDULED and appointment.facility_id in can_check_in:
                links["check_in"] = patterns["check_in"].format(pk)
            if appointment.facility_id in can_edit:
                links["cancel"] = patterns["cancel"].format(pk)
                if status in services.MOVABLE_STATUSES:
                    links["move"] = patterns["move"].format(pk)
            cell.links = links


def _posted(request: HttpRequest) -> QueryDict | None:
    """The form data of a POST, even an empty one (so it is checked and answered with
    what is missing); None on GET, for an unbound form."""
    return request.POST if request.method == "POST" else None


def _date_param(request: HttpRequest, name: str) -> dt.date:
    """The date in the query string, else today (with a message when it was not a date)."""
    value = request.GET.get(name, "")
    if value:
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            messages.error(request, f"“{value}” is not a date like 2026-11-30; showing today.")
    return timezone.localdate()


def _hours_on(
    hours: dict[int, dict[int, list[tuple[dt.time, dt.time]]]], room: Room, day: dt.date
) -> list[tuple[dt.time, dt.time]] | None:
    week = hours.get(room.pk)
    return None if week is None else week.get(day.weekday(), [])


def _day_url(day: dt.date, **params: object) -> str:
    return f"{reverse('ris:schedule_day')}?{urlencode({'day': day.isoformat(), **params})}"


def _week_url(room: Room, day: dt.date) -> str:
    query = urlencode({"room": room.pk, "week": day.isoformat()})
    return f"{reverse('ris:schedule_week')}?{query}"


def _appointment_day_url(appointment: Appointment) -> str:
    """The day view of the appointment, scrolled to its block (schedule.js opens it)."""
    day = timezone.localdate(appointment.starts_at)
    return f"{_day_url(day, facility=appointment.facility_id)}#appt-{appointment.pk}"


def _where_when(appointment: Appointment) -> str:
    """Who, where and when, for the desk's messages: "Doe, Jane in CT 1 on Mon 30 Nov..."."""
    local = timezone.localtime(appointment.starts_at)
    patient = appointment.order.patient.display_name
    return f"{patient} in {appointment.room.name} on {local:%a %d %b %Y} at {local:%H:%M}"


def _next_or(request: HttpRequest, fallback: str) -> str:
    """Where the form came from (the day view, the list), if it is one of our pages."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return fallback
