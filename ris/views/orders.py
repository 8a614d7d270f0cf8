from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from accounts import audit
from accounts.permissions import capability_required
from accounts.roles import Capability
from accounts.scoping import facility_ids_for
from pacs import selectors as pacs_selectors
from ris import selectors, services
from ris.models import Order, Patient, Procedure
from ris.order_forms import OrderForm


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
            "appointments__room", "appointments__moved_to__room", "status_changes__user"
        ),
        pk=pk,
    )
    audit.record_request(request, action=audit.Action.VIEW, obj=order)
    studies = pacs_selectors.studies_visible_to(request.user).filter(order=order)
    can_schedule = order.facility_id in facility_ids_for(request.user, Capability.EDIT_SCHEDULE)
    walk_in_rooms = (
        selectors.procedure_rooms(procedure=order.procedure)
        if can_schedule and order.status == Order.Status.REQUESTED
        else []
    )
    return render(
        request,
        "ris/order_detail.html",
        {
            "order": order,
            "studies": studies,
            "can_schedule": can_schedule,
            "walk_in_rooms": walk_in_rooms,
        },
    )


@require_http_methods(["GET", "POST"])
@capability_required(Capability.EDIT_ORDERS)
def order_create(request: HttpRequest, patient_pk: int) -> HttpResponse:
    """A new imaging request for a registered patient; then straight to booking it."""
    patient = get_object_or_404(
        Patient.objects.visible_to(request.user, Capability.EDIT_ORDERS).filter(
            merged_into__isnull=True
        ),
        pk=patient_pk,
    )
    procedures = Procedure.objects.filter(facility=patient.facility, is_active=True)
    form = OrderForm(request.POST or None, procedures=procedures)
    can_schedule = patient.facility_id in facility_ids_for(request.user, Capability.EDIT_SCHEDULE)
    if request.method == "POST" and form.is_valid():
        try:
            order = services.order_create(patient=patient, actor=request.user, **form.cleaned_data)
        except services.RisError as error:
            form.add_error(None, str(error))
        else:
            messages.success(
                request, f"Order {order.accession_number} created: {order.procedure.name}."
            )
            target = "ris:order_book" if can_schedule else "ris:order_detail"
            return redirect(target, order.pk)
    audit.record_request(request, action=audit.Action.VIEW, obj=patient)
    return render(
        request,
        "ris/order_form.html",
        {"form": form, "patient": patient, "can_schedule": can_schedule},
        status=400 if form.errors else 200,
    )
