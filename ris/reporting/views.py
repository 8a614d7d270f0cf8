"""The radiologist's pages: the reading worklist, the reading page (images beside the
report), signing, addenda, corrections, critical results. Views check the door (role,
facility scope, form shape) and call one service each; the rules are in services."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import audit
from accounts.models import Facility
from accounts.permissions import capability_required
from accounts.roles import Capability
from accounts.scoping import facility_ids_for
from accounts.services import PasswordNotConfirmed, password_confirm
from ris.models import CriticalResult, Order, Report, ReportVersion
from ris.reporting import delivery, forms, selectors, services
from ris.services import RisError

Status = Report.Status


def _name(user: Any) -> str:
    return user.get_full_name() or user.get_username()


def _radiologist_choices(request: HttpRequest) -> list[tuple[int, str]]:
    return [(u.pk, _name(u)) for u in selectors.radiologists(user=request.user)]


# ---- the worklist -----------------------------------------------------------------------------


@require_GET
@capability_required(Capability.READ_STUDIES)
def worklist(request: HttpRequest) -> HttpResponse:
    facilities = Facility.objects.filter(
        pk__in=facility_ids_for(request.user, Capability.READ_STUDIES)
    )
    form = forms.WorklistFilterForm(
        request.GET or None,
        facilities=[(f.pk, f.name) for f in facilities],
        radiologists=_radiologist_choices(request),
    )
    orders = list(selectors.reading_worklist(user=request.user, filters=form.filters())[:300])
    audit.record_list(
        request,
        objects=orders,
        object_type="order",
        query={"list": "reading", **request.GET.dict()},
    )
    return render(
        request,
        "reporting/worklist.html",
        {"orders": orders, "form": form, "many_facilities": len(facilities) > 1},
    )


# ---- the reading page ----------------------------------------------------------------------


def _order_or_404(request: HttpRequest, pk: int) -> Order:
    order = selectors.readable_order(user=request.user, pk=pk)
    if order is None:
        raise Http404("No exam with this id that you read.")
    return order


def _back(order: Order) -> HttpResponse:
    return redirect("reporting:exam", order.pk)


@require_GET
@capability_required(Capability.READ_STUDIES)
def exam(request: HttpRequest, pk: int) -> HttpResponse:
    order = _order_or_404(request, pk)
    return _exam_page(request, order)


def _exam_page(
    request: HttpRequest,
    order: Order,
    *,
    sign_form: forms.SignForm | None = None,
    error: str = "",
    sections: list[dict[str, str]] | None = None,
    status: int = 200,
) -> HttpResponse:
    report = selectors.report_of(order)
    studies = list(order.studies.order_by("-received_at"))
    priors = selectors.prior_exams(user=request.user, order=order)
    audit.record_request(
        request,
        action=audit.Action.VIEW,
        obj=report or order,
        detail={"priors": [p.pk for p in priors]},
    )
    addendum = None
    if report is not None:
        addendum = next((a for a in report.addenda.all() if a.signed_at is None), None)
    context = {
        "order": order,
        "report": report,
        "sections": sections if sections is not None else (report.sections if report else []),
        "studies": studies,
        "study": studies[0] if studies else None,
        "priors": priors,
        "templates": selectors.templates_for(order) if report is None else [],
        "sign_form": sign_form or forms.SignForm(),
        "critical_form": forms.CriticalForm(),
        "assign_form": forms.AssignForm(
            radiologists=_radiologist_choices(request),
            initial={"radiologist": order.reading_radiologist_id},
        ),
        "addendum": addendum,
        "error": error,
        "mine": order.reading_radiologist_id in (None, request.user.pk),
        "can_sign": Capability.SIGN_REPORTS in _caps(request, order),
        "autosave_url": reverse("reporting:autosave", args=[report.pk]) if report else "",
        "next_exam": selectors.next_exam(user=request.user, after=order),
        "macros": selectors.macros_for(user=request.user, order=order) if report else [],
    }
    return render(request, "reporting/exam.html", context, status=status)


def _caps(request: HttpRequest, order: Order) -> frozenset[str]:
    from accounts.scoping import capabilities_for

    return capabilities_for(request.user, order.facility_id)


def _refused(request: HttpRequest, order: Order, error: RisError | PasswordNotConfirmed) -> Any:
    messages.error(request, str(error))
    return _back(order)


@require_POST
@capability_required(Capability.READ_STUDIES)
def claim(request: HttpRequest, pk: int) -> HttpResponse:
    order = _order_or_404(request, pk)
    try:
        services.reading_claim(order=order, actor=request.user)
    except RisError as error:
        return _refused(request, order, error)
    return _back(order)


@require_POST
@capability_required(Capability.READ_STUDIES)
def release(request: HttpRequest, pk: int) -> HttpResponse:
    order = _order_or_404(request, pk)
    try:
        services.reading_release(order=order, actor=request.user)
    except RisError as error:
        return _refused(request, order, error)
    messages.success(request, f"{order.accession_number} is back on the worklist.")
    return redirect("reporting:worklist")


@require_POST
@capability_required(Capability.READ_STUDIES)
def assign(request: HttpRequest, pk: int) -> HttpResponse:
    order = _order_or_404(request, pk)
    form = forms.AssignForm(request.POST, radiologists=_radiologist_choices(request))
    if not form.is_valid():
        messages.error(request, "Choose a radiologist of the list.")
        return _back(order)
    chosen = form.cleaned_data["radiologist"]
    radiologist = selectors.radiologists(user=request.user).filter(pk=chosen).first()
    try:
        services.reading_assign(order=order, radiologist=radiologist, actor=request.user)
    except RisError as error:
        return _refused(request, order, error)
    messages.success(
        request,
        f"{order.accession_number} assigned to {_name(radiologist)}."
        if radiologist
        else f"{order.accession_number} is back on the worklist.",
    )
    return _back(order)


@require_POST
@capability_required(Capability.READ_STUDIES)
def start(request: HttpRequest, pk: int) -> HttpResponse:
    order = _order_or_404(request, pk)
    template = None
    template_id = request.POST.get("template", "")
    if template_id:
        template = next(
            (t for t in selectors.templates_for(order) if str(t.pk) == template_id), None
        )
        if template is None:
            messages.error(request, "That template is not one offered for this exam.")
            return _back(order)
    try:
        services.report_start(order=order, actor=request.user, template=template)
    except RisError as error:
        return _refused(request, order, error)
    return _back(order)


def _report_or_404(request: HttpRequest, pk: int) -> Report:
    report = (
        Report.objects.visible_to(request.user, Capability.READ_STUDIES)
        .select_related("order__patient", "order__procedure", "order__facility")
        .filter(pk=pk)
        .first()
    )
    if report is None:
        raise Http404("No report with this id that you read.")
    return report


def _posted_sections(request: HttpRequest, report: Report) -> list[dict[str, str]]:
    """The editor's sections: JSON from the script, or the plain fields without it."""
    if "sections" in request.POST:
        field = forms.SectionsField()
        return field.clean(request.POST["sections"])
    return forms.sections_from_post(request.POST, len(report.sections))


def _revision(request: HttpRequest) -> int | None:
    value = request.POST.get("revision", "")
    return int(value) if value.isdigit() else None


@require_POST
@capability_required(Capability.READ_STUDIES)
def save(request: HttpRequest, pk: int) -> HttpResponse:
    """Save the draft, and sign it when a sign button was pressed (the password typed)."""
    report = _report_or_404(request, pk)
    order = report.order
    try:
        sections = _posted_sections(request, report)
        report = services.report_draft_save(
            report=report, sections=sections, actor=request.user, revision=_revision(request)
        )
    except (RisError, forms.forms.ValidationError) as error:
        text = error.messages[0] if isinstance(error, forms.forms.ValidationError) else str(error)
        return _exam_page(request, order, error=text, status=409)
    status = request.POST.get("sign", "")
    if not status:
        messages.success(request, "Draft saved.")
        return _back(order)
    sign_form = forms.SignForm(request.POST)
    sign_form.is_valid()
    try:
        signature = password_confirm(
            request=request, user=request.user, password=sign_form.cleaned_data.get("password", "")
        )
        services.report_sign(report=report, status=status, actor=request.user, signature=signature)
    except (RisError, PasswordNotConfirmed) as error:
        sign_form.add_error(
            "password" if isinstance(error, PasswordNotConfirmed) else None, str(error)
        )
        return _exam_page(
            request,
            order,
            sign_form=sign_form,
            error=f"Not signed: {error} Your words are saved as a draft.",
            status=400,
        )
    messages.success(
        request, f"Report of {order.accession_number} signed {Status(status).label.lower()}."
    )
    return _back(order)


@require_POST
@login_not_required  # checked below: a script gets a 401 in JSON, not the login form
def autosave(request: HttpRequest, pk: int) -> HttpResponse:
    """The editor's periodic save, as JSON: {"revision": n} or {"error": ...}."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": "Log in again: your session ended."}, status=401)
    report = Report.objects.visible_to(request.user, Capability.READ_STUDIES).filter(pk=pk).first()
    if report is None:
        return JsonResponse({"error": "No such report."}, status=404)
    try:
        body = json.loads(request.body or b"{}")
        sections = body["sections"]
        revision = body.get("revision")
        if not isinstance(sections, list) or not isinstance(revision, (int, type(None))):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": 'Send {"sections": [...], "revision": n}.'}, status=400)
    try:
        report = services.report_draft_save(
            report=report, sections=sections, actor=request.user, revision=revision
        )
    except RisError as error:
        return JsonResponse({"error": str(error)}, status=409)
    return JsonResponse({"revision": report.revision, "savedAt": report.updated_at.isoformat()})


@require_http_methods(["GET", "POST"])
@capability_required(Capability.SIGN_REPORTS)
def correct(request: HttpRequest, pk: int) -> HttpResponse:
    report = _report_or_404(request, pk)
    form = forms.CorrectionForm(request.POST or None)
    sections = report.sections
    if request.method == "POST":
        sections = forms.sections_from_post(request.POST, len(report.sections))
        if form.is_valid():
            try:
                signature = password_confirm(
                    request=request, user=request.user, password=form.cleaned_data["password"]
                )
                services.report_correct(
                    report=report,
                    sections=sections,
                    actor=request.user,
                    signature=signature,
                    reason=form.cleaned_data["reason"],
                )
            except (RisError, PasswordNotConfirmed) as error:
                form.add_error(None, str(error))
            else:
                messages.success(request, "Corrected report signed and sent.")
                return _back(report.order)
    else:
        audit.record_request(request, action=audit.Action.VIEW, obj=report)
    return render(
        request,
        "reporting/correct.html",
        {"report": report, "order": report.order, "form": form, "sections": sections},
        status=400 if form.errors else 200,
    )


@require_POST
@capability_required(Capability.READ_STUDIES)
def addendum(request: HttpRequest, pk: int) -> HttpResponse:
    report = _report_or_404(request, pk)
    order = report.order
    try:
        services.addendum_save(report=report, text=request.POST.get("text", ""), actor=request.user)
        if request.POST.get("sign"):
            signature = password_confirm(
                request=request, user=request.user, password=request.POST.get("password", "")
            )
            services.addendum_sign(report=report, actor=request.user, signature=signature)
            messages.success(request, "Addendum signed and sent.")
        else:
            messages.success(request, "Addendum saved (not signed yet).")
    except (RisError, PasswordNotConfirmed) as error:
        messages.error(request, f"Not signed: {error}")
    return _back(order)


@require_POST
@capability_required(Capability.READ_STUDIES)
def critical_flag(request: HttpRequest, pk: int) -> HttpResponse:
    report = _report_or_404(request, pk)
    form = forms.CriticalForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say what the critical finding is.")
        return _back(report.order)
    try:
        critical = services.critical_result_flag(
            report=report, finding=form.cleaned_data["finding"], actor=request.user
        )
    except RisError as error:
        return _refused(request, report.order, error)
    told = (
        f"{critical.recipient_name} was notified"
        if critical.notified_at
        else f"{critical.recipient_name or 'The referring physician'} is not a user here: "
        "call them and record it on the critical results list"
    )
    messages.warning(request, f"Critical result flagged. {told}.")
    return _back(report.order)


# ---- a report as read by others: results list, the printable page, versions, PDF ----------


@require_GET
@capability_required(Capability.VIEW_REPORTS)
def results(request: HttpRequest) -> HttpResponse:
    """Released reports: for a referring physician, the final reports of their patients;
    for staff, those of their facilities."""
    query = request.GET.get("q", "")[:100]
    page = Paginator(selectors.results(user=request.user, query=query), 50).get_page(
        request.GET.get("page")
    )
    audit.record_list(request, objects=list(page), object_type="report", query={"q": query})
    return render(request, "reporting/results.html", {"page": page, "q": query})


def _viewable_report(request: HttpRequest, pk: int) -> Report:
    """A released report the user may read: at their facilities as staff, or one of their
    own referrals (referring physicians see final reports only)."""
    report = selectors.viewable_report(user=request.user, pk=pk)
    if report is None:
        raise Http404("No report with this id that you may read.")
    return report


@require_GET
@capability_required(Capability.VIEW_REPORTS)
def report_page(request: HttpRequest, pk: int) -> HttpResponse:
    report = _viewable_report(request, pk)
    versions = list(report.versions.select_related("signed_by").order_by("-number"))
    number = request.GET.get("version", "")
    version = next(
        (v for v in versions if str(v.number) == number), versions[0] if versions else None
    )
    if version is None:
        raise Http404("This report is not signed yet.")
    audit.record_request(
        request, action=audit.Action.VIEW, obj=report, detail={"version": version.number}
    )
    from ris.reporting.share_views import ShareForm

    context = delivery.print_context(version) | {
        "versions": versions,
        "for_pdf": False,
        "shares": [s for s in report.shares.select_related("created_by") if s.is_active],
        "share_form": ShareForm(),
    }
    return render(request, "reporting/report_page.html", context)


@require_GET
@capability_required(Capability.VIEW_REPORTS)
def report_pdf(request: HttpRequest, pk: int) -> HttpResponse:
    report = _viewable_report(request, pk)
    version = _version_asked(request, report)
    audit.record_request(
        request,
        action=audit.Action.VIEW,
        obj=report,
        detail={"version": version.number, "format": "pdf"},
    )
    pdf = delivery.report_pdf(version)
    response = HttpResponse(pdf, content_type="application/pdf")
    name = f"report-{report.order.accession_number}-v{version.number}.pdf"
    response["Content-Disposition"] = f'inline; filename="{name}"'
    return response


def _version_asked(request: HttpRequest, report: Report) -> ReportVersion:
    versions = report.versions.select_related("signed_by")
    number = request.GET.get("version", "")
    version = versions.filter(number=int(number)).first() if number.isdigit() else versions.last()
    if version is None:
        raise Http404("No such version of this report.")
    return version


# ---- critical results ---------------------------------------------------------------------


@require_GET
def critical_list(request: HttpRequest) -> HttpResponse:
    show_all = request.GET.get("all") == "1"
    rows = list(selectors.critical_results(user=request.user, open_only=not show_all)[:300])
    audit.record_list(
        request,
        objects=[r.report for r in rows],
        object_type="report",
        query={"list": "critical", "all": show_all},
    )
    return render(
        request,
        "reporting/critical_list.html",
        {"rows": rows, "show_all": show_all, "form": forms.AcknowledgeForm()},
    )


def _critical_or_404(request: HttpRequest, pk: int) -> CriticalResult:
    critical = selectors.critical_results(user=request.user, open_only=False).filter(pk=pk).first()
    if critical is None:
        raise Http404("No critical result with this id that you may see.")
    return critical


@require_GET
def critical_detail(request: HttpRequest, pk: int) -> HttpResponse:
    critical = _critical_or_404(request, pk)
    audit.record_request(
        request,
        action=audit.Action.VIEW,
        obj=critical.report,
        detail={"critical_result": critical.pk},
    )
    return render(
        request,
        "reporting/critical_detail.html",
        {
            "critical": critical,
            "form": forms.AcknowledgeForm(),
            "is_recipient": critical.recipient_id == request.user.pk,
        },
    )


@require_POST
def critical_acknowledge(request: HttpRequest, pk: int) -> HttpResponse:
    critical = _critical_or_404(request, pk)
    form = forms.AcknowledgeForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say how the result was communicated.")
        return redirect("reporting:critical_detail", critical.pk)
    try:
        services.critical_result_acknowledge(
            critical=critical,
            actor=request.user,
            via=form.cleaned_data["via"],
            note=form.cleaned_data["note"],
        )
    except RisError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, "Acknowledgement recorded.")
    return redirect("reporting:critical_detail", critical.pk)
