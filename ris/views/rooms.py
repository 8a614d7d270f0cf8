"""A facility administrator's room pages: rooms as schedulable resources, their weekly
hours and closures. Every page and POST needs MANAGE_FACILITY at the room's facility;
another facility's room is a 404. Every write is one service call."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import audit
from accounts.permissions import capability_required
from accounts.roles import Capability
from accounts.scoping import facility_ids_for
from ris import selectors, services
from ris.models import Room, RoomClosure
from ris.patient_forms import formset_rows
from ris.room_forms import ClosureForm, HoursFormSet, RoomCreateForm, RoomForm, hours_initial


@require_GET
@capability_required(Capability.MANAGE_FACILITY)
def room_list(request: HttpRequest) -> HttpResponse:
    rooms = list(selectors.managed_rooms(user=request.user))
    hours = selectors.room_hours(rooms=rooms)
    closures = selectors.next_closures(rooms=rooms)
    rows = [
        {
            "room": room,
            "hours": selectors.hours_summary(hours.get(room.pk)),
            "closure": closures.get(room.pk),
        }
        for room in rooms
    ]
    facilities = {room.facility_id for room in rooms}
    return render(request, "ris/room_list.html", {"rows": rows, "many": len(facilities) > 1})


@require_http_methods(["GET", "POST"])
@capability_required(Capability.MANAGE_FACILITY)
def room_create(request: HttpRequest) -> HttpResponse:
    facilities = selectors.managed_facilities(user=request.user)
    data = request.POST if request.method == "POST" else None
    form = RoomCreateForm(
        data,
        facilities=facilities,
        procedures=selectors.room_procedure_choices(facilities=facilities),
        initial={"is_active": True},
    )
    hours = HoursFormSet(data, prefix="hours")
    if data is not None and form.is_valid() and hours.is_valid():
        try:
            room = services.room_save(
                **form.cleaned_data, hours=formset_rows(hours), actor=request.user
            )
        except services.RisError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"{room.name} added.")
            return redirect("ris:room_edit", pk=room.pk)
    status = 400 if data is not None else 200
    return _room_page(request, None, form=form, hours=hours, status=status)


@require_http_methods(["GET", "POST"])
@capability_required(Capability.MANAGE_FACILITY)
def room_edit(request: HttpRequest, pk: int) -> HttpResponse:
    room = _managed_room(request, pk)
    data = request.POST if request.method == "POST" else None
    form = RoomForm(
        data,
        instance=room,
        procedures=selectors.room_procedure_choices(facilities=[room.facility], room=room),
    )
    # Posted rows replace the room's hours whole: compared with no initial rows, a row
    # left blank is one more blank row, not a row whose times were erased.
    hours = HoursFormSet(data, prefix="hours", initial=None if data else hours_initial(room))
    if data is not None and form.is_valid() and hours.is_valid():
        try:
            services.room_save(
                room=room,
                facility=room.facility,
                **form.cleaned_data,
                hours=formset_rows(hours),
                actor=request.user,
            )
        except services.RisError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"{form.cleaned_data['name']} saved.")
            return redirect("ris:room_edit", pk=room.pk)
    status = 400 if data is not None else 200
    return _room_page(request, room, form=form, hours=hours, status=status)


@require_POST
@capability_required(Capability.MANAGE_FACILITY)
def room_closure_add(request: HttpRequest, pk: int) -> HttpResponse:
    """Close the room for a while. Appointments already booked then stay: the page then
    lists them under the closure, with links to move them."""
    room = _managed_room(request, pk)
    closure_form = ClosureForm(request.POST)
    if closure_form.is_valid():
        try:
            _, affected = services.room_closure_add(
                room=room, **closure_form.cleaned_data, actor=request.user
            )
        except services.RisError as error:
            closure_form.add_error(None, str(error))
        else:
            if affected:
                messages.warning(
                    request,
                    f"Closure saved, but {len(affected)} appointment(s) fall in it: "
                    "move them (listed under the closure).",
                )
            else:
                messages.success(request, "Closure saved; no appointment falls in it.")
            return redirect(f"{reverse('ris:room_edit', args=[room.pk])}#closures")
    form = RoomForm(
        instance=room,
        procedures=selectors.room_procedure_choices(facilities=[room.facility], room=room),
    )
    hours = HoursFormSet(prefix="hours", initial=hours_initial(room))
    return _room_page(request, room, form=form, hours=hours, closure_form=closure_form, status=400)


@require_POST
@capability_required(Capability.MANAGE_FACILITY)
def room_closure_remove(request: HttpRequest, pk: int, closure_pk: int) -> HttpResponse:
    room = _managed_room(request, pk)
    closure = get_object_or_404(RoomClosure.objects.filter(room=room), pk=closure_pk)
    services.room_closure_remove(closure=closure, actor=request.user)
    messages.success(request, f"Closure from {closure.starts_at:%Y-%m-%d %H:%M} removed.")
    return redirect(f"{reverse('ris:room_edit', args=[room.pk])}#closures")


def _managed_room(request: HttpRequest, pk: int) -> Room:
    return get_object_or_404(selectors.managed_rooms(user=request.user), pk=pk)


def _room_page(
    request: HttpRequest,
    room: Room | None,
    *,
    form: RoomForm,
    hours: Any,
    closure_form: ClosureForm | None = None,
    status: int = 200,
) -> HttpResponse:
    """The room's form and, for a saved room, its closures with the live appointments
    falling in each (whose patients are shown: that read is audited)."""
    context: dict[str, Any] = {"room": room, "form": form, "hours": hours}
    if room is not None:
        coming, past = selectors.room_closure_list(room=room)
        affected = selectors.closures_appointments(room=room, closures=coming)
        shown = [a for appointments in affected.values() for a in appointments]
        if shown:
            audit.record_list(
                request,
                objects=list({a.pk: a for a in shown}.values()),
                object_type="appointment",
                query={"room_closures": room.pk},
            )
        context |= {
            "closures": [(c, affected.get(c.pk, [])) for c in coming],
            "past_closures": past,
            "closure_form": closure_form or ClosureForm(),
            "can_move": room.facility_id
            in facility_ids_for(request.user, Capability.EDIT_SCHEDULE),
        }
    return render(request, "ris/room_form.html", context, status=status)
