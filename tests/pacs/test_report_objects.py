"""A signed report as a DICOM object in its study: Basic Text SR (TID 2000) or Encapsulated PDF."""

import dataclasses
import datetime as dt
import io
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import UID, BasicTextSRStorage, EncapsulatedPDFStorage

from pacs.dicom.report_objects import (
    ReportDocument,
    basic_text_sr,
    encapsulated_pdf,
    heading_concepts,
    part10_bytes,
    report_uids,
)

# Nothing here touches storage: one image store backend is enough for the archive's autouse.
pytestmark = pytest.mark.parametrize("image_store", ["disk"], indirect=True)

OSLO = dt.timezone(dt.timedelta(hours=1))
SIGNED = dt.datetime(2024, 3, 1, 12, 30, 5, tzinfo=OSLO)
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
assert len(PDF) % 2 == 1  # the odd length is what the padding tests are about

# dcmsr warns about every character set but ASCII and Latin-1 because its VR checker knows
# only those (dcmsr/libsrc/dsrdoc.cc); UTF-8 is what we want, so this one line is expected.
DCMSR_UTF8_NOTE = "W: The VR checker does not support this Specific Character Set: ISO_IR 192"


def report(**changes) -> ReportDocument:
    final = ReportDocument(
        study_instance_uid="1.2.826.0.1.3680043.10.1482.4242",
        patient_name="Müller^Zoë",
        patient_id="MRN42",
        issuer_of_patient_id="NORTH",
        patient_birth_date="19800229",
        patient_sex="F",
        accession_number="NORTH0000001",
        study_date="20240301",
        study_time="101500",
        study_id="1",
        referring_physician_name="Åberg^Lars",
        study_description="CT HEAD W/O CONTRAST",
        institution_name="North Imaging",
        title="CT HEAD W/O CONTRAST report",
        sections=(
            ("Clinical history", "Fall from bicycle, headache."),
            ("Technique", "Axial CT of the head without contrast."),
            ("Findings", "No intracranial haemorrhage. Ventricles normal."),
            ("Impression", "No acute intracranial abnormality."),
        ),
        status="final",
        signer_name="Søndergaard^Ingrid^^Dr.",
        signer_organization="North Imaging",
        signed_at=SIGNED,
        report_id=17,
        version=1,
    )
    return dataclasses.replace(final, **changes)


def read(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def dcmtk(program: str, path: Path, *options: str) -> subprocess.CompletedProcess:
    """Debian's dcmtk program on a file (not a same-named script in the venv)."""
    binary = shutil.which(program, path="/usr/bin:/bin")
    if binary is None:
        pytest.skip(f"{program} (Debian's dcmtk) is not installed: cannot check with dcmtk")
    return subprocess.run(
        [binary, *options, str(path)],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=60,
    )


def dsrdump(tmp_path: Path, data: bytes) -> str:
    """dsrdump's printout of an SR, after checking it read it without an error or warning.

    Its default is strict: a content item error aborts the read (-Ee would only warn).
    """
    path = tmp_path / "report.dcm"
    path.write_bytes(data)
    # Long values in full, all codes, template identification.
    result = dcmtk("dsrdump", path, "+Pl", "+Pc", "+Pt")
    complaints = [
        line
        for line in (result.stderr + result.stdout).splitlines()
        if line.startswith(("E:", "W:", "F:")) and line != DCMSR_UTF8_NOTE
    ]
    assert result.returncode == 0, result.stderr
    assert complaints == []
    assert "Error" not in result.stderr
    return result.stdout


def content(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    return list(ds.ContentSequence)


def sections(ds: pydicom.Dataset) -> list[tuple[str, list[tuple[str, str]]]]:
    """(heading code, [(element code, text)]) of each CONTAINER under the root."""
    return [
        (
            item.ConceptNameCodeSequence[0].CodeValue,
            [(t.ConceptNameCodeSequence[0].CodeValue, t.TextValue) for t in item.ContentSequence],
        )
        for item in content(ds)
        if item.ValueType == "CONTAINER"
    ]


# ---- Part 10 and round trips -----------------------------------------------------------


def test_the_sr_is_a_part_10_file_that_reads_back_with_the_study_as_given():
    data = part10_bytes(basic_text_sr(report()))

    assert data[128:132] == b"DICM"
    ds = read(data)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPClassUID == BasicTextSRStorage == ds.SOPClassUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.Modality == "SR"
    assert str(ds.PatientName) == "Müller^Zoë"
    assert str(ds.ReferringPhysicianName) == "Åberg^Lars"
    assert (ds.PatientID, ds.IssuerOfPatientID) == ("MRN42", "NORTH")
    assert (ds.PatientBirthDate, ds.PatientSex) == ("19800229", "F")
    assert ds.StudyInstanceUID == "1.2.826.0.1.3680043.10.1482.4242"
    assert (ds.AccessionNumber, ds.StudyID) == ("NORTH0000001", "1")
    assert (ds.StudyDate, ds.StudyTime) == ("20240301", "101500")
    assert ds.StudyDescription == "CT HEAD W/O CONTRAST"
    assert (ds.SeriesNumber, ds.SeriesDescription, ds.InstanceNumber) == (9000, "Reports", 1)
    assert (ds.Manufacturer, ds.InstitutionName) == ("RadPACS", "North Imaging")
    assert (ds.ContentDate, ds.ContentTime) == ("20240301", "123005")
    assert (ds.InstanceCreationDate, ds.InstanceCreationTime) == ("20240301", "123005")
    assert ds.TimezoneOffsetFromUTC == "+0100"


def test_empty_type_2_study_attributes_stay_present_and_empty():
    ds = read(
        part10_bytes(
            basic_text_sr(
                report(
                    patient_birth_date="",
                    patient_sex="",
                    accession_number="",
                    referring_physician_name="",
                    study_id="",
                    issuer_of_patient_id="",
                )
            )
        )
    )

    for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID"):
        assert keyword in ds and ds[keyword].value == "", keyword
    assert "ReferringPhysicianName" in ds and str(ds.ReferringPhysicianName) == ""
    assert "IssuerOfPatientID" not in ds  # type 3: left out rather than empty
    assert "ReferencedRequestSequence" not in ds  # no accession number, no known request


def test_the_pdf_object_reads_back_as_an_encapsulated_pdf_of_the_study():
    ds = read(part10_bytes(encapsulated_pdf(report(), PDF)))

    assert ds.SOPClassUID == EncapsulatedPDFStorage
    assert (ds.Modality, ds.SeriesNumber, ds.InstanceNumber) == ("DOC", 9001, 1)
    assert str(ds.PatientName) == "Müller^Zoë"
    assert ds.StudyInstanceUID == report().study_instance_uid
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.DocumentTitle == "CT HEAD W/O CONTRAST report"
    assert ds.BurnedInAnnotation == "YES"
    concept = ds.ConceptNameCodeSequence[0]
    assert (concept.CodeValue, concept.CodingSchemeDesignator) == ("18748-4", "LN")
    assert concept.CodeMeaning == "Diagnostic Imaging Report"
    assert ds.VerificationFlag == "VERIFIED"
    assert (ds.ContentDate, ds.ContentTime) == ("20240301", "123005")
    assert ds.AcquisitionDateTime == "20240301123005+0100"


def test_the_pdf_comes_back_byte_for_byte_once_its_pad_is_dropped():
    ds = read(part10_bytes(encapsulated_pdf(report(), PDF)))

    stored = ds.EncapsulatedDocument
    assert len(stored) == len(PDF) + 1 and stored.endswith(b"\x00")
    assert ds.EncapsulatedDocumentLength == len(PDF)
    assert stored[: ds.EncapsulatedDocumentLength] == PDF


def test_an_even_length_pdf_is_stored_unpadded():
    even = PDF + b"\n"
    ds = read(part10_bytes(encapsulated_pdf(report(), even)))

    assert ds.EncapsulatedDocument == even
    assert ds.EncapsulatedDocumentLength == len(even)


def test_bytes_that_are_not_a_pdf_are_refused():
    with pytest.raises(ValueError, match="PDF"):
        encapsulated_pdf(report(), b"<html>report</html>")


# ---- dcmtk -----------------------------------------------------------------------------


def test_dsrdump_reads_the_sr_cleanly_and_prints_every_section(tmp_path):
    printed = dsrdump(tmp_path, part10_bytes(basic_text_sr(report())))

    assert "Basic Text SR Document" in printed
    assert '(18748-4,LN,"Diagnostic Imaging Report")' in printed
    assert "TID 2000 (DCMR)" in printed
    assert "Müller^Zoë" in printed
    for _heading, text in report().sections:
        assert f'"{text}"' in printed
    assert "Verification Flag   : VERIFIED" in printed


def test_dsrdump_reads_a_100_kb_report_in_several_scripts(tmp_path):
    paragraph = "Keine Blutung. Ingen blødning. 出血なし。 Кровоизлияния нет. No bleed.\n"
    long_text = paragraph * (100_000 // len(paragraph.encode()) + 1)
    document = report(sections=(("Findings", long_text),))
    data = part10_bytes(basic_text_sr(document))

    printed = dsrdump(tmp_path, data)
    (_, [(_, stored)]) = sections(read(data))[0]
    assert len(stored.encode()) > 100_000
    assert stored == long_text.strip().replace("\n", "\r\n")
    assert "出血なし。 Кровоизлияния нет." in printed


def test_dsrdump_reads_a_preliminary_and_a_corrected_report(tmp_path):
    dsrdump(tmp_path, part10_bytes(basic_text_sr(report(status="preliminary"))))
    corrected = dsrdump(
        tmp_path, part10_bytes(basic_text_sr(report(status="corrected", version=2)))
    )

    assert "Predecessor Docs    : 1" in corrected


def test_dcmdump_reads_the_pdf_object(tmp_path):
    path = tmp_path / "report-pdf.dcm"
    path.write_bytes(part10_bytes(encapsulated_pdf(report(), PDF)))

    result = dcmtk("dcmdump", path)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "=EncapsulatedPDFStorage" in result.stdout
    assert "[application/pdf]" in result.stdout
    assert "(0042,0011) OB" in result.stdout


# ---- UIDs and determinism --------------------------------------------------------------


def test_making_the_objects_again_gives_the_same_uids_and_the_same_bytes():
    assert part10_bytes(basic_text_sr(report())) == part10_bytes(basic_text_sr(report()))
    assert part10_bytes(encapsulated_pdf(report(), PDF)) == part10_bytes(
        encapsulated_pdf(report(), PDF)
    )
    assert report_uids(report()) == report_uids(report())
    assert basic_text_sr(report()).SOPInstanceUID == report_uids(report())[1]
    assert basic_text_sr(report()).SeriesInstanceUID == report_uids(report())[0]


def test_each_version_is_a_new_instance_in_the_report_series():
    first_series, first = report_uids(report(version=1))
    second_series, second = report_uids(report(version=2, status="corrected"))

    assert first_series == second_series
    assert first != second
    assert report_uids(report(report_id=18))[0] != first_series
    assert report_uids(report(study_instance_uid="1.2.3"))[0] != first_series


def test_the_sr_and_the_pdf_of_a_version_are_different_series_and_instances():
    sr_series, sr_instance = report_uids(report(), modality="SR")
    pdf_series, pdf_instance = report_uids(report(), modality="DOC")

    assert sr_series != pdf_series and sr_instance != pdf_instance
    pdf = encapsulated_pdf(report(), PDF)
    assert (pdf.SeriesInstanceUID, pdf.SOPInstanceUID) == (pdf_series, pdf_instance)


@pytest.mark.parametrize("report_id", [1, 2, 17, 10**12])
@pytest.mark.parametrize("version", [1, 2, 99])
@pytest.mark.parametrize(
    "study_uid",
    ["1.2.3", "1.2.826.0.1.3680043.10.1482." + "9" * 34],  # the second is 64 long
)
def test_derived_uids_are_valid_and_at_most_64_characters(report_id, version, study_uid):
    document = report(report_id=report_id, version=version, study_instance_uid=study_uid)

    for modality in ("SR", "DOC"):
        for uid in report_uids(document, modality=modality):
            assert len(uid) <= 64
            assert UID(uid).is_valid, uid
            assert uid.startswith("1.2.826.0.1.3680043.10.1482.")


# ---- headings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("heading", "section", "element"),
    [
        ("Clinical history", "11329-0", "11329-0"),  # History / History
        ("HISTORY:", "11329-0", "11329-0"),
        ("Clinical information", "55752-0", "11329-0"),
        ("Indication", "18785-6", "18785-6"),
        ("Request", "55115-0", "55115-0"),
        (
            "Technique",
            "55111-9",
            "121065",
        ),  # Current Procedure Descriptions / Procedure Description
        ("Comparison", "18834-2", "121069"),  # Previous Findings / Previous Finding
        ("Prior studies", "55114-3", "121065"),
        ("Findings", "59776-5", "121071"),  # Findings / Finding
        ("Impression", "19005-8", "121073"),  # Impressions / Impression
        ("Conclusion", "55110-1", "121077"),
        ("Recommendations", "18783-1", "121075"),
        ("Addendum", "55107-7", "55107-7"),
    ],
)
def test_headings_are_coded_as_cid_7001_with_cid_7002_text(heading, section, element):
    concepts = heading_concepts(heading)
    assert concepts is not None
    assert (concepts[0][0], concepts[1][0]) == (section, element)

    ds = basic_text_sr(report(sections=((heading, "Some words."),)))
    assert sections(ds) == [(section, [(element, "Some words.")])]


def test_an_uncoded_heading_goes_under_findings_and_keeps_its_words():
    ds = basic_text_sr(
        report(
            sections=(
                ("Lungs", "Clear."),
                ("Findings", "No effusion."),
                ("", "Free text."),
                ("Impression", "Normal."),
            )
        )
    )

    assert sections(ds) == [
        (
            "59776-5",
            [
                ("121071", "Lungs:\r\nClear."),
                ("121071", "No effusion."),
                ("121071", "Free text."),
            ],
        ),
        ("19005-8", [("121073", "Normal.")]),
    ]


def test_empty_sections_are_left_out():
    ds = basic_text_sr(report(sections=(("History", "  \n "), ("Findings", "Normal."))))

    assert sections(ds) == [("59776-5", [("121071", "Normal.")])]


def test_line_breaks_become_cr_lf_and_other_control_characters_go():
    ds = basic_text_sr(report(sections=(("Findings", "One.\nTwo.\r\nThree.\rFour\x00\x07."),)))

    assert sections(ds)[0][1] == [("121071", "One.\r\nTwo.\r\nThree.\r\nFour  .")]


def test_the_content_tree_follows_tid_2000():
    ds = basic_text_sr(report())

    assert ds.ValueType == "CONTAINER" and ds.ContinuityOfContent == "SEPARATE"
    root = ds.ConceptNameCodeSequence[0]
    assert (root.CodeValue, root.CodingSchemeDesignator) == ("18748-4", "LN")
    template = ds.ContentTemplateSequence[0]
    assert (template.MappingResource, template.TemplateIdentifier) == ("DCMR", "2000")
    language, title, observer_type, observer, organization, *_ = content(ds)
    assert language.ConceptNameCodeSequence[0].CodeValue == "121049"
    assert language.ConceptCodeSequence[0].CodingSchemeDesignator == "RFC5646"
    assert title.RelationshipType == "HAS CONCEPT MOD"
    assert title.TextValue == "CT HEAD W/O CONTRAST report"
    assert observer_type.ConceptCodeSequence[0].CodeValue == "121006"  # Person
    assert observer.RelationshipType == "HAS OBS CONTEXT"
    assert str(observer.PersonName) == "Søndergaard^Ingrid^^Dr."
    assert organization.TextValue == "North Imaging"


# ---- status, verification and versions ------------------------------------------------


def test_a_signed_final_report_is_complete_and_verified_by_its_signer():
    ds = read(part10_bytes(basic_text_sr(report())))

    assert (ds.CompletionFlag, ds.VerificationFlag, ds.PreliminaryFlag) == (
        "COMPLETE",
        "VERIFIED",
        "FINAL",
    )
    [verifier] = ds.VerifyingObserverSequence
    assert str(verifier.VerifyingObserverName) == "Søndergaard^Ingrid^^Dr."
    assert verifier.VerifyingOrganization == "North Imaging"
    assert verifier.VerificationDateTime == "20240301123005+0100"
    assert len(verifier.VerifyingObserverIdentificationCodeSequence) == 0
    assert "PredecessorDocumentsSequence" not in ds


def test_a_preliminary_report_is_partial_and_unverified_but_names_its_signer():
    ds = basic_text_sr(report(status="preliminary"))

    assert (ds.CompletionFlag, ds.VerificationFlag, ds.PreliminaryFlag) == (
        "PARTIAL",
        "UNVERIFIED",
        "PRELIMINARY",
    )
    assert "VerifyingObserverSequence" not in ds
    names = [str(i.PersonName) for i in content(ds) if i.ValueType == "PNAME"]
    assert names == ["Søndergaard^Ingrid^^Dr."]


def test_a_corrected_report_names_the_version_it_replaces():
    corrected = report(status="corrected", version=3)
    ds = read(part10_bytes(basic_text_sr(corrected)))

    assert (ds.CompletionFlag, ds.VerificationFlag, ds.InstanceNumber) == (
        "COMPLETE",
        "VERIFIED",
        3,
    )
    [study] = ds.PredecessorDocumentsSequence
    assert study.StudyInstanceUID == corrected.study_instance_uid
    [series] = study.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == ds.SeriesInstanceUID
    [instance] = series.ReferencedSOPSequence
    assert instance.ReferencedSOPClassUID == BasicTextSRStorage
    assert instance.ReferencedSOPInstanceUID == report_uids(report(version=2))[1]
    assert instance.ReferencedSOPInstanceUID == basic_text_sr(report(version=2)).SOPInstanceUID


def test_a_final_after_a_preliminary_names_the_preliminary_it_replaces():
    ds = basic_text_sr(report(version=2))

    [study] = ds.PredecessorDocumentsSequence
    instance = study.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert instance.ReferencedSOPInstanceUID == report_uids(report(status="preliminary"))[1]


def test_an_unsigned_draft_is_unverified_and_dated_by_its_study():
    ds = basic_text_sr(report(status="preliminary", signer_name="", signed_at=None))

    assert ds.VerificationFlag == "UNVERIFIED"
    assert (ds.ContentDate, ds.ContentTime) == ("20240301", "101500")
    assert "InstanceCreationDate" not in ds
    assert not [i for i in content(ds) if i.ValueType == "PNAME"]


def test_a_final_report_without_a_signer_is_not_verified():
    ds = basic_text_sr(report(signer_name="", signed_at=None))

    assert (ds.CompletionFlag, ds.VerificationFlag) == ("COMPLETE", "UNVERIFIED")


def test_an_unsigned_report_of_an_undated_study_is_refused():
    with pytest.raises(ValueError, match="Content Date"):
        basic_text_sr(report(signer_name="", signed_at=None, study_date=""))


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "addended"},
        {"status": "corrected", "version": 1},
        {"version": 0},
        {"signed_at": dt.datetime(2024, 3, 1, 12, 30)},  # naive
    ],
)
def test_documents_that_would_make_a_wrong_object_are_refused(changes):
    with pytest.raises(ValueError):
        report(**changes)
