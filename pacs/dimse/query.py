"""The query side of DICOM Query/Retrieve over the archive index (PS3.4 C.2-C.4, C.6).

Django-side but free of pynetdicom, so it is tested without a network: the DIMSE
handlers pass the request identifier and the caller's facility ids, and get back
response identifiers (C-FIND) or the selected instances (C-MOVE, C-GET).

Matching (PS3.4 C.2.2.2): single value (case-sensitive; PN case-insensitive), list of
UID, universal (empty value or a lone '*'), wildcard ('*', '?'), range (DA, TM), empty
value ('""') and multiple value (a key with several values matches any of them). The
query is relational where that is harmless (PS3.4 C.4.1.3.2.1): attributes of the
levels above the query level may be matching and return keys, and missing unique keys
of the levels above are universal. Every C-FIND is one SQL query, whatever the number
of matches; counts come from the columns kept up to date by `study_refresh`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Exists, Max, OuterRef, Q, QuerySet, Sum
from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag

from pacs.models import Instance, Series, Study

PATIENT_ROOT = "patient"
STUDY_ROOT = "study"
MODELS = (PATIENT_ROOT, STUDY_ROOT)
LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
UNIQUE_KEYS = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
RESPONSE_CHARSET = "ISO_IR 192"
_STREAM_CHUNK = 2000

_SPECIFIC_CHARACTER_SET = Tag("SpecificCharacterSet")
_QUERY_RETRIEVE_LEVEL = Tag("QueryRetrieveLevel")
_DATE = re.compile(r"\d{8}")
_TIME = re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?")
_TIME_CEILING = "235959.999999"  # fills an upper bound's missing components (PS3.4 C.2.2.2.5)
_REGEX_SPECIAL = frozenset("\\.^$|+()[]{}-")


class QueryError(ValueError):
    """The identifier cannot be answered; the message says why (0xA900 / 0xC000)."""


class Match(enum.Enum):
    """How a key is matched (PS3.4 C.2.2.2), decided by its VR and meaning."""

    TEXT = "text"  # single value (case-sensitive) and wildcard
    PN = "pn"  # single value and wildcard, case-insensitive
    UID = "uid"  # single value and list of UID
    DATE = "date"  # single value and range, YYYYMMDD
    TIME = "time"  # single value and range, HHMMSS.FFFFFF
    NUMBER = "number"  # single value, an integer
    MODALITIES = "modalities"  # any of the backslash-joined values stored
    RETURN = "return"  # return key only; a value in the request is ignored


@dataclass(frozen=True)
class Key:
    field: str  # model field path from the level's model (or an aggregate's alias)
    match: Match


_PATIENT = {
    "PatientID": Key("dicom_patient_id", Match.TEXT),
    "IssuerOfPatientID": Key("issuer_of_patient_id", Match.TEXT),
    "PatientName": Key("patient_name", Match.PN),
    "PatientBirthDate": Key("patient_birth_date", Match.DATE),
    "PatientSex": Key("patient_sex", Match.TEXT),
}
_PATIENT_COUNTS = {
    "NumberOfPatientRelatedStudies": Key("related_studies", Match.RETURN),
    "NumberOfPatientRelatedSeries": Key("related_series", Match.RETURN),
    "NumberOfPatientRelatedInstances": Key("related_instances", Match.RETURN),
}
_STUDY = {
    "StudyInstanceUID": Key("study_instance_uid", Match.UID),
    "StudyDate": Key("study_date", Match.DATE),
    "StudyTime": Key("study_time", Match.TIME),
    "AccessionNumber": Key("accession_number", Match.TEXT),
    "StudyID": Key("study_id", Match.TEXT),
    "StudyDescription": Key("study_description", Match.TEXT),
    "ReferringPhysicianName": Key("referring_physician_name", Match.PN),
    "ModalitiesInStudy": Key("modalities_in_study", Match.MODALITIES),
    "NumberOfStudyRelatedSeries": Key("number_of_series", Match.RETURN),
    "NumberOfStudyRelatedInstances": Key("number_of_instances", Match.RETURN),
}
_SERIES = {
    "SeriesInstanceUID": Key("series_instance_uid", Match.UID),
    "Modality": Key("modality", Match.TEXT),
    "SeriesNumber": Key("series_number", Match.NUMBER),
    "SeriesDescription": Key("series_description", Match.TEXT),
    "BodyPartExamined": Key("body_part_examined", Match.TEXT),
    "SeriesDate": Key("series_date", Match.DATE),
    "NumberOfSeriesRelatedInstances": Key("number_of_instances", Match.RETURN),
}
_IMAGE = {
    "SOPInstanceUID": Key("sop_instance_uid", Match.UID),
    "SOPClassUID": Key("sop_class_uid", Match.UID),
    "InstanceNumber": Key("instance_number", Match.NUMBER),
    "Rows": Key("rows", Match.NUMBER),
    "Columns": Key("columns", Match.NUMBER),
    "NumberOfFrames": Key("number_of_frames", Match.NUMBER),
}


def _under(keys: dict[str, Key], prefix: str) -> dict[str, Key]:
    return {keyword: Key(prefix + key.field, key.match) for keyword, key in keys.items()}


# The keys each level answers: its own and, relationally, those of the levels above
# (PS3.4 C.6.1.1, C.6.2.1). At STUDY level the patient attributes are study attributes.
_LEVEL_KEYS: dict[str, dict[str, Key]] = {
    "PATIENT": {**_PATIENT, **_PATIENT_COUNTS},
    "STUDY": {**_PATIENT, **_STUDY},
    "SERIES": {**_SERIES, **_under({**_PATIENT, **_STUDY}, "study__")},
    "IMAGE": {
        **_IMAGE,
        **_under(_SERIES, "series__"),
        **_under({**_PATIENT, **_STUDY}, "series__study__"),
    },
}
_ORDERING = {
    "PATIENT": ("dicom_patient_id", "issuer_of_patient_id", "facility_id"),
    "STUDY": ("-study_date", "-study_time", "-pk"),
    "SERIES": ("study_id", "series_number", "pk"),
    "IMAGE": ("series_id", "instance_number", "pk"),
}
# Where the study is, seen from each level's model.
_STUDY_PATHS = {"STUDY": "", "SERIES": "study__", "IMAGE": "series__study__"}


def _scoped(condition: Q, prefix: str) -> Q:
    """`condition` (on Study fields) with every field seen from another model."""
    if not prefix:
        return condition
    scoped = Q()
    scoped.connector, scoped.negated = condition.connector, condition.negated
    for child in condition.children:
        if isinstance(child, Q):
            scoped.children.append(_scoped(child, prefix))
        else:
            field, value = child
            scoped.children.append((prefix + field, value))
    return scoped


# Where each level's unique key is, seen from an Instance (C-MOVE / C-GET selection).
_INSTANCE_PATHS = {
    "PATIENT": "series__study__dicom_patient_id",
    "STUDY": "series__study__study_instance_uid",
    "SERIES": "series__series_instance_uid",
    "IMAGE": "sop_instance_uid",
}


def find(
    identifier: Dataset,
    *,
    model: str,
    facility_ids: set[int],
    limit: int | None = None,
    offset: int = 0,
    study_scope: Q | None = None,
    fuzzy: bool = False,
) -> Iterator[Dataset]:
    """C-FIND (PS3.4 C.4.1): one response identifier per match, in a stable order.

    `model` is 'patient' (Patient Root) or 'study' (Study Root). A response holds the
    keys requested (unknown ones empty), QueryRetrieveLevel, the unique keys of the
    query level and the levels above (PS3.4 C.4.1.1.3.2), and SpecificCharacterSet
    'ISO_IR 192' when a value is not ASCII. The identifier is checked before this
    returns (QueryError); the single SQL query runs when iteration starts (its rows
    streamed when there is no limit). Order: patients by ID, studies newest first, series by number,
    instances by number.

    For DICOMweb (QIDO-RS): `offset` skips matches; `study_scope` (a Q on Study
    fields) narrows the studies further than the facilities; `fuzzy` makes a person
    name match any name component that starts with the value, case-insensitively.
    """
    level = _level(identifier, model)
    if (limit is not None and limit < 0) or offset < 0:
        raise ValueError("limit and offset must not be negative")
    keys = _LEVEL_KEYS[level]
    conditions = _conditions(identifier, keys, fuzzy=fuzzy)
    if study_scope is not None:
        if level == "PATIENT":
            raise ValueError("a study scope applies to STUDY, SERIES and IMAGE levels")
        conditions.append((Key("", Match.RETURN), _scoped(study_scope, _STUDY_PATHS[level])))
    returned = _returned(identifier, model, level)
    if level == "PATIENT":
        rows = _patient_rows(conditions, facility_ids)
    else:
        fields = {keys[keyword].field for _, keyword, _ in returned if keyword in keys}
        rows = _rows(level, conditions, facility_ids).values(*sorted(fields))
    if limit is not None:
        rows = rows[offset : offset + limit]
    elif offset:
        rows = rows[offset:]
    # A bounded result is fetched in one round trip; an unbounded one is streamed
    # (on PostgreSQL a server-side cursor: three round trips more).
    matches = iter(rows) if limit is not None else rows.iterator(chunk_size=_STREAM_CHUNK)
    return _responses(matches, level, keys, returned)


def instances_for(identifier: Dataset, *, model: str, facility_ids: set[int]) -> QuerySet[Instance]:
    """C-MOVE / C-GET (PS3.4 C.4.2.2.1, C.4.3.2.1): the instances the identifier selects.

    The unique key of the query level is required (PATIENT: PatientID, STUDY:
    StudyInstanceUID, SERIES: SeriesInstanceUID, IMAGE: SOPInstanceUID; a list is
    allowed); unique keys of the levels above narrow the selection when present
    (IssuerOfPatientID with PatientID too). Wildcards are refused. Series and study
    come with each instance (select_related); metadata_json is deferred.
    """
    level = _level(identifier, model)
    top = 0 if model == PATIENT_ROOT else 1
    selection = Q()
    for name in LEVELS[top : LEVELS.index(level) + 1]:
        keyword = UNIQUE_KEYS[name]
        values = _values(_element(identifier, keyword))
        if name == level and not values:
            raise QueryError(f"{keyword} is required to retrieve at {level} level")
        if any("*" in value or "?" in value for value in values):
            raise QueryError(f"{keyword}: wildcards are not allowed in a retrieve identifier")
        if values:
            selection &= Q(**{f"{_INSTANCE_PATHS[name]}__in": values})
        if name == "PATIENT" and values:
            issuers = _values(_element(identifier, "IssuerOfPatientID"))
            if issuers:
                selection &= Q(series__study__issuer_of_patient_id__in=issuers)
    return (
        Instance.objects.filter(facility_id__in=facility_ids)
        .filter(selection)
        .select_related("series__study")
        .defer("metadata_json")
        .order_by("series__study_id", "series_id", "instance_number", "pk")
    )


def _level(identifier: Dataset, model: str) -> str:
    """The query level (PS3.4 C.4.1.1.3.1); Study Root has no PATIENT level (C.6.2)."""
    if model not in MODELS:
        raise ValueError(f"unknown query/retrieve information model {model!r}")
    values = _values(_element(identifier, "QueryRetrieveLevel"))
    if not values:
        raise QueryError("QueryRetrieveLevel (0008,0052) is missing")
    level = values[0].upper()
    if len(values) > 1 or level not in LEVELS:
        shown = "\\".join(values)
        raise QueryError(
            f"QueryRetrieveLevel (0008,0052) {shown!r} is not one of {', '.join(LEVELS)}"
        )
    if level == "PATIENT" and model == STUDY_ROOT:
        raise QueryError("the Study Root information model has no PATIENT level")
    return level


def _element(identifier: Dataset, keyword: str | BaseTag) -> DataElement | None:
    tag = Tag(keyword)
    if tag not in identifier:
        return None
    try:
        return identifier[tag]
    except Exception as error:  # pydicom raises a variety of errors for a bad value
        name = keyword_for_tag(tag) or str(tag)
        raise QueryError(f"{name}: unreadable value ({error})") from error


def _values(element: DataElement | None) -> list[str]:
    """The element's values as stripped strings; [] for an empty (universal) value."""
    if element is None or element.value is None or element.VR == "SQ":
        return []
    value = element.value
    items: Iterable[Any] = value if isinstance(value, MultiValue | list | tuple) else [value]
    texts = []
    for item in items:
        if isinstance(item, bytes):
            item = item.decode("utf-8", "replace")
        text = str(item).strip(" \x00")
        if text:
            texts.append(text)
    return texts


def _conditions(
    identifier: Dataset, keys: dict[str, Key], *, fuzzy: bool = False
) -> list[tuple[Key, Q]]:
    conditions = []
    for tag in list(identifier.keys()):  # tags; iterating a Dataset converts elements
        keyword = keyword_for_tag(tag)
        key = keys.get(keyword)
        if key is None or key.match is Match.RETURN:
            continue
        condition = _condition(key, keyword, _values(_element(identifier, tag)), fuzzy=fuzzy)
        if condition is not None:
            conditions.append((key, condition))
    return conditions


def _condition(key: Key, keyword: str, values: list[str], *, fuzzy: bool = False) -> Q | None:
    """The filter for one key, or None for universal matching (PS3.4 C.2.2.2.3)."""
    if not values:
        return None
    if key.match is Match.UID:  # list of UID matching (C.2.2.2.2)
        return None if "*" in values else Q(**{f"{key.field}__in": values})
    combined = Q()
    for value in values:  # multiple value matching: any of them (C.2.2.2.8)
        one = _match_one(key, keyword, value, fuzzy=fuzzy)
        if one is None:
            return None
        combined |= one
    return combined


def _match_one(key: Key, keyword: str, value: str, *, fuzzy: bool = False) -> Q | None:
    field, match = key.field, key.match
    if value == "*":
        return None
    if fuzzy and match is Match.PN and value != '""' and "*" not in value and "?" not in value:
        # PS3.18 8.3.4.1 fuzzy matching: a component (family, given, ...) or a word of
        # one starting with the value, whatever the case: "smi" finds "Smith^John".
        literal = _regex(value, star="*", one="?")
        return Q(**{f"{field}__iregex": rf"(^|[= ^]){literal}"})
    if value == '""':  # empty value matching (C.2.2.2.7)
        return Q(**{f"{field}__isnull": True}) if match is Match.NUMBER else Q(**{field: ""})
    if match in (Match.TEXT, Match.PN):
        ignore_case = match is Match.PN
        if "*" in value or "?" in value:
            return _wildcard(field, value, ignore_case=ignore_case)
        return Q(**{f"{field}__iexact" if ignore_case else field: value})
    if match is Match.DATE:
        return _range(field, keyword, value, _DATE, ceiling="")
    if match is Match.TIME:
        return _range(field, keyword, value, _TIME, ceiling=_TIME_CEILING)
    if match is Match.NUMBER:
        try:
            return Q(**{field: int(value)})
        except ValueError:
            raise QueryError(f"{keyword}: {value!r} is not a number") from None
    if match is Match.MODALITIES:
        pattern = _regex(value, star=r"[^\\]*", one=r"[^\\]")
        return Q(**{f"{field}__regex": rf"(^|\\){pattern}(\\|$)"})
    raise AssertionError(f"unhandled match {match}")


def _wildcard(field: str, pattern: str, *, ignore_case: bool) -> Q:
    """Wildcard matching (C.2.2.2.4) as an anchored regular expression; the literal
    prefix also becomes a LIKE 'prefix%' (escaped by Django) the database can use."""
    prefix = re.split(r"[*?]", pattern, maxsplit=1)[0]
    regex = wildcard_regex(pattern)
    condition = Q(**{f"{field}__{'iregex' if ignore_case else 'regex'}": regex})
    if prefix:
        lookup = "istartswith" if ignore_case else "startswith"
        condition &= Q(**{f"{field}__{lookup}": prefix})
    return condition


def wildcard_regex(pattern: str) -> str:
    """A DICOM wildcard value ('*', '?') as an anchored regular expression."""
    return "^" + _regex(pattern, star=".*", one=".") + "$"


def _regex(pattern: str, *, star: str, one: str) -> str:
    """'*' and '?' as regex; every other character literal in Python and PostgreSQL."""
    parts: list[str] = []
    for char in pattern:
        if char == "*":
            if not parts or parts[-1] != star:
                parts.append(star)
        elif char == "?":
            parts.append(one)
        elif char in _REGEX_SPECIAL:
            parts.append("\\" + char)
        else:
            parts.append(char)
    return "".join(parts)


def _range(field: str, keyword: str, value: str, form: re.Pattern[str], ceiling: str) -> Q | None:
    """Single value or range matching (C.2.2.2.5) of DA/TM stored as strings, so string
    order is time order. An upper time bound covers its whole last component ('1100'
    runs to 11:00:59.999999); a range never matches an empty value."""
    if "-" not in value:
        if not form.fullmatch(value):
            raise QueryError(f"{keyword}: {value!r} is not a valid value or range")
        return Q(**{field: value})
    low, _, high = (part.strip() for part in value.partition("-"))
    if not low and not high:
        return None
    for bound in (low, high):
        if bound and not form.fullmatch(bound):
            raise QueryError(f"{keyword}: {value!r} is not a valid range")
    if low and high and low > high:
        raise QueryError(f"{keyword}: range {value!r} ends before it starts")
    condition = ~Q(**{field: ""})
    if low:
        condition &= Q(**{f"{field}__gte": low})
    if high:
        condition &= Q(**{f"{field}__lte": high + ceiling[len(high) :]})
    return condition


def _rows(level: str, conditions: list[tuple[Key, Q]], facility_ids: set[int]) -> QuerySet:
    model = {"STUDY": Study, "SERIES": Series, "IMAGE": Instance}[level]
    rows = model.objects.filter(facility_id__in=facility_ids)
    for _, condition in conditions:
        rows = rows.filter(condition)
    return rows.order_by(*_ORDERING[level])


def _patient_rows(conditions: list[tuple[Key, Q]], facility_ids: set[int]) -> QuerySet:
    """PATIENT level (PS3.4 C.6.1.1.2): studies grouped by facility, Patient ID and
    issuer. A patient matches when one of its studies matches; the counts cover all
    of its studies. Studies without a Patient ID are not a patient."""
    same_patient = ("dicom_patient_id", "issuer_of_patient_id")
    rows = Study.objects.filter(facility_id__in=facility_ids).exclude(dicom_patient_id="")
    other = Q()
    for key, condition in conditions:
        if key.field in same_patient:
            rows = rows.filter(condition)
        else:
            other &= condition
    if other:
        studies = Study.objects.filter(
            facility_id=OuterRef("facility_id"),
            dicom_patient_id=OuterRef("dicom_patient_id"),
            issuer_of_patient_id=OuterRef("issuer_of_patient_id"),
        )
        rows = rows.filter(Exists(studies.filter(other)))
    return (
        rows.values("facility_id", *same_patient)
        .annotate(
            group_patient_name=Max("patient_name"),
            group_patient_birth_date=Max("patient_birth_date"),
            group_patient_sex=Max("patient_sex"),
            related_studies=Count("pk"),
            related_series=Sum("number_of_series"),
            related_instances=Sum("number_of_instances"),
        )
        .order_by(*_ORDERING["PATIENT"])
    )


def _returned(identifier: Dataset, model: str, level: str) -> list[tuple[BaseTag, str, str]]:
    """(tag, keyword, VR) of each response attribute: the requested keys and the unique
    keys of the query level and the levels above (PS3.4 C.4.1.1.3.2)."""
    returned: dict[BaseTag, tuple[BaseTag, str, str]] = {}
    for tag in list(identifier.keys()):  # tags; iterating a Dataset converts elements
        if tag in (_SPECIFIC_CHARACTER_SET, _QUERY_RETRIEVE_LEVEL) or tag.element == 0:
            continue
        keyword = keyword_for_tag(tag)
        try:
            vr = identifier[tag].VR
        except Exception:  # an unreadable value we do not match on: answer it empty
            vr = dictionary_VR(tag) if keyword else "UN"
        returned[tag] = (tag, keyword, vr.split(" or ")[0])
    top = 0 if model == PATIENT_ROOT else 1
    for name in LEVELS[top : LEVELS.index(level) + 1]:
        keyword = UNIQUE_KEYS[name]
        tag = Tag(keyword)
        returned.setdefault(tag, (tag, keyword, dictionary_VR(tag)))
    return list(returned.values())


def _responses(
    rows: Iterator[dict[str, Any]],
    level: str,
    keys: dict[str, Key],
    returned: list[tuple[BaseTag, str, str]],
) -> Iterator[Dataset]:
    for row in rows:
        if level == "PATIENT":
            for field in ("patient_name", "patient_birth_date", "patient_sex"):
                row[field] = row.pop(f"group_{field}")
        yield _response(row, level, keys, returned)


def _response(
    row: dict[str, Any],
    level: str,
    keys: dict[str, Key],
    returned: list[tuple[BaseTag, str, str]],
) -> Dataset:
    response = Dataset()
    response.QueryRetrieveLevel = level
    ascii_only = True
    for tag, keyword, vr in returned:
        key = keys.get(keyword)
        value: Any
        if key is not None:
            value = _output(row[key.field], key.match)
            vr = dictionary_VR(tag)
        elif keyword == "InstanceAvailability":
            value = "ONLINE"  # everything indexed is on local storage
        else:
            value = [] if vr == "SQ" else None
        if isinstance(value, str | list):
            texts = value if isinstance(value, list) else [value]
            ascii_only = ascii_only and all(text.isascii() for text in texts)
        response.add(DataElement(tag, vr, value, validation_mode=pydicom_config.IGNORE))
    if not ascii_only:
        response.SpecificCharacterSet = RESPONSE_CHARSET
    return response


def _output(value: Any, match: Match) -> Any:
    """An index value in the form pydicom wants for the attribute's VR."""
    if match in (Match.NUMBER, Match.RETURN):
        return None if value is None else int(value)
    if match is Match.MODALITIES:
        return value.split("\\") if value else ""
    return value or ""
