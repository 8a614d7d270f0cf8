"""The billing office's pages: the fee schedule and the charge review. Thin: forms check
shapes, services decide."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts import audit
from accounts.models import Facility
from accounts.permissions import capability_required
from accounts.roles import Capability
from accounts.scoping import facility_ids_for
from billing import exports, selectors, services
from billing.models import Charge, ChargeExport
from pacs.dicom.vocabulary import Modality


@require_GET
@capability_required(Capability.VIEW_BILLING)
def fee_list(request: HttpRequest) -> HttpResponse:
    code = request.GET.get("code", "").strip()
    page = Paginator(selectors.fee_schedule(user=request.user, code=code), 100).get_page(
        request.GET.get("page")
    )
    can_edit = bool(facility_ids_for(request.user, Capability.EDIT_BILLING))
    form = (
        FeeForm(
            facilities=_export_facilities(request), payers=list(selectors.payers(user=request.user))
        )
        if can_edit
        else None
    )
    return render(request, "billing/fee_list.html", {"page": page, "code": code, "fee_form": form})


class ChargeFilterForm(forms.Form):
    date_from = forms.DateField(
        required=False, label="Service from", widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        required=False, label="to", widget=forms.DateInput(attrs={"type": "date"})
    )
    facility = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)
    payer = forms.ChoiceField(required=False)
    status = forms.ChoiceField(required=False, choices=[("", "Any"), *Charge.Status.choices])
    modality = forms.ChoiceField(required=False, choices=[("", "Any"), *Modality.choices])
    missing = forms.BooleanField(required=False, label="Missing data only")

    def __init__(
        self, *args: Any, facilities: list[Facility], payers: list[Any], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["facility"].choices = [("", "All"), *[(f.pk, f.name) for f in facilities]]
        self.fields["payer"].choices = [
            ("", "Any"),
            ("self", "Self-pay"),
            *[(str(p.pk), p.name) for p in payers],
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and end < start:
            raise forms.ValidationError("The end date is before the start date.")
        return data

    def filters(self) -> selectors.ChargeFilter:
        data = self.cleaned_data
        return selectors.ChargeFilter(
            date_from=data["date_from"],
            date_to=data["date_to"],
            facility=data["facility"],
            payer=data["payer"],
            status=data["status"],
            modality=data["modality"],
            missing=data["missing"],
        )


@require_GET
@capability_required(Capability.VIEW_BILLING)
def charge_list(request: HttpRequest) -> HttpResponse:
    facilities = list(
        Facility.objects.filter(pk__in=facility_ids_for(request.user, Capability.VIEW_BILLING))
    )
    form = ChargeFilterForm(
        request.GET, facilities=facilities, payers=list(selectors.payers(user=request.user))
    )
    if not form.is_valid():
        return render(request, "billing/charge_list.html", {"form": form, "page": None}, status=400)
    rows = selectors.charges(user=request.user, filters=form.filters())
    page = Paginator(rows, 100).get_page(request.GET.get("page"))
    audit.record_list(request, objects=list(page), object_type="charge", query=request.GET.dict())
    can_edit = bool(facility_ids_for(request.user, Capability.EDIT_BILLING))
    totals = selectors.totals(rows)
    labels = dict(Charge.Status.choices)
    status_totals = [(labels[s], n, amount) for s, (n, amount) in totals.by_status.items()]
    return render(
        request,
        "billing/charge_list.html",
        {
            "form": form,
            "page": page,
            "totals": totals,
            "status_totals": status_totals,
            "can_edit": can_edit,
            "export_form": ExportForm(
                facilities=_export_facilities(request),
                payers=list(selectors.payers(user=request.user)),
            )
            if can_edit
            else None,
        },
    )


@require_POST
@capability_required(Capability.EDIT_BILLING)
def charge_action(request: HttpRequest, pk: int) -> HttpResponse:
    charge = Charge.objects.visible_to(request.user, Capability.EDIT_BILLING).filter(pk=pk).first()
    if charge is None:
        raise Http404("No charge with this id that you may change.")
    action = request.POST.get("action", "")
    try:
        if action == "reprice":
            services.charge_reprice(charge=charge, user=request.user)
        else:
            services.charge_review(
                charge=charge,
                action=action,
                reason=request.POST.get("reason", ""),
                user=request.user,
            )
    except services.BillingError as error:
        messages.error(request, f"Charge {charge.pk}: {error}")
    else:
        messages.success(request, f"Charge {charge.pk}: done.")
    back = request.POST.get("next", "")
    return redirect(back if back.startswith("/billing/") else "billing:charge_list")


# ---- exports ---------------------------------------------------------------------------------


class ExportForm(forms.Form):
    format = forms.ChoiceField(choices=ChargeExport.Format.choices)
    facility = forms.TypedChoiceField(coerce=int)
    payer = forms.TypedChoiceField(
        coerce=int, required=False, empty_value=None, label="Payer (837P)"
    )
    mark = forms.BooleanField(
        required=False, initial=True, label="Bill them: mark the charges exported"
    )

    def __init__(
        self, *args: Any, facilities: list[Facility], payers: list[Any], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["facility"].choices = [(f.pk, f.name) for f in facilities]
        self.fields["payer"].choices = [("", "—"), *[(p.pk, p.name) for p in payers]]


def _export_facilities(request: HttpRequest) -> list[Facility]:
    return list(
        Facility.objects.filter(pk__in=facility_ids_for(request.user, Capability.EDIT_BILLING))
    )


@require_POST
@capability_required(Capability.EDIT_BILLING)
def export_create(request: HttpRequest) -> HttpResponse:
    """Export the charges the review page's filters select (sent along as the query)."""
    facilities = _export_facilities(request)
    payers = list(selectors.payers(user=request.user))
    form = ExportForm(request.POST, facilities=facilities, payers=payers)
    filters = ChargeFilterForm(request.GET, facilities=facilities, payers=payers)
    if not form.is_valid() or not filters.is_valid():
        messages.error(request, "Choose a format and a facility (and a payer for claims).")
        return redirect("billing:charge_list")
    data = form.cleaned_data
    payer = next((p for p in payers if p.pk == data["payer"]), None)
    try:
        result = exports.export_charges(
            user=request.user,
            facility_id=data["facility"],
            charges=selectors.charges(user=request.user, filters=filters.filters()),
            fmt=data["format"],
            filters={k: v for k, v in request.GET.items() if v},
            mark=data["mark"],
            payer=payer,
        )
    except exports.ExportError as error:
        messages.error(request, str(error))
        return redirect("billing:charge_list")
    for problem in result.problems[:20]:
        messages.warning(request, f"Left out (still ready): {problem}")
    messages.success(request, f"Export {result.export.pk}: {result.export.row_count} charges.")
    return redirect("billing:export_list")


@require_GET
@capability_required(Capability.VIEW_BILLING)
def export_list(request: HttpRequest) -> HttpResponse:
    rows = ChargeExport.objects.visible_to(request.user, Capability.VIEW_BILLING).select_related(
        "created_by", "payer", "facility"
    )
    page = Paginator(rows, 50).get_page(request.GET.get("page"))
    return render(request, "billing/export_list.html", {"page": page})


@require_GET
@capability_required(Capability.VIEW_BILLING)
def export_download(request: HttpRequest, pk: int) -> HttpResponse:
    export = (
        ChargeExport.objects.visible_to(request.user, Capability.VIEW_BILLING).filter(pk=pk).first()
    )
    if export is None or not export.storage_key:
        raise Http404("No export with this id that you may see.")
    audit.record_request(
        request,
        action=audit.Action.EXPORT,
        obj=export,
        detail={"download": True, "sha256": export.sha256},
    )
    name = f"charges-{export.pk}.{export.format if export.format != '837p' else 'x12'}"
    return FileResponse(exports.open_export(export), as_attachment=True, filename=name)


# ---- the fee schedule --------------------------------------------------------------------------


class FeeForm(forms.Form):
    facility = forms.TypedChoiceField(coerce=int)
    payer = forms.TypedChoiceField(
        coerce=int, required=False, empty_value=None, label="Payer (empty: standard)"
    )
    procedure_code = forms.CharField(max_length=16)
    global_price = forms.DecimalField(min_value=0, max_digits=10, decimal_places=2)
    professional_price = forms.DecimalField(
        min_value=0, max_digits=10, decimal_places=2, label="Professional (26)"
    )
    technical_price = forms.DecimalField(
        min_value=0, max_digits=10, decimal_places=2, label="Technical (TC)"
    )
    effective_from = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(
        self, *args: Any, facilities: list[Facility], payers: list[Any], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["facility"].choices = [(f.pk, f.name) for f in facilities]
        self.fields["payer"].choices = [("", "Standard"), *[(p.pk, p.name) for p in payers]]


@require_POST
@capability_required(Capability.EDIT_BILLING)
def fee_create(request: HttpRequest) -> HttpResponse:
    payers = [p for p in selectors.payers(user=request.user)]
    form = FeeForm(request.POST, facilities=_export_facilities(request), payers=payers)
    if not form.is_valid():
        errors = "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())
        messages.error(request, f"Not saved: {errors}")
        return redirect("billing:fee_list")
    data = form.cleaned_data
    try:
        entry = services.fee_set(
            facility_id=data["facility"],
            payer=next((p for p in payers if p.pk == data["payer"]), None),
            procedure_code=data["procedure_code"],
            global_price=data["global_price"],
            professional_price=data["professional_price"],
            technical_price=data["technical_price"],
            effective_from=data["effective_from"],
            user=request.user,
        )
    except services.BillingError as error:
        messages.error(request, str(error))
    else:
        messages.success(
            request, f"{entry.procedure_code}: new prices from {entry.effective_from:%Y-%m-%d}."
        )
    return redirect("billing:fee_list")
