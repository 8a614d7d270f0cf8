"""A signed radiology report as a DICOM object in its study, so viewers and other archives see it.

Two forms, chosen per facility: a Basic Text SR (PS3.3 A.35.1) following TID 2000 "Basic
Diagnostic Imaging Report" (PS3.16), or an Encapsulated PDF (PS3.3 A.45.1) of the report's PDF.
Everything in the object comes from a `ReportDocument`: no clock, no random UIDs, so making
the object again for the same version gives the same SOP Instance UID and the same bytes, and
the archive stores it once.

Section headings are coded with CID 7001 "Diagnostic Imaging Report Heading" as the current
standard has it: LOINC codes. The DCM codes (121060 History ... 121076 Conclusions) are the
older encoding, which PS3.16 keeps for receivers' backward compatibility only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    BasicTextSRStorage,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
)

from pacs.dicom.vocabulary import UID_ROOT

Code = tuple[str, str, str]  # (Code Value, Coding Scheme Designator, Code Meaning)

STATUSES = frozenset({"preliminary", "final", "corrected"})

MANUFACTURER = "RadPACS"
SERIES_DESCRIPTION = "Reports"
SR_SERIES_NUMBER = 9000
PDF_SERIES_NUMBER = 9001

# Report objects get their own arc under our root: `new_uid()` suffixes are dot-free
# digits, so a UID here can never equal a random one.
_REPORT_UID_ARC = f"{UID_ROOT}1."

# PS3.16 CID 7000 / TID 2000 row 1, and the Encapsulated PDF's Concept Name (C.24.2).
DIAGNOSTIC_IMAGING_REPORT: Code = ("18748-4", "LN", "Diagnostic Imaging Report")

# TID 1204 (mandatory in TID 2000), CID 5000 (RFC 5646 tags). Reports carry no language
# of their own yet, so every report says English.
_LANGUAGE_OF_CONTENT: Code = ("121049", "DCM", "Language of Content Item and Descendants")
REPORT_LANGUAGE: Code = ("en", "RFC5646", "English")
# TID 1210: the report's own title, a more specific wording of the root concept name.
_EQUIVALENT_MEANING: Code = ("121050", "DCM", "Equivalent Meaning of Concept Name")
# TID 1002 / TID 1003: the radiologist who signed, as the observer.
_OBSERVER_TYPE: Code = ("121005", "DCM", "Observer Type")
_PERSON: Code = ("121006", "DCM", "Person")
_PERSON_OBSERVER_NAME: Code = ("121008", "DCM", "Person Observer Name")
_PERSON_OBSERVER_ORGANIZATION: Code = ("121009", "DCM", "Person Observer's Organization Name")

# CID 7001 headings (LOINC) and the CID 7002 element each one's text is filed as.
# Where CID 7002 has no element of that meaning, the heading's concept names the text too
# (CID 7002 is a baseline group, so extending it is allowed).
HISTORY: Code = ("11329-0", "LN", "History")
CLINICAL_INFORMATION: Code = ("55752-0", "LN", "Clinical Information")
INDICATIONS: Code = ("18785-6", "LN", "Indications for Procedure")
REQUEST: Code = ("55115-0", "LN", "Request")
CURRENT_PROCEDURE: Code = ("55111-9", "LN", "Current Procedure Descriptions")
PRIOR_PROCEDURE: Code = ("55114-3", "LN", "Prior Procedure Descriptions")
PREVIOUS_FINDINGS: Code = ("18834-2", "LN", "Previous Findings")
FINDINGS: Code = ("59776-5", "LN", "Findings")
IMPRESSIONS: Code = ("19005-8", "LN", "Impressions")
RECOMMENDATIONS: Code = ("18783-1", "LN", "Recommendations")
CONCLUSIONS: Code = ("55110-1", "LN", "Conclusions")
SUMMARY: Code = ("55112-7", "LN", "Summary")
ADDENDUM: Code = ("55107-7", "LN", "Addendum")
COMPLICATIONS: Code = ("55109-3", "LN", "Complications")
PATIENT_PRESENTATION: Code = ("55108-5", "LN", "Patient Presentation")
CRITICAL_RESULTS: Code = ("73568-8", "LN", "Communication of Critical Results")

PROCEDURE_DESCRIPTION: Code = ("121065", "DCM", "Procedure Description")
PREVIOUS_FINDING: Code = ("121069", "DCM", "Previous Finding")
FINDING: Code = ("121071", "DCM", "Finding")
IMPRESSION: Code = ("121073", "DCM", "Impression")
RECOMMENDATION: Code = ("121075", "DCM", "Recommendation")
CONCLUSION: Code = ("121077", "DCM", "Conclusion")
COMPLICATION: Code = ("116224001", "SCT", "Complication of Procedure")

_SECTIONS: dict[Code, Code] = {
    HISTORY: HISTORY,
    CLINICAL_INFORMATION: HISTORY,
    INDICATIONS: INDICATIONS,
    REQUEST: REQUEST,
    CURRENT_PROCEDURE: PROCEDURE_DESCRIPTION,
    PRIOR_PROCEDURE: PROCEDURE_DESCRIPTION,
    PREVIOUS_FINDINGS: PREVIOUS_FINDING,
    FINDINGS: FINDING,
    IMPRESSIONS: IMPRESSION,
    RECOMMENDATIONS: RECOMMENDATION,
    CONCLUSIONS: CONCLUSION,
    SUMMARY: SUMMARY,
    ADDENDUM: ADDENDUM,
    COMPLICATIONS: COMPLICATION,
    PATIENT_PRESENTATION: PATIENT_PRESENTATION,
    CRITICAL_RESULTS: CRITICAL_RESULTS,
}

# The headings radiologists and templates write, lower case, without the colon.
_HEADING_WORDS: dict[str, Code] = {
    **dict.fromkeys(["history", "clinical history", "patient history", "medical history"], HISTORY),
    **dict.fromkeys(
        ["clinical information", "clinical details", "clinical data"], CLINICAL_INFORMATION
    ),
    **dict.fromkeys(
        [
            "indication",
            "indications",
            "indications for procedure",
            "reason for exam",
            "reason for examination",
            "reason for study",
        ],
        INDICATIONS,
    ),
    **dict.fromkeys(["request", "clinical question", "requested procedure"], REQUEST),
    **dict.fromkeys(
        [
            "technique",
            "techniques",
            "procedure",
            "procedures",
            "protocol",
            "exam",
            "examination",
            "procedure description",
            "current procedure descriptions",
        ],
        CURRENT_PROCEDURE,
    ),
    **dict.fromkeys(
        ["prior studies", "priors", "prior procedures", "prior procedure descriptions"],
        PRIOR_PROCEDURE,
    ),
    **dict.fromkeys(
        [
            "comparison",
            "comparisons",
            "comparison study",
            "comparison studies",
            "previous findings",
        ],
        PREVIOUS_FINDINGS,
    ),
    **dict.fromkeys(["findings", "finding", "observations"], FINDINGS),
    **dict.fromkeys(["impression", "impressions", "opinion"], IMPRESSIONS),
    **dict.fromkeys(
        ["recommendation", "recommendations", "follow-up", "follow up"], RECOMMENDATIONS
    ),
    **dict.fromkeys(["conclusion", "conclusions"], CONCLUSIONS),
    **dict.fromkeys(["summary"], SUMMARY),
    **dict.fromkeys(["addendum", "addenda"], ADDENDUM),
    **dict.fromkeys(["complication", "complications"], COMPLICATIONS),
    **dict.fromkeys(["patient presentation", "presentation"], PATIENT_PRESENTATION),
    **dict.fromkeys(
        ["critical results", "communication of critical results", "critical result communication"],
        CRITICAL_RESULTS,
    ),
}

# UT may hold CR and LF among the control characters (PS3.5 6.2); the rest are dropped.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class ReportDocument:
    """What the DICOM object says, taken from the study it goes into and the report."""

    study_instance_uid: str
    patient_name: str  # DICOM PN as stored on the study, e.g. "DOE^JANE"
    patient_id: str
    issuer_of_patient_id: str
    patient_birth_date: str  # DA or ""
    patient_sex: str  # M/F/O or ""
    accession_number: str
    study_date: str  # DA or ""
    study_time: str  # TM or ""
    study_id: str
    referring_physician_name: str  # PN or ""
    study_description: str
    institution_name: str
    title: str  # e.g. "CT HEAD W/O CONTRAST report"
    sections: tuple[tuple[str, str], ...]  # (heading, text); free text has heading ""
    status: str  # "preliminary", "final", "corrected" (changed, or with an addendum)
    signer_name: str  # DICOM PN of the radiologist who signed, "" if unsigned
    signer_organization: str
    signed_at: dt.datetime | None  # aware
    report_id: int  # our database id, for stable UIDs
    version: int  # 1, 2, ... each signed version of the report is its own instance

    def __post_init__(self) -> None:
        """Refuse what would make a wrong object rather than a failing one."""
        if self.status not in STATUSES:
            raise ValueError(f"Unknown report status {self.status!r}: one of {sorted(STATUSES)}.")
        if self.version < 1:
            raise ValueError("Report versions are numbered from 1.")
        if self.status == "corrected" and self.version < 2:
            raise ValueError("A corrected report replaces an earlier version: version >= 2.")
        if self.signed_at is not None and self.signed_at.utcoffset() is None:
            raise ValueError("signed_at must be aware: DICOM records its offset from UTC.")

    @property
    def is_signed(self) -> bool:
        return bool(self.signer_name) and self.signed_at is not None

    @property
    def is_verified(self) -> bool:
        """VERIFIED (PS3.3 C.17.2) means a named person vouched for a complete report."""
        return self.is_signed and self.status in ("final", "corrected")


# ---- UIDs ------------------------------------------------------------------------------


def _derived_uid(*parts: object) -> str:
    """A UID under our report arc from a hash of its parts: the same parts, the same UID.

    A decimal of the hash (never with a leading zero) is cut to 64 characters (PS3.5 9.1).
    """
    key = "\x1f".join(str(part) for part in parts).encode()
    digits = str(int.from_bytes(hashlib.sha256(key).digest(), "big"))
    return (_REPORT_UID_ARC + digits)[:64]


def report_uids(document: ReportDocument, *, modality: str = "SR") -> tuple[str, str]:
    """(Series Instance UID, SOP Instance UID) of a report version's object.

    One series per report and form, one instance per version. The form (SR or DOC) is part
    of the key: a series holds one modality, and an SR and a PDF of the same version must
    not share a SOP Instance UID if a facility switches forms or makes both.
    """
    if modality not in ("SR", "DOC"):
        raise ValueError("Report objects are SR or DOC.")
    study, report = document.study_instance_uid, document.report_id
    return (
        _derived_uid("radpacs-report-series", study, report, modality),
        _instance_uid(study, report, modality, document.version),
    )


def _instance_uid(study_uid: str, report_id: int, modality: str, version: int) -> str:
    return _derived_uid("radpacs-report-instance", study_uid, report_id, modality, version)


# ---- shared modules --------------------------------------------------------------------


def _code(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def _dicom_datetime(value: dt.datetime) -> tuple[str, str, str, str]:
    """(DA, TM, DT with offset, offset) of an aware moment, in its own local time."""
    offset = value.strftime("%z")
    return (
        value.strftime("%Y%m%d"),
        value.strftime("%H%M%S"),
        value.strftime("%Y%m%d%H%M%S") + offset,
        offset,
    )


def _new_dataset(
    document: ReportDocument, sop_class: str, series_uid: str, sop_uid: str
) -> Dataset:
    """File meta, SOP Common, Patient, General Study and General Equipment (PS3.3 C.12.1,
    C.7.1.1, C.7.2.1, C.7.5.1): what both forms share, copied from the study as it is."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    # UTF-8, so names like Müller^Zoë and report text in any script survive.
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    if document.signed_at is not None:
        date, time, _, offset = _dicom_datetime(document.signed_at)
        ds.InstanceCreationDate = date
        ds.InstanceCreationTime = time
        ds.TimezoneOffsetFromUTC = offset

    ds.PatientName = document.patient_name
    ds.PatientID = document.patient_id
    if document.issuer_of_patient_id:
        ds.IssuerOfPatientID = document.issuer_of_patient_id
    ds.PatientBirthDate = document.patient_birth_date
    ds.PatientSex = document.patient_sex

    ds.StudyInstanceUID = document.study_instance_uid
    ds.StudyDate = document.study_date
    ds.StudyTime = document.study_time
    ds.ReferringPhysicianName = document.referring_physician_name
    ds.StudyID = document.study_id
    ds.AccessionNumber = document.accession_number
    if document.study_description:
        ds.StudyDescription = document.study_description

    ds.SeriesInstanceUID = series_uid
    ds.SeriesDescription = SERIES_DESCRIPTION
    ds.Manufacturer = MANUFACTURER
    if document.institution_name:
        ds.InstitutionName = document.institution_name
    return ds


# ---- Basic Text SR ---------------------------------------------------------------------


def heading_concepts(heading: str) -> tuple[Code, Code] | None:
    """(CID 7001 heading, CID 7002 element) for a section heading, or None if we cannot tell."""
    words = " ".join(heading.replace("_", " ").split()).strip(" :.-").lower()
    section = _HEADING_WORDS.get(words)
    return (section, _SECTIONS[section]) if section else None


def ut_text(text: str) -> str:
    """Report text as a UT value: lines joined by CR LF, other control characters dropped."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").strip().split("\n")
    return "\r\n".join(_CONTROL.sub(" ", line).rstrip() for line in lines)


def _narrative(sections: Iterable[tuple[str, str]]) -> list[tuple[Code, list[tuple[Code, str]]]]:
    """Sections as TID 2000 headings with their TID 2002 text items.

    A heading we cannot code (or none, free text) goes under Findings with its own words
    kept as the first line; consecutive sections under one heading share its container.
    """
    containers: list[tuple[Code, list[tuple[Code, str]]]] = []
    for heading, text in sections:
        if not text.strip():
            continue
        concepts = heading_concepts(heading) if heading.strip() else None
        if concepts is None:
            concepts = (FINDINGS, FINDING)
            if heading.strip():
                text = f"{heading.strip().rstrip(':')}:\n{text.strip()}"
        section, element = concepts
        if containers and containers[-1][0] == section:
            containers[-1][1].append((element, ut_text(text)))
        else:
            containers.append((section, [(element, ut_text(text))]))
    return containers


def _item(relationship: str, value_type: str, concept: Code) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = [_code(concept)]
    return item


def _text_item(relationship: str, concept: Code, text: str) -> Dataset:
    item = _item(relationship, "TEXT", concept)
    item.TextValue = text
    return item


def _content(document: ReportDocument) -> list[Dataset]:
    """TID 2000 below the root: language, title, observer, then the headed sections."""
    language = _item("HAS CONCEPT MOD", "CODE", _LANGUAGE_OF_CONTENT)
    language.ConceptCodeSequence = [_code(REPORT_LANGUAGE)]
    content = [language]
    if document.title.strip():
        content.append(_text_item("HAS CONCEPT MOD", _EQUIVALENT_MEANING, ut_text(document.title)))
    if document.signer_name:
        observer_type = _item("HAS OBS CONTEXT", "CODE", _OBSERVER_TYPE)
        observer_type.ConceptCodeSequence = [_code(_PERSON)]
        observer = _item("HAS OBS CONTEXT", "PNAME", _PERSON_OBSERVER_NAME)
        observer.PersonName = document.signer_name
        content += [observer_type, observer]
        if document.signer_organization:
            content.append(
                _text_item(
                    "HAS OBS CONTEXT",
                    _PERSON_OBSERVER_ORGANIZATION,
                    ut_text(document.signer_organization),
                )
            )
    for section, texts in _narrative(document.sections):
        container = _item("CONTAINS", "CONTAINER", section)
        container.ContinuityOfContent = "SEPARATE"
        container.ContentSequence = [
            _text_item("CONTAINS", element, text) for element, text in texts
        ]
        content.append(container)
    return content


def basic_text_sr(document: ReportDocument) -> Dataset:
    """The report as a Basic Text SR (PS3.3 A.35.1) with a TID 2000 content tree.

    Verified when signed and final or corrected (C.17.2). Any later version names the one it
    replaces in Predecessor Documents Sequence, a final after a preliminary too: that
    sequence is for "prior or provisional reports" (PS3.3 Table C.17-2).
    """
    series_uid, sop_uid = report_uids(document, modality="SR")
    ds = _new_dataset(document, BasicTextSRStorage, series_uid, sop_uid)

    # SR Document Series (C.17.1)
    ds.Modality = "SR"
    ds.SeriesNumber = SR_SERIES_NUMBER
    ds.ReferencedPerformedProcedureStepSequence = Sequence()

    # SR Document General (C.17.2)
    ds.InstanceNumber = document.version
    ds.PreliminaryFlag = "PRELIMINARY" if document.status == "preliminary" else "FINAL"
    ds.CompletionFlag = "PARTIAL" if document.status == "preliminary" else "COMPLETE"
    ds.VerificationFlag = "VERIFIED" if document.is_verified else "UNVERIFIED"
    if document.signed_at is not None:
        ds.ContentDate, ds.ContentTime, _, _ = _dicom_datetime(document.signed_at)
    elif document.study_date:
        # Type 1 and no clock allowed: an unsigned draft is dated by its study.
        ds.ContentDate = document.study_date
        ds.ContentTime = document.study_time or "000000"
    else:
        raise ValueError("An unsigned report of an undated study has no Content Date to give.")
    if document.is_verified:
        assert document.signed_at is not None
        verifier = Dataset()
        verifier.VerifyingObserverName = document.signer_name
        verifier.VerifyingObserverIdentificationCodeSequence = Sequence()
        verifier.VerifyingOrganization = document.signer_organization
        verifier.VerificationDateTime = _dicom_datetime(document.signed_at)[2]
        ds.VerifyingObserverSequence = [verifier]
    if document.accession_number:
        ds.ReferencedRequestSequence = [_request(document)]
    ds.PerformedProcedureCodeSequence = Sequence()
    if document.version > 1:
        ds.PredecessorDocumentsSequence = [_predecessor(document, series_uid)]

    # SR Document Content (C.17.3): the root CONTAINER of TID 2000.
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code(DIAGNOSTIC_IMAGING_REPORT)]
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "2000"
    ds.ContentTemplateSequence = [template]
    ds.ContentSequence = _content(document)
    return ds


def _request(document: ReportDocument) -> Dataset:
    """The requested procedure this report answers, known to us by its accession number."""
    request = Dataset()
    request.StudyInstanceUID = document.study_instance_uid
    request.ReferencedStudySequence = Sequence()
    request.AccessionNumber = document.accession_number
    request.PlacerOrderNumberImagingServiceRequest = ""
    request.FillerOrderNumberImagingServiceRequest = ""
    request.RequestedProcedureID = ""
    request.RequestedProcedureDescription = document.study_description
    request.RequestedProcedureCodeSequence = Sequence()
    return request


def _predecessor(document: ReportDocument, series_uid: str) -> Dataset:
    """Hierarchical SOP Instance Reference (C.17-3) to the previous version's SR."""
    instance = Dataset()
    instance.ReferencedSOPClassUID = BasicTextSRStorage
    # Derived, not looked up: the previous version's UID is a function of its number.
    instance.ReferencedSOPInstanceUID = _instance_uid(
        document.study_instance_uid, document.report_id, "SR", document.version - 1
    )
    series = Dataset()
    series.SeriesInstanceUID = series_uid
    series.ReferencedSOPSequence = [instance]
    study = Dataset()
    study.StudyInstanceUID = document.study_instance_uid
    study.ReferencedSeriesSequence = [series]
    return study


# ---- Encapsulated PDF ------------------------------------------------------------------


def encapsulated_pdf(document: ReportDocument, pdf: bytes) -> Dataset:
    """The report's PDF as an Encapsulated PDF (PS3.3 A.45.1, C.24.2).

    An odd-length PDF gets one trailing NUL to make the value even (PS3.5 7.1.1);
    Encapsulated Document Length keeps the true length so readers can drop it.
    """
    if not pdf.startswith(b"%PDF-"):
        raise ValueError("Not a PDF: it does not start with %PDF-.")
    series_uid, sop_uid = report_uids(document, modality="DOC")
    ds = _new_dataset(document, EncapsulatedPDFStorage, series_uid, sop_uid)

    # Encapsulated Document Series (C.24.1) and SC Equipment (C.8.6.1)
    ds.Modality = "DOC"
    ds.SeriesNumber = PDF_SERIES_NUMBER
    ds.ConversionType = "WSD"  # made on a workstation

    # Encapsulated Document (C.24.2)
    ds.InstanceNumber = document.version
    if document.signed_at is not None:
        ds.ContentDate, ds.ContentTime, ds.AcquisitionDateTime, _ = _dicom_datetime(
            document.signed_at
        )
    else:
        ds.ContentDate = ds.ContentTime = ds.AcquisitionDateTime = ""
    ds.BurnedInAnnotation = "YES"  # the PDF names the patient and the date
    ds.DocumentTitle = document.title
    ds.ConceptNameCodeSequence = [_code(DIAGNOSTIC_IMAGING_REPORT)]
    ds.VerificationFlag = "VERIFIED" if document.is_verified else "UNVERIFIED"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf + b"\x00" if len(pdf) % 2 else pdf
    return ds


# ---- Part 10 ---------------------------------------------------------------------------


def part10_bytes(dataset: Dataset) -> bytes:
    """A DICOM file (PS3.10 7.1): 128-byte preamble, "DICM", file meta, then the data set."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
