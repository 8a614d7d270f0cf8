"""Reporting operations: claiming exams to read, writing, signing, correcting and adding
to reports, and critical results. Every write to a report goes through here, whatever
the door (page, API); each is audited in its transaction, and what leaves the building
(HL7 ORU^R01, the DICOM object in the study, e-mail) is queued to go after the commit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from accounts import audit
from accounts.models import Notification, User
from accounts.roles import Capability
from accounts.scoping import capabilities_for
from accounts.services import Signature
from billing import services as billing
from ris.hl7 import outbox
from ris.models import (
    REPORT_CLOSED,
    REPORT_TRANSITIONS,
    CriticalResult,
    Order,
    Report,
    ReportAddendum,
    ReportMacro,
    ReportTemplate,
    ReportVersion,
)
from ris.reporting import picklists
from ris.services import RisError, order_status_set

logger = logging.getLogger(__name__)

Status = Report.Status
Section = dict[str, str]

# Exams that can be read: done at the modality (or with images in while the technologist
# has not closed them yet), and those already read that may be read again (preliminary).
READABLE = frozenset(
    {Order.Status.ARRIVED, Order.Status.IN_PROGRESS, Order.Status.COMPLETED, Order.Status.REPORTED}
)
MAX_SECTIONS = 40
MAX_TEXT = 200_000
# A free-text report is one section without a title.
FREE_TEXT: list[Section] = [{"title": "", "text": ""}]


# ---- sections ------------------------------------------------------------------------


def sections_clean(sections: Iterable[Mapping[str, Any]]) -> list[Section]:
    """Sections as stored: a list of {"title", "text"} with text only, line breaks as
    \\n, nothing more than MAX_SECTIONS or MAX_TEXT characters in all."""
    cleaned: list[Section] = []
    for section in sections:
        if not isinstance(section, Mapping):
            raise RisError("Each report section has a title and a text.")
        title, text = section.get("title", ""), section.get("text", "")
        if not isinstance(title, str) or not isinstance(text, str):
            raise RisError("Each report section has a title and a text.")
        title = " ".join(title.split())[:200]
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
        cleaned.append({"title": title, "text": text})
    if len(cleaned) > MAX_SECTIONS:
        raise RisError(f"A report has at most {MAX_SECTIONS} sections.")
    if sum(len(s["title"]) + len(s["text"]) for s in cleaned) > MAX_TEXT:
        raise RisError(f"A report has at most {MAX_TEXT:,} characters.")
    return cleaned or [dict(section) for section in FREE_TEXT]


def sections_text(sections: Sequence[Section]) -> str:
    """The report as one text: each section with words, its title in capitals on a line
    of its own (the shape receivers of ORU^R01 and printed reports show)."""
    parts = []
    for section in sections:
        body = section["text"].strip("\n").rstrip()
        if not body.strip():
            continue
        title = section["title"].strip()
        parts.append(f"{title.upper()}:\n{body}" if title else body)
    return "\n\n".join(parts)


def report_document_text(report: Report) -> str:
    """The whole report as it stands released: its text, then each signed addendum."""
    parts = [report.text]
    for addendum in report.addenda.filter(signed_at__isnull=False).select_related("signed_by"):
        assert addendum.signed_at is not None and addendum.signed_by is not None
        when = timezone.localtime(addendum.signed_at).strftime("%Y-%m-%d %H:%M")
        signer = addendum.signed_by.get_full_name() or addendum.signed_by.get_username()
        parts.append(f"ADDENDUM ({signer}, {when}):\n{addendum.text.strip()}")
    return "\n\n".join(part for part in parts if part)


def template_sections(template: ReportTemplate | None) -> list[Section]:
    if template is None:
        return [dict(section) for section in FREE_TEXT]
    return sections_clean(template.sections)


# ---- the reading worklist: who reads what ------------------------------------------------


def _can_read(user: User, order: Order) -> None:
    if Capability.READ_STUDIES not in capabilities_for(user, order.facility_id):
        raise RisError(f"{user.get_username()} does not read studies at {order.facility.name}.")


@transaction.atomic
def reading_claim(*, order: Order, actor: User, door: str = audit.Door.PAGE) -> Order:
    """Take an exam to read: nobody else can claim it until it is released. Claiming one's
    own claim again is fine; someone else's is refused with who and since when."""
    _can_read(actor, order)
    locked = (
        Order.objects.select_for_update(of=("self",))
        .select_related("reading_radiologist")
        .get(pk=order.pk)
    )
    if locked.reading_radiologist_id == actor.pk:
        return locked
    if locked.reading_radiologist is not None:
        holder = locked.reading_radiologist
        since = timezone.localtime(locked.reading_claimed_at).strftime("%H:%M")
        raise RisError(
            f"{locked.accession_number} is being read by "
            f"{holder.get_full_name() or holder.get_username()} (since {since})."
        )
    if locked.status not in READABLE:
        raise RisError(
            f"{locked.accession_number} is {locked.get_status_display().lower()}: "
            "there is nothing to read."
        )
    return _reading_set(locked, actor, actor=actor, door=door)


@transaction.atomic
def reading_assign(
    *, order: Order, radiologist: User | None, actor: User, door: str = audit.Door.PAGE
) -> Order:
    """Give an exam to a radiologist (or, with None, back to the worklist), over any claim:
    what a lead radiologist does to balance the work."""
    _can_read(actor, order)
    if radiologist is not None:
        _can_read(radiologist, order)
    locked = Order.objects.select_for_update().get(pk=order.pk)
    if locked.reading_radiologist_id == (radiologist.pk if radiologist else None):
        return locked
    return _reading_set(locked, radiologist, actor=actor, door=door)


@transaction.atomic
def reading_release(*, order: Order, actor: User, door: str = audit.Door.PAGE) -> Order:
    """Give back one's own claim (another's is taken back by `reading_assign`)."""
    locked = Order.objects.select_for_update().get(pk=order.pk)
    if locked.reading_radiologist_id is None:
        return locked
    if locked.reading_radiologist_id != actor.pk:
        raise RisError(f"{locked.accession_number} is claimed by someone else.")
    return _reading_set(locked, None, actor=actor, door=door)


def _check_reader(order: Order, actor: User) -> None:
    """Only the radiologist reading an exam writes or signs its report: another one
    takes it over by having it assigned (which the audit trail shows)."""
    reader = order.reading_radiologist
    if reader is not None and reader.pk != actor.pk:
        raise RisError(
            f"{order.accession_number} is being read by "
            f"{reader.get_full_name() or reader.get_username()}: have it assigned to you "
            "to change its report."
        )


def _reading_set(order: Order, radiologist: User | None, *, actor: User, door: str) -> Order:
    before = order.reading_radiologist_id
    order.reading_radiologist = radiologist
    order.reading_claimed_at = timezone.now() if radiologist else None
    order.save(update_fields=["reading_radiologist", "reading_claimed_at", "updated_at"])
    audit.record(
        action=audit.Action.UPDATE,
        obj=order,
        user=actor,
        door=door,
        detail={"reading_radiologist": [before, radiologist.pk if radiologist else None]},
    )
    return order


# ---- writing -----------------------------------------------------------------------------


@transaction.atomic
def report_start(
    *,
    order: Order,
    actor: User,
    template: ReportTemplate | None = None,
    door: str = audit.Door.PAGE,
) -> Report:
    """The report of an exam, started now as a draft (from `template`, or free text) if
    there is none yet; claims the exam for `actor` when nobody has."""
    _can_read(actor, order)
    existing = Report.objects.filter(order=order).first()
    if existing is not None:
        return existing
    locked = Order.objects.select_for_update().get(pk=order.pk)
    if locked.status not in READABLE:
        raise RisError(
            f"{locked.accession_number} is {locked.get_status_display().lower()}: "
            "there is nothing to report."
        )
    if locked.reading_radiologist_id not in (None, actor.pk):
        raise RisError(f"{locked.accession_number} is being read by someone else.")
    if template is not None and template.facility_id != locked.facility_id:
        raise RisError("That template belongs to another facility.")
    existing = Report.objects.filter(order=locked).first()  # under the order's lock
    if existing is not None:
        return existing
    if locked.reading_radiologist_id is None:
        _reading_set(locked, actor, actor=actor, door=door)
    sections = template_sections(template)
    report = Report.objects.create(
        facility_id=locked.facility_id,
        order=locked,
        template=template,
        sections=sections,
        text=sections_text(sections),
        author=actor,
    )
    audit.record(
        action=audit.Action.CREATE,
        obj=report,
        user=actor,
        door=door,
        detail={"template": template.pk} if template else None,
    )
    return report


@transaction.atomic
def report_draft_save(
    *,
    report: Report,
    sections: Iterable[Mapping[str, Any]],
    actor: User,
    revision: int | None = None,
    door: str = audit.Door.PAGE,
) -> Report:
    """Keep the words of a report not yet final (the editor's autosave). `revision` is
    the one the editor started from: if the report changed since (another tab, another
    person), nothing is saved and the error says so, rather than one silently winning."""
    locked = Report.objects.select_for_update().get(pk=report.pk)
    _can_read(actor, locked.order)
    _check_reader(locked.order, actor)
    if locked.is_closed:
        raise RisError(
            f"The report is {locked.get_status_display().lower()}: its text does not change. "
            "Add an addendum or issue a corrected report."
        )
    if revision is not None and revision != locked.revision:
        raise RisError(
            "The report was changed elsewhere (another window?) since this page was opened: "
            "reload it to see the latest words."
        )
    cleaned = sections_clean(sections)
    if cleaned == locked.sections:
        return locked
    locked.sections = cleaned
    locked.text = sections_text(cleaned)
    locked.revision += 1
    if locked.author_id is None:
        locked.author = actor
    locked.save(update_fields=["sections", "text", "revision", "author", "updated_at"])
    audit.record(
        action=audit.Action.UPDATE, obj=locked, user=actor, door=door, detail={"text": True}
    )
    return locked


# ---- signing -------------------------------------------------------------------------------


def _release_check(
    text: str, sections: Sequence[Section], signature: Signature, actor: User
) -> None:
    """What every signature needs: the signer's fresh password, words, no blanks left."""
    signature.check(actor)
    if not text.strip():
        raise RisError("An empty report cannot be signed.")
    left = [label for section in sections for label in picklists.unfilled(section["text"])]
    if left:
        names = ", ".join(dict.fromkeys(left))
        raise RisError(f"Fill in or delete the template's blanks before signing: {names}.")


@transaction.atomic
def report_sign(
    *,
    report: Report,
    status: str,
    actor: User,
    signature: Signature,
    revision: int | None = None,
    door: str = audit.Door.PAGE,
) -> Report:
    """Release a report as preliminary or final, signed by `actor` (who typed their
    password again: `signature`). A new version is kept, the exam moves to reported or
    final, and the report goes to the HIS (ORU^R01) and, where the facility wants it,
    into the study as a DICOM object."""
    locked = Report.objects.select_for_update().get(pk=report.pk)
    order = locked.order
    if Capability.SIGN_REPORTS not in capabilities_for(actor, order.facility_id):
        raise RisError(f"{actor.get_username()} does not sign reports at {order.facility.name}.")
    if status not in (Status.PRELIMINARY, Status.FINAL):
        raise RisError("A report is signed as preliminary or final.")
    if status not in REPORT_TRANSITIONS.get(locked.status, frozenset()):
        raise RisError(
            f"A {locked.get_status_display().lower()} report cannot be signed "
            f"{Status(status).label.lower()}: add an addendum or issue a corrected report."
        )
    if revision is not None and revision != locked.revision:
        raise RisError("The report was changed elsewhere since this page was opened: reload it.")
    _check_reader(order, actor)
    _release_check(locked.text, locked.sections, signature, actor)
    _exam_reported(order, status, actor=actor, door=door)
    return _release(locked, status, actor=actor, door=door, detail={})


@transaction.atomic
def report_correct(
    *,
    report: Report,
    sections: Iterable[Mapping[str, Any]],
    actor: User,
    signature: Signature,
    reason: str,
    door: str = audit.Door.PAGE,
) -> Report:
    """Replace the words of a final report with corrected ones (HL7 result status C):
    for an error, where an addendum would leave wrong words standing. The earlier
    versions stay, each viewable."""
    locked = Report.objects.select_for_update().get(pk=report.pk)
    if Capability.SIGN_REPORTS not in capabilities_for(actor, locked.facility_id):
        raise RisError(f"{actor.get_username()} does not sign reports here.")
    if not locked.is_closed:
        raise RisError("Only a final report is corrected; until then, edit it and sign it.")
    reason = " ".join(reason.split())
    if not reason:
        raise RisError("Say why the report is corrected.")
    cleaned = sections_clean(sections)
    text = sections_text(cleaned)
    _release_check(text, cleaned, signature, actor)
    if text == locked.text:
        raise RisError("The corrected report says the same as the final one.")
    locked.sections, locked.text = cleaned, text
    locked.revision += 1
    return _release(
        locked, Status.CORRECTED, actor=actor, door=door, detail={"reason": reason[:500]}
    )


def _release(
    report: Report, status: str, *, actor: User, door: str, detail: dict[str, Any]
) -> Report:
    """Record a signed release: the report row, a new version (with its addenda), the
    audit row, and what goes out once committed."""
    now = timezone.now()
    before = report.status
    report.status = status
    report.signed_by = actor
    report.signed_at = now
    if status == Status.PRELIMINARY and report.preliminary_at is None:
        report.preliminary_at = now
    if status in REPORT_CLOSED and report.final_at is None:
        report.final_at = now
        report.preliminary_at = report.preliminary_at or now
    report.save()
    text = report_document_text(report)
    number = (report.versions.aggregate(last=Max("number"))["last"] or 0) + 1
    version = ReportVersion.objects.create(
        report=report,
        number=number,
        status=status,
        sections=report.sections,
        text=text,
        signed_by=actor,
        signed_at=now,
        is_critical=report.is_critical,
    )
    audit.record(
        action=audit.Action.UPDATE,
        obj=report,
        user=actor,
        door=door,
        detail={"status": [before, status], "version": number, **detail},
    )
    outbox.results_enqueue(report=report, text=text)
    if status == Status.CORRECTED or (status == Status.FINAL and before != Status.FINAL):
        billing.charges_on_report(report=report, door=door)
    if report.facility.report_dicom_object:
        from ris.reporting import tasks

        transaction.on_commit(lambda: tasks.store_report_object.delay(version.pk), robust=True)
    return report


def _exam_reported(order: Order, status: str, *, actor: User, door: str) -> None:
    """Move the exam along with its report: reported on a preliminary, final on a final.
    An exam whose images came in but whose technologist did not close it is completed on
    the way (the report shows it was performed); one without images is refused."""
    target = Order.Status.REPORTED if status == Status.PRELIMINARY else Order.Status.FINAL
    current = Order.objects.only("status").get(pk=order.pk).status
    if current in (Order.Status.ARRIVED, Order.Status.IN_PROGRESS):
        if order.images_received_at is None:
            raise RisError(
                f"{order.accession_number} is {Order.Status(current).label.lower()} and no "
                "images were received: it is reported once performed."
            )
        steps = [Order.Status.IN_PROGRESS] if current == Order.Status.ARRIVED else []
        for step in [*steps, Order.Status.COMPLETED]:
            order_status_set(order=order, status=step, actor=actor, door=door, reason="reported")
        current = Order.Status.COMPLETED
    if current == target or (current == Order.Status.FINAL and target == Order.Status.REPORTED):
        return
    if current not in (Order.Status.COMPLETED, Order.Status.REPORTED):
        raise RisError(
            f"{order.accession_number} is {Order.Status(current).label.lower()}: "
            "it cannot be reported."
        )
    order_status_set(order=order, status=target, actor=actor, door=door)


# ---- addenda ---------------------------------------------------------------------------------


@transaction.atomic
def addendum_save(
    *, report: Report, text: str, actor: User, door: str = audit.Door.PAGE
) -> ReportAddendum:
    """Write (or go on writing) the draft addendum of a final report."""
    locked = Report.objects.select_for_update().get(pk=report.pk)
    _can_read(actor, locked.order)
    if not locked.is_closed:
        raise RisError("An addendum is added to a final report; until then, edit the report.")
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    if len(text) > MAX_TEXT:
        raise RisError(f"An addendum has at most {MAX_TEXT:,} characters.")
    draft = locked.addenda.filter(signed_at__isnull=True).first()
    if draft is None:
        draft = ReportAddendum.objects.create(report=locked, text=text, author=actor)
        audit.record(
            action=audit.Action.CREATE,
            obj=locked,
            user=actor,
            door=door,
            detail={"addendum": draft.pk},
        )
        return draft
    if draft.text != text:
        draft.text = text
        draft.save(update_fields=["text", "updated_at"])
    return draft


@transaction.atomic
def addendum_sign(
    *, report: Report, actor: User, signature: Signature, door: str = audit.Door.PAGE
) -> Report:
    """Sign the draft addendum: from now on part of the report, sent again in full (HL7
    result status C) with it."""
    locked = Report.objects.select_for_update().get(pk=report.pk)
    if Capability.SIGN_REPORTS not in capabilities_for(actor, locked.facility_id):
        raise RisError(f"{actor.get_username()} does not sign reports here.")
    draft = locked.addenda.filter(signed_at__isnull=True).first()
    if draft is None or not draft.text.strip():
        raise RisError("There is no addendum to sign: write it first.")
    signature.check(actor)
    draft.signed_by = actor
    draft.signed_at = timezone.now()
    draft.save(update_fields=["signed_by", "signed_at", "updated_at"])
    return _release(locked, Status.ADDENDED, actor=actor, door=door, detail={"addendum": draft.pk})


# ---- critical results --------------------------------------------------------------------


@transaction.atomic
def critical_result_flag(
    *, report: Report, finding: str, actor: User, door: str = audit.Door.PAGE
) -> CriticalResult:
    """Mark a report critical and tell its referring physician now: in the application
    (when they are a user of ours) and by e-mail (when they have an address). Without
    either, the result waits on the list of unacknowledged ones for a phone call."""
    locked = (
        Report.objects.select_for_update(of=("self",))
        .select_related("order__referring_physician")
        .get(pk=report.pk)
    )
    _can_read(actor, locked.order)
    finding = finding.strip()
    if not finding:
        raise RisError("Say what the critical finding is.")
    order = locked.order
    physician = order.referring_physician
    critical = CriticalResult.objects.create(
        facility_id=locked.facility_id,
        report=locked,
        finding=finding[:5000],
        flagged_by=actor,
        recipient=physician,
        recipient_name=(
            (physician.get_full_name() or physician.get_username())
            if physician
            else order.referring_physician_name.replace("^", " ").strip()
        )[:200],
    )
    if not locked.is_critical:
        locked.is_critical = True
        locked.save(update_fields=["is_critical", "updated_at"])
    audit.record(
        action=audit.Action.CREATE,
        obj=locked,
        user=actor,
        door=door,
        detail={"critical_result": critical.pk},
    )
    if physician is not None:
        from django.urls import reverse

        Notification.objects.create(
            user=physician,
            facility_id=locked.facility_id,
            kind="critical_result",
            title=f"Critical result: {order.patient.display_name}, {order.procedure.name}",
            body=finding[:2000],
            url=reverse("reporting:critical_detail", args=[critical.pk]),
        )
        critical.notified_at = timezone.now()
        critical.save(update_fields=["notified_at"])
        if physician.email:
            from ris.reporting import tasks

            transaction.on_commit(
                lambda: tasks.send_critical_result_email.delay(critical.pk), robust=True
            )
    return critical


@transaction.atomic
def critical_result_acknowledge(
    *,
    critical: CriticalResult,
    actor: User,
    via: str = CriticalResult.Channel.APP,
    note: str = "",
    door: str = audit.Door.PAGE,
) -> CriticalResult:
    """Record that the referring physician has the critical result: acknowledged by them
    in the application, or by the radiologist after a phone call (with a note of who
    read it back). Once only."""
    locked = (
        CriticalResult.objects.select_for_update(of=("self",))
        .select_related("report__order")
        .get(pk=critical.pk)
    )
    if locked.acknowledged_at is not None:
        raise RisError("This critical result was acknowledged already.")
    if via not in CriticalResult.Channel.values:
        raise RisError("Say how the result was communicated.")
    note = " ".join(note.split())[:500]
    if via == CriticalResult.Channel.APP:
        if locked.recipient_id != actor.pk:
            raise RisError("Only the physician it was sent to acknowledges it in the application.")
    else:
        _can_read(actor, locked.report.order)
        if not note:
            raise RisError("Say who took the call and read the result back.")
    locked.acknowledged_at = timezone.now()
    locked.acknowledged_by = actor
    locked.acknowledged_via = via
    locked.acknowledgement_note = note
    locked.save(
        update_fields=[
            "acknowledged_at",
            "acknowledged_by",
            "acknowledged_via",
            "acknowledgement_note",
        ]
    )
    Notification.objects.filter(
        kind="critical_result", url__endswith=f"/critical/{locked.pk}/", read_at__isnull=True
    ).update(read_at=locked.acknowledged_at)
    audit.record(
        action=audit.Action.UPDATE,
        obj=locked.report,
        user=actor,
        door=door,
        detail={"critical_result": locked.pk, "acknowledged_via": via},
    )
    return locked


# ---- templates ---------------------------------------------------------------------------

MAX_TEMPLATE_BYTES = 2 * 1024 * 1024


def sections_from_markup(markup: str) -> list[Section]:
    """Sections typed as text: a line "## Title" starts a section; lines before the first
    title make an untitled one."""
    sections: list[Section] = []
    lines: list[str] = []
    title: str | None = None

    def close() -> None:
        text = "\n".join(lines).strip("\n")
        if title is not None or text.strip():
            sections.append({"title": title or "", "text": text})

    for line in markup.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line.startswith("## "):
            close()
            title, lines = line[3:].strip(), []
        else:
            lines.append(line.rstrip())
    close()
    return sections_clean(sections)


def sections_to_markup(sections: Sequence[Mapping[str, str]]) -> str:
    parts = []
    for section in sections:
        head = f"## {section['title']}\n" if section.get("title") else ""
        parts.append(head + section.get("text", ""))
    return "\n\n".join(parts)


def _template_check(template: ReportTemplate, actor: User) -> None:
    if Capability.READ_STUDIES not in capabilities_for(actor, template.facility_id):
        raise RisError("Templates are kept by the radiologists of their facility.")
    if not template.name.strip():
        raise RisError("A template needs a name.")
    procedures = template.procedures.all() if template.pk else []
    if any(p.facility_id != template.facility_id for p in procedures):
        raise RisError("A template is for procedures of its own facility.")


@transaction.atomic
def template_save(
    *,
    facility_id: int,
    name: str,
    sections: Iterable[Mapping[str, Any]],
    actor: User,
    modality: str = "",
    procedures: Iterable[Any] = (),
    is_active: bool = True,
    template: ReportTemplate | None = None,
) -> ReportTemplate:
    """Create or change a template written here (or rename/retarget an imported one)."""
    cleaned = sections_clean(sections)
    creating = template is None
    if template is None:
        template = ReportTemplate(facility_id=facility_id, created_by=actor)
    elif template.facility_id != facility_id:
        raise RisError("A template stays with its facility.")
    template.name = " ".join(name.split())[:200]
    template.modality = modality
    template.sections = cleaned
    template.is_active = is_active
    _template_check(template, actor)
    procedures = list(procedures)
    if any(p.facility_id != facility_id for p in procedures):
        raise RisError("A template is for procedures of its own facility.")
    template.save()
    template.procedures.set(procedures)
    audit.record(
        action=audit.Action.CREATE if creating else audit.Action.UPDATE,
        obj=template,
        user=actor,
        door=audit.Door.PAGE,
    )
    return template


@transaction.atomic
def template_import(
    *,
    facility_id: int,
    data: bytes,
    actor: User,
    modality: str = "",
    procedures: Iterable[Any] = (),
) -> tuple[ReportTemplate, tuple[str, ...]]:
    """A template from an IHE MRRT file (the RSNA RadReport library's format). The same
    template (by its dcterms.identifier) imported again replaces the earlier import's
    sections, so a library update is one upload. Returns the template and the parser's
    warnings (what was dropped)."""
    from ris.reporting import mrrt

    if len(data) > MAX_TEMPLATE_BYTES:
        raise RisError("A template file has at most 2 MB.")
    try:
        imported = mrrt.parse_mrrt(data)
    except mrrt.MrrtError as error:
        raise RisError(str(error)) from error
    existing = None
    if imported.identifier:
        existing = ReportTemplate.objects.filter(
            facility_id=facility_id,
            source=ReportTemplate.Source.MRRT,
            source_identifier=imported.identifier[:200],
        ).first()
    template = template_save(
        facility_id=facility_id,
        name=existing.name if existing else imported.title,
        sections=[{"title": s.title, "text": s.text} for s in imported.sections],
        actor=actor,
        modality=modality or (existing.modality if existing else ""),
        procedures=list(procedures) or (list(existing.procedures.all()) if existing else []),
        template=existing,
    )
    template.source = ReportTemplate.Source.MRRT
    template.source_identifier = imported.identifier[:200]
    template.source_html = data.decode("utf-8", errors="replace").replace("\x00", "")
    template.save(update_fields=["source", "source_identifier", "source_html", "updated_at"])
    return template, imported.warnings


# ---- macros ------------------------------------------------------------------------------


@transaction.atomic
def macro_save(
    *,
    facility_id: int,
    name: str,
    text: str,
    actor: User,
    personal: bool = True,
    modality: str = "",
    is_active: bool = True,
    macro: ReportMacro | None = None,
) -> ReportMacro:
    """Create or change a macro: one's own (`personal`), or the facility's."""
    if Capability.READ_STUDIES not in capabilities_for(actor, facility_id):
        raise RisError("Macros are kept by the radiologists of their facility.")
    name = " ".join(name.split())[:100]
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
    if not name or not text.strip():
        raise RisError("A macro needs a name and words.")
    if len(text) > 20_000:
        raise RisError("A macro has at most 20,000 characters.")
    if macro is None:
        macro = ReportMacro(facility_id=facility_id)
    elif macro.facility_id != facility_id:
        raise RisError("A macro stays with its facility.")
    elif macro.owner_id not in (None, actor.pk):
        raise RisError("That is another radiologist's own macro.")
    clash = ReportMacro.objects.filter(
        facility_id=facility_id,
        name__iexact=name,
        owner=actor if personal else None,
        is_active=True,
    ).exclude(pk=macro.pk)
    if is_active and clash.exists():
        raise RisError(f"There is a macro called {name} already.")
    macro.name, macro.text, macro.modality, macro.is_active = name, text, modality, is_active
    macro.owner = actor if personal else None
    macro.save()
    return macro
