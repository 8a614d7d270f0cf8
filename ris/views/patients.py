from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from accounts import audit
from accounts.permissions import capability_required
from accounts.roles import Capability
from ris import selectors
from ris.models import Patient


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
