"""A facility administrator's procedure catalogue pages: what the facility orders and
books, how long it takes, how the patient prepares, and the rooms that perform it. Every
page and POST needs MANAGE_FACILITY at the procedure's facility; another facility's
procedure is a 404. Every write is one service call."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from accounts.permissions import capability_required
from accounts.roles import Capability
from ris import selectors, services
from ris.models import Procedure
from ris.procedure_forms import CatalogueFilterForm, ProcedureCreateForm, ProcedureForm


@require_GET
@capability_required(Capability.MANAGE_FACILITY)
def procedure_list(request: HttpRequest) -> HttpResponse:
    filters = CatalogueFilterForm(request.GET)
    chosen = filters.cleaned_data if filters.is_valid() else {}
    procedures = list(
        selectors.procedure_catalogue(
            user=request.user, modality=chosen.get("modality", ""), query=chosen.get("q", "")
        )
    )
    many = selectors.managed_facilities(user=request.user).count() > 1
    return render(
        request,
        "ris/procedure_list.html",
        {"procedures": procedures, "filters": filters, "many": many},
    )


@require_http_methods(["GET", "POST"])
@capability_required(Capability.MANAGE_FACILITY)
def procedure_create(request: HttpRequest) -> HttpResponse:
    facilities = selectors.managed_facilities(user=request.user)
    data = request.POST if request.method == "POST" else None
    form = ProcedureCreateForm(
        data,
        facilities=facilities,
        rooms=selectors.procedure_room_choices(facilities=facilities),
        initial={"is_active": True, "duration_minutes": 30},
    )
    if data is not None and form.is_valid():
        try:
            procedure = services.procedure_save(**form.cleaned_data, actor=request.user)
        except services.RisError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"{procedure.code} {procedure.name} added.")
            return redirect("ris:procedure_list")
    return _procedure_page(request, None, form=form, status=200 if data is None else 400)


@require_http_methods(["GET", "POST"])
@capability_required(Capability.MANAGE_FACILITY)
def procedure_edit(request: HttpRequest, pk: int) -> HttpResponse:
    procedure = get_object_or_404(
        selectors.managed_procedures(user=request.user).select_related("facility"), pk=pk
    )
    data = request.POST if request.method == "POST" else None
    form = ProcedureForm(
        data,
        instance=procedure,
        rooms=selectors.procedure_room_choices(
            facilities=[procedure.facility], procedure=procedure
        ),
    )
    if data is not None and form.is_valid():
        try:
            services.procedure_save(
                procedure=procedure,
                facility=procedure.facility,
                **form.cleaned_data,
                actor=request.user,
            )
        except services.RisError as error:
            form.add_error(None, str(error))
        else:
            messages.success(
                request, f"{form.cleaned_data['code']} {form.cleaned_data['name']} saved."
            )
            return redirect("ris:procedure_list")
    return _procedure_page(request, procedure, form=form, status=200 if data is None else 400)


def _procedure_page(
    request: HttpRequest, procedure: Procedure | None, *, form: ProcedureForm, status: int
) -> HttpResponse:
    return render(
        request, "ris/procedure_form.html", {"procedure": procedure, "form": form}, status=status
    )
