import datetime as dt

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from accounts import audit
from accounts.permissions import capability_required
from accounts.roles import Capability
from accounts.scoping import facility_ids_for
from ris import selectors, services
from ris.models import Order


@require_GET
@capability_required(Capability.VIEW_SCHEDULE)
def schedule(request: HttpRequest) -> HttpResponse:
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
    return render(
        request,
        "ris/schedule.html",
        {"appointments": appointments, "day": day, "can_check_in": can_check_in},
    )


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
    day = appointment.starts_at.astimezone(timezone.get_current_timezone()).date()
    return redirect(f"{reverse('ris:schedule')}?day={day.isoformat()}")


@require_GET
@capability_required(Capability.VIEW_SCHEDULE)
def appointment_letter(request: HttpRequest, pk: int) -> HttpResponse:
    """The letter the patient takes home: when, where, and how to prepare."""
    appointment = get_object_or_404(selectors.schedule_appointments(user=request.user), pk=pk)
    audit.record_request(request, action=audit.Action.VIEW, obj=appointment)
    return render(request, "ris/appointment_letter.html", {"appointment": appointment})
