"""Reports leaving the RIS after the commit: the PDF, the DICOM object put into the study
(Basic Text SR or Encapsulated PDF, as the facility chose), the critical result e-mail."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from accounts import audit
from pacs.dicom import report_objects
from pacs.models import Study
from pacs.services import IngestError, ingest
from ris.models import CriticalResult, Report, ReportVersion
from ris.pdf import html_to_pdf

logger = logging.getLogger(__name__)


class NotYet(Exception):
    """Nothing to do now: the order has no study to put the report into (yet)."""


def version_sections(version: ReportVersion) -> list[tuple[str, str]]:
    """(heading, text) of a version, its signed addenda as a last section (the version
    text has them at its end, after the sections' text)."""
    sections = [(s["title"], s["text"].strip()) for s in version.sections if s["text"].strip()]
    report = version.report
    addenda = report.addenda.filter(signed_at__isnull=False, signed_at__lte=version.signed_at)
    for addendum in addenda.select_related("signed_by"):
        assert addendum.signed_by is not None and addendum.signed_at is not None
        when = timezone.localtime(addendum.signed_at).strftime("%Y-%m-%d %H:%M")
        signer = addendum.signed_by.get_full_name() or addendum.signed_by.get_username()
        sections.append((f"Addendum ({signer}, {when})", addendum.text.strip()))
    return sections


def report_pdf(version: ReportVersion) -> bytes:
    """A signed version as the printed report (the same template as the printable page)."""
    return html_to_pdf(render_to_string("reporting/report_print.html", print_context(version)))


def print_context(version: ReportVersion) -> dict[str, object]:
    report = version.report
    order = report.order
    return {
        "version": version,
        "report": report,
        "order": order,
        "patient": order.patient,
        "facility": order.facility,
        "sections": version_sections(version),
        "signer": version.signed_by,
        "for_pdf": True,
    }


def _person_name(user: object) -> str:
    last = getattr(user, "last_name", "") or getattr(user, "username", "")
    first = getattr(user, "first_name", "")
    return f"{last}^{first}" if first else last


def report_object_store(version_id: int) -> None:
    """Ingest the version as a DICOM object into the order's (latest) study, through the
    same ingest as every image: durable, indexed, visible to DICOMweb and DIMSE."""
    version = (
        ReportVersion.objects.select_related(
            "report__order__patient", "report__order__procedure", "report__facility", "signed_by"
        )
        .filter(pk=version_id)
        .first()
    )
    if version is None:
        return
    report = version.report
    facility = report.facility
    kind = facility.report_dicom_object
    if not kind:
        return
    study = Study.objects.filter(order=report.order).order_by("-received_at").first()
    if study is None:
        raise NotYet(f"report {report.pk}: no study")
    document = report_objects.ReportDocument(
        study_instance_uid=study.study_instance_uid,
        patient_name=study.patient_name,
        patient_id=study.dicom_patient_id,
        issuer_of_patient_id=study.issuer_of_patient_id,
        patient_birth_date=study.patient_birth_date,
        patient_sex=study.patient_sex,
        accession_number=study.accession_number,
        study_date=study.study_date,
        study_time=study.study_time,
        study_id=study.study_id,
        referring_physician_name=study.referring_physician_name,
        study_description=study.study_description,
        institution_name=facility.name,
        title=f"{report.order.procedure.name} report",
        sections=tuple(version_sections(version)),
        status=_dicom_status(version.status),
        signer_name=_person_name(version.signed_by),
        signer_organization=facility.name,
        signed_at=version.signed_at,
        report_id=report.pk,
        version=version.number,
    )
    if kind == "pdf":
        dataset = report_objects.encapsulated_pdf(document, report_pdf(version))
    else:
        dataset = report_objects.basic_text_sr(document)
    try:
        with transaction.atomic():
            ingest(
                report_objects.part10_bytes(dataset),
                facility=facility,
                door=audit.Door.SYSTEM,
                actor=f"report {report.pk} v{version.number}",
            )
    except IngestError as error:
        # The same version stored already is a success inside ingest; anything else is
        # a fault of ours the logs must show.
        logger.error("report %s v%s not stored in its study: %s", report.pk, version.number, error)
        raise


def _dicom_status(status: str) -> str:
    if status == Report.Status.PRELIMINARY:
        return "preliminary"
    if status == Report.Status.FINAL:
        return "final"
    return "corrected"


def critical_result_email(critical_id: int) -> None:
    """E-mail the recipient of a critical result, once. The message names the patient by
    initials only and links to the result: e-mail is not a safe place for a report."""
    with transaction.atomic():
        critical = (
            CriticalResult.objects.select_for_update(of=("self",))
            .select_related("recipient", "report__order__patient", "report__order__procedure")
            .filter(pk=critical_id)
            .first()
        )
        if critical is None or critical.emailed_at is not None or critical.recipient is None:
            return
        if not critical.recipient.email:
            return
        order = critical.report.order
        patient = order.patient
        initials = "".join(part[:1] for part in (patient.given_name, patient.family_name)).upper()
        link = settings.SITE_URL.rstrip("/") + f"/reporting/critical/{critical.pk}/"
        send_mail(
            subject=f"Critical imaging result to acknowledge ({order.accession_number})",
            message=(
                f"A radiologist flagged a critical result for your patient {initials} "
                f"({order.procedure.name}, accession {order.accession_number}).\n\n"
                f"Read and acknowledge it here: {link}\n"
            ),
            from_email=None,
            recipient_list=[critical.recipient.email],
        )
        critical.emailed_at = timezone.now()
        critical.save(update_fields=["emailed_at"])
