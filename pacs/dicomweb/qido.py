"""QIDO-RS (PS3.18 10.6): search for studies, series and instances.

A QIDO query becomes a C-FIND identifier and runs through the same matcher as the
DIMSE door (`pacs.dimse.query.find`): one SQL query over the index, never a file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.http import QueryDict
from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from pacs.dicomweb.access import DicomWebError, Scope
from pacs.dimse import query

# Default return attributes, PS3.18 Tables 10.6.3-3 (study), -4 (series), -5 (instance).
STUDY_ATTRIBUTES = (
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "InstanceAvailability",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "StudyDescription",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_ATTRIBUTES = (
    "Modality",
    "SeriesDescription",
    "SeriesInstanceUID",
    "SeriesNumber",
    "BodyPartExamined",
    "NumberOfSeriesRelatedInstances",
)
INSTANCE_ATTRIBUTES = (
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceAvailability",
    "InstanceNumber",
    "Rows",
    "Columns",
    "NumberOfFrames",
)
# Every attribute the index can answer, per level (includefield=all).
ALL_ATTRIBUTES = {
    "STUDY": (*STUDY_ATTRIBUTES, "IssuerOfPatientID"),
    "SERIES": (*SERIES_ATTRIBUTES, "SeriesDate"),
    "IMAGE": INSTANCE_ATTRIBUTES,
}
CONTROL_PARAMETERS = {"limit", "offset", "includefield", "fuzzymatching"}
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")


@dataclass(frozen=True)
class Search:
    """One QIDO-RS request: its level, the study/series it is under, and the query."""

    level: str  # STUDY, SERIES or IMAGE
    study_uid: str = ""
    series_uid: str = ""


@dataclass(frozen=True)
class Results:
    matches: list[Dataset]
    more: bool  # the limit cut the matches short


def search(request: Search, params: QueryDict, scope: Scope) -> Results:
    limit, offset = _paging(params)
    fuzzy = _flag(params, "fuzzymatching")
    identifier = Dataset()
    identifier.QueryRetrieveLevel = request.level
    for keyword in _returned(request, params):
        _add(identifier, keyword, "")
    for name, values in params.lists():
        if name in CONTROL_PARAMETERS:
            continue
        keyword = _keyword(name)
        _add(identifier, keyword, _value(keyword, values))
    if request.study_uid:
        _add(identifier, "StudyInstanceUID", request.study_uid)
    if request.series_uid:
        _add(identifier, "SeriesInstanceUID", request.series_uid)
    try:
        found = list(
            query.find(
                identifier,
                model=query.STUDY_ROOT,
                facility_ids=scope.all_facility_ids,
                limit=limit + 1,
                offset=offset,
                study_scope=scope.study_condition(),
                fuzzy=fuzzy,
            )
        )
    except query.QueryError as error:
        raise DicomWebError(400, str(error)) from error
    for match in found:
        del match.QueryRetrieveLevel
    return Results(found[:limit], more=len(found) > limit)


def _paging(params: QueryDict) -> tuple[int, int]:
    ceiling = settings.DICOMWEB_MAX_RESULTS
    try:
        limit = int(params.get("limit", ceiling))
        offset = int(params.get("offset", 0))
    except ValueError:
        raise DicomWebError(400, "limit and offset must be whole numbers") from None
    if limit < 0 or offset < 0:
        raise DicomWebError(400, "limit and offset must not be negative")
    return min(limit, ceiling), offset


def _flag(params: QueryDict, name: str) -> bool:
    value = params.get(name, "false").lower()
    if value not in ("true", "false"):
        raise DicomWebError(400, f"{name} must be true or false")
    return value == "true"


def _returned(request: Search, params: QueryDict) -> list[str]:
    """The attributes to return: the level's defaults (study attributes too when
    searching series or instances across studies) plus `includefield`."""
    level = request.level
    defaults: list[str] = []
    if level == "STUDY" or not request.study_uid:
        defaults += STUDY_ATTRIBUTES
    if level == "SERIES" or (level == "IMAGE" and not request.series_uid):
        defaults += SERIES_ATTRIBUTES
    if level == "IMAGE":
        defaults += INSTANCE_ATTRIBUTES
    for value in params.getlist("includefield"):
        for name in _split(value):
            if name == "all":
                for each in ("STUDY", "SERIES", "IMAGE")[
                    : ("STUDY", "SERIES", "IMAGE").index(level) + 1
                ]:
                    defaults += ALL_ATTRIBUTES[each]
            else:
                defaults.append(_keyword(name))
    return list(dict.fromkeys(defaults))


def _split(value: str) -> Iterable[str]:
    """includefield and UID lists come comma-separated (or repeated)."""
    return (part.strip() for part in value.split(",") if part.strip())


def _keyword(name: str) -> str:
    """A query parameter's attribute: a keyword or 8 hex digits; 400 otherwise."""
    if _TAG.match(name):
        keyword = keyword_for_tag(Tag(int(name, 16)))
        if keyword:
            return keyword
    elif tag_for_keyword(name) is not None:
        return name
    if "." in name:
        raise DicomWebError(400, f"{name}: sequence attribute paths are not supported")
    raise DicomWebError(400, f"{name} is not a DICOM attribute keyword or tag")


def _value(keyword: str, values: list[str]) -> str:
    """A parameter's values as an identifier value: UID lists (comma-separated or
    repeated) become a multi-valued element; otherwise one value."""
    vr = dictionary_VR(keyword)
    if vr == "UI":
        return "\\".join(part for value in values for part in _split(value))
    if len(values) > 1:
        raise DicomWebError(400, f"{keyword} is given more than once")
    return values[0]


def _add(identifier: Dataset, keyword: str, value: str) -> None:
    tag = Tag(tag_for_keyword(keyword))
    if value == "" and tag in identifier:
        return  # a matching key is also returned; keep its value
    vr = dictionary_VR(tag).split(" or ")[0]
    if vr == "SQ":
        identifier.add(DataElement(tag, vr, []))
        return
    identifier.add(DataElement(tag, vr, value, validation_mode=pydicom_config.IGNORE))
