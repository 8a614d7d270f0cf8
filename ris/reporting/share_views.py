"""Share links: made and revoked by those who may read the report; opened by anyone with
the link (no account), who sees that report and its images only."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.http import Http404, HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET, require_POST

from accounts.permissions import capability_required
from accounts.roles import Capability
from pacs.viewer.views import VIEWER_CONTENT_SECURITY_POLICY
from ris.models import ReportShare
from ris.reporting import delivery, selectors, shares
from ris.services import RisError


class ShareForm(forms.Form):
    recipient = forms.CharField(max_length=200, label="For whom (name, why)")
    days = forms.IntegerField(
        min_value=1, max_value=shares.MAX_DAYS, initial=7, label="Valid for (days)"
    )


@require_POST
@capability_required(Capability.VIEW_REPORTS)
def share_create(request: HttpRequest, pk: int) -> HttpResponse:
    report = selectors.viewable_report(user=request.user, pk=pk)
    if report is None:
        raise Http404("No report with this id that you may read.")
    form = ShareForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say for whom the link is, and for 1 to 30 days.")
        return redirect("reporting:report", report.pk)
    try:
        share, token = shares.share_create(
            report=report,
            actor=request.user,
            recipient=form.cleaned_data["recipient"],
            days=form.cleaned_data["days"],
        )
    except RisError as error:
        messages.error(request, str(error))
        return redirect("reporting:report", report.pk)
    link = request.build_absolute_uri(reverse("share", args=[token]))
    # Shown once: only the token's hash is kept.
    return render(
        request, "reporting/share_made.html", {"share": share, "link": link, "report": report}
    )


@require_POST
@capability_required(Capability.VIEW_REPORTS)
def share_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    share = (
        ReportShare.objects.filter(pk=pk, report__in=selectors.reports_visible_to(request.user))
        .select_related("report")
        .first()
    )
    if share is None:
        raise Http404("No share link with this id that you may see.")
    shares.share_revoke(share=share, actor=request.user)
    messages.success(request, f"The link for {share.recipient} no longer works.")
    return redirect("reporting:report", share.report_id)


@require_GET
@login_not_required
@never_cache
def share_page(request: HttpRequest, token: str) -> HttpResponse:
    try:
        share = shares.share_open(request, token)
    except RisError as error:
        return render(request, "reporting/share_refused.html", {"reason": str(error)}, status=404)
    report = share.report
    version = report.versions.select_related("signed_by").order_by("-number").first()
    if version is None:
        raise Http404("This report has no signed version.")
    has_images = report.order.studies.exists()
    context = delivery.print_context(version) | {
        "share": share,
        "token": token,
        "has_images": has_images,
        "for_pdf": False,
    }
    return render(request, "reporting/share.html", context)


@require_GET
@login_not_required
@never_cache
@xframe_options_sameorigin
def share_viewer(request: HttpRequest, token: str) -> HttpResponse:
    """The viewer on the shared study, reading DICOMweb with the session's share grant."""
    try:
        share = shares.share_for_viewer(request, token)
    except RisError as error:
        return render(request, "reporting/share_refused.html", {"reason": str(error)}, status=404)
    study = share.report.order.studies.order_by("-received_at").first()
    if study is None:
        raise Http404("No images for this report.")
    config = {
        "studyInstanceUID": study.study_instance_uid,
        "dicomWebRoot": request.build_absolute_uri(reverse("dicomweb:studies")).removesuffix(
            "/studies"
        ),
        "annotationsUrl": "",
        "annotationsBase": "",
        "csrfToken": get_token(request),
        "patient": {
            "name": study.patient_name,
            "id": study.dicom_patient_id,
            "birthDate": study.patient_birth_date,
            "sex": study.patient_sex,
        },
        "study": {
            "date": study.study_date,
            "time": study.study_time,
            "description": study.study_description,
            "accessionNumber": study.accession_number,
            "modalities": study.modalities_in_study,
        },
        "priors": [],
        "user": shares.actor_name(share),
        "backUrl": reverse("share", args=[token]),
        "canAnnotate": False,
    }
    response = render(request, "pacs/viewer.html", {"study": study, "viewer_config": config})
    response.headers["Content-Security-Policy"] = VIEWER_CONTENT_SECURITY_POLICY
    return response
