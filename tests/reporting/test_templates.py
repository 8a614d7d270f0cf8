"""Report templates: typed on their page, imported from IHE MRRT files, offered per
procedure or modality, and what a report started from one must have filled in."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from accounts.roles import Role
from ris.models import ReportTemplate
from ris.reporting import selectors
from ris.reporting import services as reporting
from ris.services import RisError
from tests.factories import (
    PatientFactory,
    ProcedureFactory,
    client_for,
    exam_read,
    member,
    order_for,
    signature_of,
)

pytestmark = pytest.mark.django_db

CORPUS = Path(__file__).parent / "mrrt"


def upload(name: str, data: bytes | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(
        name, data if data is not None else (CORPUS / name).read_bytes(), content_type="text/html"
    )


def test_an_mrrt_file_is_imported_from_its_page_into_sections(radiologist, facility_a):
    client = client_for(radiologist)

    response = client.post(
        reverse("reporting:template_import"),
        {"facility": facility_a.pk, "modality": "CT", "file": upload("ct_chest.html")},
    )

    template = ReportTemplate.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("reporting:template_edit", args=[template.pk])
    assert template.name == "CT Chest"
    assert template.source == ReportTemplate.Source.MRRT
    assert template.source_identifier == "urn:radpacs:test:ct-chest:1"
    assert template.modality == "CT"
    titles = [section["title"] for section in template.sections]
    assert titles[0] == "Clinical Information" and "Findings" in titles
    assert "[[" in " ".join(section["text"] for section in template.sections)
    assert "<template_attributes>" in template.source_html


def test_importing_the_same_template_again_replaces_its_sections(radiologist, facility_a):
    first, _ = reporting.template_import(
        facility_id=facility_a.pk, data=(CORPUS / "ct_chest.html").read_bytes(), actor=radiologist
    )
    ReportTemplate.objects.filter(pk=first.pk).update(name="Our CT chest", sections=[])

    again, _ = reporting.template_import(
        facility_id=facility_a.pk, data=(CORPUS / "ct_chest.html").read_bytes(), actor=radiologist
    )

    assert again.pk == first.pk
    assert again.name == "Our CT chest"  # a local name survives the library update
    assert again.sections
    assert ReportTemplate.objects.count() == 1


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("not_mrrt.html", None, "Not an MRRT template"),
        ("latin1.html", None, "UTF-8"),
        ("big.html", b"<section>" + b"x" * (2 * 1024 * 1024 + 1), "2 MB"),
    ],
)
def test_a_file_that_is_not_a_template_is_refused_with_the_reason(
    radiologist, facility_a, name, data, message
):
    response = client_for(radiologist).post(
        reverse("reporting:template_import"),
        {"facility": facility_a.pk, "file": upload(name, data)},
    )

    assert response.status_code == 400
    assert message in response.content.decode()
    assert ReportTemplate.objects.count() == 0


def test_a_template_is_typed_with_titles_and_pick_lists_on_its_page(radiologist, facility_a):
    head_ct = ProcedureFactory(facility=facility_a, code="70450", modality="CT")
    markup = "## Findings\nBrain: [[Brain: normal | bleed]]\n\n## Impression\n[[Impression]]"

    response = client_for(radiologist).post(
        reverse("reporting:template_create"),
        {
            "facility": facility_a.pk,
            "name": "Head CT",
            "modality": "CT",
            "procedures": [head_ct.pk],
            "markup": markup,
            "is_active": "on",
        },
    )

    assert response.status_code == 302
    template = ReportTemplate.objects.get()
    assert template.sections == [
        {"title": "Findings", "text": "Brain: [[Brain: normal | bleed]]"},
        {"title": "Impression", "text": "[[Impression]]"},
    ]
    assert list(template.procedures.all()) == [head_ct]
    edit = client_for(radiologist).get(reverse("reporting:template_edit", args=[template.pk]))
    assert edit.context["form"].initial["markup"] == markup


def test_templates_are_offered_procedure_first_then_modality_then_general(radiologist, facility_a):
    head_ct = ProcedureFactory(facility=facility_a, code="70450", modality="CT")
    chest_ct = ProcedureFactory(facility=facility_a, code="71250", modality="CT")
    order = exam_read(order_for(PatientFactory(facility=facility_a), procedure=head_ct))

    def make(name, modality="", procedures=()):
        return reporting.template_save(
            facility_id=facility_a.pk,
            name=name,
            modality=modality,
            procedures=procedures,
            sections=[{"title": "", "text": name}],
            actor=radiologist,
        )

    general = make("General")
    ct = make("Any CT", "CT")
    head = make("Head CT", "CT", [head_ct])
    make("Chest CT", "CT", [chest_ct])
    make("MR", "MR")

    assert selectors.templates_for(order) == [head, ct, general]


def test_a_report_from_an_imported_template_is_not_signed_with_blanks_left(radiologist, facility_a):
    template, _ = reporting.template_import(
        facility_id=facility_a.pk, data=(CORPUS / "ct_chest.html").read_bytes(), actor=radiologist
    )
    order = exam_read(order_for(PatientFactory(facility=facility_a)))
    report = reporting.report_start(order=order, actor=radiologist, template=template)

    with pytest.raises(RisError, match="Fill in or delete the template's blanks"):
        reporting.report_sign(
            report=report, status="final", actor=radiologist, signature=signature_of(radiologist)
        )


def test_templates_are_kept_by_radiologists_of_their_facility_only(
    radiologist, facility_a, facility_b, clerk
):
    template = reporting.template_save(
        facility_id=facility_a.pk, name="A", sections=[], actor=radiologist
    )
    far = client_for(member(facility_b, Role.RADIOLOGIST, username="far"))

    assert far.get(reverse("reporting:template_edit", args=[template.pk])).status_code == 404
    assert client_for(clerk).get(reverse("reporting:template_list")).status_code == 403
    with pytest.raises(RisError, match="radiologists of their facility"):
        reporting.template_save(facility_id=facility_a.pk, name="B", sections=[], actor=clerk)
