import datetime as dt

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from accounts import audit
from accounts.permissions import capability_required
from accounts.roles import Capability
from accounts.scoping import facility_ids_for
from pacs import selectors as pacs_selectors
from ris import selectors, services
from ris.models import Order, Patient


@require_GET
@capability_required(Capability.VIEW_PATIENTS)
def patient_list(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "")
    patients = selectors.patient_search(user=request.user, query=query).select_related("facility")
    page = Paginator(patients, 50).get_page(request.GET.get("page"))
    audit.record_list(request, objects=list(page), object_type="patient", query={"q": query})
    return render(request, "ris/patient_list.html", {"page": page, "query": query})


@require_GET
@capability_required(Capability.VIEW_PATIENTS)
def patient_detail(request: HttpRequest, pk: int) -> HttpResponse:
    patient = get_object_or_404(
        Patient.objects.visible_to(request.user, Capability.VIEW_PATIENTS).select_related(
            "facility"
        ),
        pk=pk,
    )
    orders = patient.orders.select_related("procedure").order_by("-created_at")
    audit.record_request(request, action=audit.Action.VIEW, obj=patient)
    return render(request, "ris/patient_detail.html", {"patient": patient, "orders": orders})


@require_GET
@capability_required(Capability.VIEW_ORDERS)
def order_list(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status", "")
    if status not in Order.Status.values:
        status = ""
    page = Paginator(selectors.order_list(user=request.user, status=status), 50).get_page(
        request.GET.get("page")
    )
    audit.record_list(request, objects=list(page), object_type="order", query={"status": status})
    return render(
        request,
        "ris/order_list.html",
        {"page": page, "status": status, "statuses": Order.Status.choices},
    )


@require_GET
@capability_required(Capability.VIEW_ORDERS)
def order_detail(request: HttpRequest, pk: int) -> HttpResponse:
    order = get_object_or_404(
        selectors.order_list(user=request.user).prefetch_related(
            "appointments__room", "status_changes__user"
        ),
        pk=pk,
    )
    audit.record_request(request, action=audit.Action.VIEW, obj=order)
    studies = pacs_selectors.studies_visible_to(request.user).filter(order=order)
    return render(request, "ris/order_detail.html", {"order": order, "studies": studies})


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
@capability_required(Capability.READ_STUDIES)
def reading_list(request: HttpRequest) -> HttpResponse:
    orders = list(selectors.reading_list(user=request.user)[:200])
    audit.record_list(request, objects=orders, object_type="order", query={"list": "reading"})
    return render(request, "ris/reading_list.html", {"orders": orders})


@require_GET
@capability_required(Capability.VIEW_SCHEDULE)
def appointment_letter(request: HttpRequest, pk: int) -> HttpResponse:
    """The letter the patient takes home: when, where, and how to prepare."""
    appointment = get_object_or_404(selectors.schedule_appointments(user=request.user), pk=pk)
    audit.record_request(request, action=audit.Action.VIEW, obj=appointment)
    return render(request, "ris/appointment_letter.html", {"appointment": appointment})
