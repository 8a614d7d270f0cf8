from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count, Prefetch, QuerySet
from django.forms import model_to_dict
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from accounts import audit
from accounts.models import Facility
from accounts.permissions import capability_required
from accounts.roles import Capability
from accounts.scoping import capabilities_for, facility_ids_for
from billing.models import Payer
from ris import selectors, services
from ris.models import Patient, PatientMerge
from ris.patient_forms import (
    ContactFormSet,
    IdentifierFormSet,
    InsuranceFormSet,
    MergeFindForm,
    MergeForm,
    PatientForm,
    PatientRegisterForm,
    formset_rows,
)


@require_GET
@capability_required(Capability.VIEW_PATIENTS)
def patient_list(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "")
    include_merged = request.GET.get("merged") == "1"
    patients = selectors.patient_search(
        user=request.user, query=query, include_merged=include_merged
    ).select_related("facility")
    page = Paginator(patients, 50).get_page(request.GET.get("page"))
    audit.record_list(
        request,
        objects=list(page),
        object_type="patient",
        query={"q": query, **({"merged": True} if include_merged else {})},
    )
    return render(
        request,
        "ris/patient_list.html",
        {
            "page": page,
            "query": query,
            "include_merged": include_merged,
            "can_register": Capability.EDIT_PATIENTS in capabilities_for(request.user),
        },
    )


@require_GET
@capability_required(Capability.VIEW_PATIENTS)
def patient_detail(request: HttpRequest, pk: int) -> HttpResponse:
    patient = get_object_or_404(
        Patient.objects.visible_to(request.user, Capability.VIEW_PATIENTS)
        .select_related("facility", "merged_into")
        .prefetch_related(
            "identifiers",
            "contacts",
            "insurance__payer",
            Prefetch("merges_absorbed", PatientMerge.objects.select_related("merged", "user")),
            Prefetch("merges_into", PatientMerge.objects.select_related("surviving", "user")),
        ),
        pk=pk,
    )
    orders = patient.orders.select_related("procedure").order_by("-created_at")
    audit.record_request(request, action=audit.Action.VIEW, obj=patient)
    editable = patient.merged_into_id is None and patient.facility_id in facility_ids_for(
        request.user, Capability.EDIT_PATIENTS
    )
    may_order = patient.merged_into_id is None and patient.facility_id in facility_ids_for(
        request.user, Capability.EDIT_ORDERS
    )
    return render(
        request,
        "ris/patient_detail.html",
        {"patient": patient, "orders": orders, "can_edit": editable, "can_order": may_order},
    )


@require_http_methods(["GET", "POST"])
@capability_required(Capability.EDIT_PATIENTS)
def patient_create(request: HttpRequest) -> HttpResponse:
    """Register a patient. Possible duplicates are shown first, and registering anyway
    takes ticking "This is a different person"."""
    facilities = Facility.objects.filter(
        pk__in=facility_ids_for(request.user, Capability.EDIT_PATIENTS)
    )
    data = request.POST if request.method == "POST" else None
    form = PatientRegisterForm(data, facilities=facilities, initial={"sex": Patient.Sex.UNKNOWN})
    lists = _list_formsets(data, payers=Payer.objects.filter(facility__in=facilities))
    duplicates: list[Patient] = []
    if data is not None and form.is_valid() and all(f.is_valid() for f in lists.values()):
        fields = dict(form.cleaned_data)
        not_duplicate = fields.pop("not_duplicate")
        duplicates = selectors.possible_duplicates(
            facility=fields["facility"],
            family_name=fields["family_name"],
            given_name=fields["given_name"],
            birth_date=fields["birth_date"],
        )
        if duplicates:
            audit.record_list(
                request,
                objects=duplicates,
                object_type="patient",
                query={"possible_duplicates_of": _who(fields)},
            )
        if not duplicates or not_duplicate:
            try:
                patient = services.patient_create(
                    actor=request.user,
                    **fields,
                    **{kind: formset_rows(formset) for kind, formset in lists.items()},
                )
            except services.RisError as error:
                form.add_error(None, str(error))
            else:
                messages.success(request, f"{patient.display_name} registered, MRN {patient.mrn}.")
                return redirect("ris:patient_detail", pk=patient.pk)
    return render(
        request,
        "ris/patient_form.html",
        {"form": form, "lists": lists, "duplicates": duplicates, "patient": None},
    )


@require_http_methods(["GET", "POST"])
@capability_required(Capability.EDIT_PATIENTS)
def patient_edit(request: HttpRequest, pk: int) -> HttpResponse:
    patient = _editable_patient(request, pk)
    if patient.merged_into_id is not None:
        messages.error(request, "This record was merged; edit the record it was merged into.")
        return redirect("ris:patient_detail", pk=patient.pk)
    data = request.POST if request.method == "POST" else None
    form = PatientForm(data, instance=patient)
    lists = _list_formsets(data, payers=Payer.objects.filter(facility=patient.facility), of=patient)
    if data is not None and form.is_valid() and all(f.is_valid() for f in lists.values()):
        try:
            services.patient_update(
                patient=patient,
                actor=request.user,
                **{name: form.cleaned_data[name] for name in form.changed_data},
                **{kind: formset_rows(formset) for kind, formset in lists.items()},
            )
        except services.RisError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"{patient.display_name} saved.")
            return redirect("ris:patient_detail", pk=patient.pk)
    if data is None:
        audit.record_request(request, action=audit.Action.VIEW, obj=patient)
    return render(
        request,
        "ris/patient_form.html",
        {"form": form, "lists": lists, "duplicates": [], "patient": patient},
    )


@require_http_methods(["GET", "POST"])
@capability_required(Capability.EDIT_PATIENTS)
def patient_merge(request: HttpRequest, pk: int) -> HttpResponse:
    """Merge a duplicate record into this one: find it by MRN, compare the two side by
    side, confirm with a reason."""
    survivor = _editable_patient(request, pk)
    find = MergeFindForm(request.GET or None)
    confirm = MergeForm(request.POST or None)
    duplicate = None
    if request.method == "POST":
        if confirm.is_valid():
            duplicate = get_object_or_404(
                _patients_editable_by(request), pk=confirm.cleaned_data["merged"]
            )
            try:
                services.patient_merge(
                    surviving=survivor,
                    merged=duplicate,
                    actor=request.user,
                    reason=confirm.cleaned_data["reason"],
                )
            except services.RisError as error:
                confirm.add_error(None, str(error))
            else:
                messages.success(
                    request, f"MRN {duplicate.mrn} merged into {survivor.display_name}."
                )
                return redirect("ris:patient_detail", pk=survivor.pk)
    elif find.is_valid():
        duplicate = (
            Patient.objects.filter(facility=survivor.facility, mrn=find.cleaned_data["mrn"].strip())
            .exclude(pk=survivor.pk)
            .order_by("mrn_issuer")
            .first()
        )
        if duplicate is None:
            find.add_error("mrn", "No other record of this facility has that MRN.")
        else:
            confirm = MergeForm(initial={"merged": duplicate.pk})
    audit.record_request(
        request,
        action=audit.Action.VIEW,
        obj=survivor,
        patient_ids=[survivor.pk] + ([duplicate.pk] if duplicate else []),
    )
    context: dict[str, Any] = {
        "survivor": _with_counts(survivor),
        "duplicate": _with_counts(duplicate) if duplicate else None,
        "find": find,
        "confirm": confirm,
    }
    return render(
        request,
        "ris/patient_merge.html",
        context,
    )


def _patients_editable_by(request: HttpRequest) -> QuerySet[Patient]:
    """Patients of the facilities where the user edits the registry: others are a 404."""
    return Patient.objects.visible_to(request.user, Capability.EDIT_PATIENTS).select_related(
        "facility", "merged_into"
    )


def _editable_patient(request: HttpRequest, pk: int) -> Patient:
    return get_object_or_404(_patients_editable_by(request), pk=pk)


def _with_counts(patient: Patient) -> Patient:
    """The patient with what a merge would move, for the side-by-side comparison."""
    return (
        Patient.objects.filter(pk=patient.pk)
        .select_related("merged_into")
        .prefetch_related("identifiers", "insurance__payer")
        .annotate(
            order_count=Count("orders", distinct=True),
            study_count=Count("studies", distinct=True),
            contact_count=Count("contacts", distinct=True),
        )
        .get()
    )


def _list_formsets(
    data: Any, *, payers: QuerySet[Payer], of: Patient | None = None
) -> dict[str, Any]:
    """The identifier, contact and insurance formsets, filled from the patient's rows."""
    initial: dict[str, list[dict[str, Any]]] = {"identifiers": [], "contacts": [], "insurance": []}
    if of is not None:
        initial = {
            "identifiers": [
                model_to_dict(i, fields=["type_code", "value", "issuer"])
                for i in of.identifiers.all()
            ],
            "contacts": [model_to_dict(c) for c in of.contacts.all()],
            "insurance": [model_to_dict(i) for i in of.insurance.all()],
        }
    return {
        "identifiers": IdentifierFormSet(
            data, prefix="identifiers", initial=initial["identifiers"]
        ),
        "contacts": ContactFormSet(data, prefix="contacts", initial=initial["contacts"]),
        "insurance": InsuranceFormSet(
            data, prefix="insurance", initial=initial["insurance"], form_kwargs={"payers": payers}
        ),
    }


def _who(fields: dict[str, Any]) -> str:
    born = fields["birth_date"].isoformat() if fields["birth_date"] else ""
    return f"{fields['family_name']}, {fields['given_name']} {born}".strip()
