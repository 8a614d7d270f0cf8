"""Report template pages: the facility's templates, written here or imported from IHE MRRT
files. Radiologists keep them (READ_STUDIES at the template's facility)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from accounts.models import Facility
from accounts.permissions import capability_required
from accounts.roles import Capability
from accounts.scoping import facility_ids_for
from pacs.dicom.vocabulary import Modality
from ris.models import Procedure, ReportMacro, ReportTemplate
from ris.reporting import selectors, services
from ris.services import RisError

MARKUP_HELP = (
    'A line "## Title" starts a section. [[Label]] is a blank to fill in; '
    "[[Label: first | second | third]] a pick-list. Reports cannot be signed with any left."
)


class TemplateForm(forms.Form):
    facility = forms.TypedChoiceField(coerce=int)
    name = forms.CharField(max_length=200)
    modality = forms.ChoiceField(required=False, choices=[("", "Any modality"), *Modality.choices])
    procedures = forms.ModelMultipleChoiceField(
        queryset=Procedure.objects.none(),
        required=False,
        help_text="Only for these procedures (none: for the modality).",
    )
    markup = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 18, "class": "mono"}),
        label="Sections",
        help_text=MARKUP_HELP,
        required=False,
    )
    is_active = forms.BooleanField(required=False, initial=True, label="Offered to readers")

    def __init__(self, *args: Any, facilities: list[Facility], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["facility"].choices = [(f.pk, f.name) for f in facilities]
        self.fields["procedures"].queryset = Procedure.objects.filter(
            facility__in=facilities, is_active=True
        ).select_related("facility")


class ImportForm(forms.Form):
    facility = forms.TypedChoiceField(coerce=int)
    file = forms.FileField(label="MRRT template (.html)")
    modality = forms.ChoiceField(required=False, choices=[("", "Any modality"), *Modality.choices])

    def __init__(self, *args: Any, facilities: list[Facility], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["facility"].choices = [(f.pk, f.name) for f in facilities]


def _facilities(request: HttpRequest) -> list[Facility]:
    return list(
        Facility.objects.filter(pk__in=facility_ids_for(request.user, Capability.READ_STUDIES))
    )


@require_GET
@capability_required(Capability.READ_STUDIES)
def template_list(request: HttpRequest) -> HttpResponse:
    templates = selectors.report_templates(user=request.user)
    return render(request, "reporting/template_list.html", {"templates": templates})


@require_http_methods(["GET", "POST"])
@capability_required(Capability.READ_STUDIES)
def template_create(request: HttpRequest) -> HttpResponse:
    return _template_page(request, None)


@require_http_methods(["GET", "POST"])
@capability_required(Capability.READ_STUDIES)
def template_edit(request: HttpRequest, pk: int) -> HttpResponse:
    template = selectors.report_templates(user=request.user).filter(pk=pk).first()
    if template is None:
        raise Http404("No template with this id at your facilities.")
    return _template_page(request, template)


def _template_page(request: HttpRequest, template: ReportTemplate | None) -> HttpResponse:
    facilities = _facilities(request)
    initial: dict[str, Any] = {"is_active": True, "facility": facilities[0].pk}
    if template is not None:
        initial = {
            "facility": template.facility_id,
            "name": template.name,
            "modality": template.modality,
            "procedures": list(template.procedures.all()),
            "markup": services.sections_to_markup(template.sections),
            "is_active": template.is_active,
        }
    form = TemplateForm(request.POST or None, facilities=facilities, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            saved = services.template_save(
                facility_id=data["facility"],
                name=data["name"],
                sections=services.sections_from_markup(data["markup"]),
                modality=data["modality"],
                procedures=data["procedures"],
                is_active=data["is_active"],
                actor=request.user,
                template=template,
            )
        except RisError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Template {saved.name} saved.")
            return redirect("reporting:template_list")
    return render(
        request,
        "reporting/template_form.html",
        {"form": form, "template": template},
        status=400 if form.errors else 200,
    )


@require_http_methods(["GET", "POST"])
@capability_required(Capability.READ_STUDIES)
def template_import(request: HttpRequest) -> HttpResponse:
    facilities = _facilities(request)
    form = ImportForm(
        request.POST or None,
        request.FILES or None,
        facilities=facilities,
        initial={"facility": facilities[0].pk},
    )
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        if upload.size > services.MAX_TEMPLATE_BYTES:
            form.add_error("file", "A template file has at most 2 MB.")
        else:
            try:
                template, warnings = services.template_import(
                    facility_id=form.cleaned_data["facility"],
                    data=upload.read(),
                    modality=form.cleaned_data["modality"],
                    actor=request.user,
                )
            except RisError as error:
                form.add_error("file", str(error))
            else:
                messages.success(request, f"Template {template.name} imported.")
                for warning in warnings[:10]:
                    messages.warning(request, warning)
                return redirect("reporting:template_edit", template.pk)
    return render(
        request,
        "reporting/template_import.html",
        {"form": form},
        status=400 if form.errors else 200,
    )


# ---- macros ------------------------------------------------------------------------------


class MacroForm(forms.Form):
    facility = forms.TypedChoiceField(coerce=int)
    name = forms.CharField(max_length=100, help_text='e.g. "normal chest"')
    modality = forms.ChoiceField(required=False, choices=[("", "Any modality"), *Modality.choices])
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 8, "class": "mono"}))
    personal = forms.BooleanField(
        required=False, initial=True, label="Mine only (else every radiologist of the facility)"
    )
    is_active = forms.BooleanField(required=False, initial=True, label="Offered in the editor")

    def __init__(self, *args: Any, facilities: list[Facility], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["facility"].choices = [(f.pk, f.name) for f in facilities]


@require_GET
@capability_required(Capability.READ_STUDIES)
def macro_list(request: HttpRequest) -> HttpResponse:
    macros = selectors.macros(user=request.user)
    return render(request, "reporting/macro_list.html", {"macros": macros})


@require_http_methods(["GET", "POST"])
@capability_required(Capability.READ_STUDIES)
def macro_create(request: HttpRequest) -> HttpResponse:
    return _macro_page(request, None)


@require_http_methods(["GET", "POST"])
@capability_required(Capability.READ_STUDIES)
def macro_edit(request: HttpRequest, pk: int) -> HttpResponse:
    macro = selectors.macros(user=request.user).filter(pk=pk).first()
    if macro is None:
        raise Http404("No macro with this id that you keep.")
    return _macro_page(request, macro)


def _macro_page(request: HttpRequest, macro: ReportMacro | None) -> HttpResponse:
    facilities = _facilities(request)
    initial: dict[str, Any] = {"facility": facilities[0].pk, "personal": True, "is_active": True}
    if macro is not None:
        initial = {
            "facility": macro.facility_id,
            "name": macro.name,
            "modality": macro.modality,
            "text": macro.text,
            "personal": macro.owner_id is not None,
            "is_active": macro.is_active,
        }
    form = MacroForm(request.POST or None, facilities=facilities, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            data = form.cleaned_data
            saved = services.macro_save(
                facility_id=data["facility"],
                name=data["name"],
                text=data["text"],
                modality=data["modality"],
                personal=data["personal"],
                is_active=data["is_active"],
                actor=request.user,
                macro=macro,
            )
        except RisError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Macro {saved.name} saved.")
            return redirect("reporting:macro_list")
    return render(
        request,
        "reporting/macro_form.html",
        {"form": form, "macro": macro},
        status=400 if form.errors else 200,
    )
