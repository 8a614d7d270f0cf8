"""STOW-RS (PS3.18 10.5): storing instances through the archive's ingest service.

The request body (`multipart/related; type="application/dicom"`) is read as it
arrives, one part at a time (`pacs.dicomweb.multipart`); each part is a Part 10
file handed to `pacs.services.ingest`, the same door as C-STORE and the upload page.

The response is the Store Instances Response Module (PS3.18 Annex I) as DICOM JSON.
A Failed SOP Sequence item holds the Failure Reason (PS3.18 I.2.2: the ingest
service's DICOM status) and, since Annex I defines no text attribute there, the
reason in words as a private attribute (PS3.5 7.8): creator (0009,0010) "RADPACS",
text (0009,1001) LT.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import mmap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pydicom
from django.db import DEFAULT_DB_ALIAS, DatabaseError, InterfaceError, connection, transaction
from django.db.models import Model
from django.http import HttpRequest, HttpResponse, UnreadablePostError

from accounts import audit, scoping
from accounts.models import Facility
from config import plain_sql
from pacs import services, storage
from pacs.dicom.parse import UID_PATTERN, stream_of
from pacs.dicomweb import multipart
from pacs.dicomweb.access import DicomWebError, Scope
from pacs.dicomweb.pixels import media_ranges
from pacs.models import Instance, Study

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
PRIVATE_CREATOR = "RADPACS"
MAX_PART_BYTES = 2 * 1024**3  # as the upload page
SPOOL_MEMORY_BYTES = 1024 * 1024  # a bigger part waits on disk while it arrives
# The body is read in steps this large: gunicorn reads ahead up to 1 MiB and copies what
# it holds on every smaller read (64 KiB steps cost a STOW-RS request 2x the CPU).
READ_BYTES = 1024 * 1024
STATUS_STUDY_MISMATCH = 0xA900  # PS3.18 I.2.2 A9xx: the instance is not of the target study
# A request's instances are committed in chunks, each once the files of its instances
# are durable: one commit for many instances, and neither many parts' bytes in memory
# nor a transaction open for long while a slow client sends.
CHUNK_INSTANCES = 32
CHUNK_SECONDS = 0.2
NOT_INDEXED = "the archive index is unavailable; send the instance again"


@dataclass(frozen=True)
class Stored:
    sop_class_uid: str
    sop_instance_uid: str
    instance_id: int
    # (study id, study UID, series UID) when the ingest says; else read from the row.
    place: tuple[int, str, str] | None = None


@dataclass(frozen=True)
class Failed:
    sop_class_uid: str
    sop_instance_uid: str
    status: int
    reason: str
    media_type: bool = False  # the part was not application/dicom


logger = logging.getLogger(__name__)


def store(request: HttpRequest, scope: Scope, study_uid: str) -> HttpResponse:
    """POST /studies[/{study}]: store each part; 200 all stored, 202 some, 409 none."""
    from pacs.dicomweb.views import _audit, base_url  # views imports this module

    response_type = _response_type(request)
    boundary, declared_type = _request_type(request)
    facility = _facility(request, scope)
    stream = _body(request)
    remote_addr = audit.client_address(request)
    session = services.IngestSession(deferred=True)
    parts = multipart.parts(
        stream,
        boundary,
        chunk_size=READ_BYTES,
        spool_size=SPOOL_MEMORY_BYTES,
        max_part_size=MAX_PART_BYTES,
    )

    def store_part(part: multipart.Part) -> Stored | Failed:
        return _store_part(part, declared_type, study_uid, facility, scope, remote_addr, session)

    places: dict[int, tuple[int, str, str]] = {}
    chunks = 0

    def record(chunk: list[Stored | Failed]) -> None:
        """Audit a chunk within its transaction: no instance is committed unaudited."""
        nonlocal chunks
        chunks += 1
        stored = [result for result in chunk if isinstance(result, Stored)]
        studies = _studies(stored)
        places.update(studies)
        uids = {uid for _, uid, _ in studies.values()} | ({study_uid} if study_uid else set())
        _audit(
            request,
            scope,
            audit.Action.CREATE,
            study=_only_study(studies, session.studies) if len(uids) == 1 else None,
            resource="instances",
            facility=facility.code,
            stored=len(stored),
            failed=len(chunk) - len(stored),
            studies=sorted(uids)[:20],
            chunk=chunks,
        )

    results = _store_all(parts, store_part, session, record)
    if not results:
        raise DicomWebError(400, "the request holds no instances")

    stored = [result for result in results if isinstance(result, Stored)]
    failed = [result for result in results if isinstance(result, Failed)]
    if not stored and all(result.media_type for result in failed):
        raise DicomWebError(415, failed[0].reason)
    study_uids = {uid for _, uid, _ in places.values()} | ({study_uid} if study_uid else set())
    root = base_url(request)
    document = _response(root, study_uids, stored, failed, places)
    status = 200 if not failed else 202 if stored else 409
    return HttpResponse(
        json.dumps(document, ensure_ascii=False, separators=(",", ":")),
        status=status,
        content_type=response_type,
    )


def _store_all(
    parts: Iterator[multipart.Part],
    store_part: Callable[[multipart.Part], Stored | Failed],
    session: services.IngestSession,
    record: Callable[[list[Stored | Failed]], None],
) -> list[Stored | Failed]:
    """Every part's result, stored chunk by chunk: each chunk's rows and its audit event
    are committed in one transaction once their files are durable (`IngestSession.settle`)."""
    results: list[Stored | Failed] = []
    more = True
    while more:
        chunk: list[Stored | Failed] = []
        try:
            more = _store_chunk(parts, store_part, chunk, results, session, record)
        except (DatabaseError, InterfaceError, _IndexFailure) as error:  # a deadlock, no database
            session.abandon()
            chunk = [_not_indexed(item) for item in chunk]
            if isinstance(error, _IndexFailure):
                chunk.append(error.refused)
            logger.error("STOW-RS: %d instances not indexed: %s", len(chunk), error)
            try:  # the attempt is audited if the database still takes it
                record(chunk)
            except (DatabaseError, InterfaceError) as failure:
                logger.error(
                    "STOW-RS: the refusal of %d instances is not audited: %s", len(chunk), failure
                )
        except BaseException:
            session.abandon()
            raise
        results += chunk
    return results


class _IndexFailure(Exception):
    """The index failed while storing this instance: its transaction is lost."""

    def __init__(self, refused: Failed) -> None:
        super().__init__(refused.reason)
        self.refused = refused


def _store_chunk(
    parts: Iterator[multipart.Part],
    store_part: Callable[[multipart.Part], Stored | Failed],
    chunk: list[Stored | Failed],
    earlier: list[Stored | Failed],
    session: services.IngestSession,
    record: Callable[[list[Stored | Failed]], None],
) -> bool:
    """Store parts into `chunk` in one transaction until it is full or old; whether parts
    may follow. The transaction begins once the first part is in (a part is received
    whole before `parts` yields it), not while it arrives: SQLite takes its write lock at
    BEGIN."""
    with contextlib.ExitStack() as once_received:
        more = False
        started = 0.0
        try:
            for part in parts:
                if not started:
                    once_received.enter_context(transaction.atomic())
                    started = time.monotonic()
                chunk.append(store_part(part))
                if len(chunk) >= CHUNK_INSTANCES or time.monotonic() - started > CHUNK_SECONDS:
                    more = True
                    break
        except (multipart.MultipartError, OSError, UnreadablePostError) as error:
            _refuse_rest(chunk, earlier, error)
        failed_ids = session.settle()
        chunk[:] = [_file_failed(item) if _in(item, failed_ids) else item for item in chunk]
        if chunk:
            record(chunk)
        return more


def _refuse_rest(
    chunk: list[Stored | Failed], earlier: list[Stored | Failed], error: Exception
) -> None:
    """The body broke off (malformed, or the client went away mid-upload): a 400 if
    nothing came before, else one failed item more."""
    if isinstance(error, multipart.MultipartError):
        if not chunk and not earlier:
            raise DicomWebError(400, f"malformed multipart body: {error}") from error
        chunk.append(
            Failed("", "", services.STATUS_CANNOT_UNDERSTAND, f"malformed multipart body: {error}")
        )
        return
    logger.info("STOW-RS upload interrupted after %d parts: %s", len(earlier + chunk), error)
    if not chunk and not earlier:
        raise DicomWebError(400, "the upload was interrupted before any instance") from error
    chunk.append(Failed("", "", services.STATUS_CANNOT_UNDERSTAND, "the upload was interrupted"))


def _in(item: Stored | Failed, instance_ids: set[int]) -> bool:
    return isinstance(item, Stored) and item.instance_id in instance_ids


def _file_failed(item: Stored | Failed) -> Failed:
    return Failed(
        item.sop_class_uid,
        item.sop_instance_uid,
        services.STATUS_OUT_OF_RESOURCES,
        "archive storage is unavailable",
    )


def _not_indexed(item: Stored | Failed) -> Failed:
    """An instance whose transaction was rolled back: the sender may send it again."""
    if isinstance(item, Failed):
        return item
    return Failed(
        item.sop_class_uid, item.sop_instance_uid, services.STATUS_OUT_OF_RESOURCES, NOT_INDEXED
    )


def _response_type(request: HttpRequest) -> str:
    """application/dicom+json unless the client asks for application/json only; else 406."""
    from pacs.dicomweb.views import _accepts_json

    _accepts_json(request)
    kinds = {media_range.kind for media_range in media_ranges(request.headers.get("Accept", ""))}
    if "application/json" in kinds and not kinds & {DICOM_JSON, "*/*", "application/*"}:
        return "application/json"
    return DICOM_JSON


def _request_type(request: HttpRequest) -> tuple[str, str]:
    """(boundary, declared part type) of a multipart/related request; 415 otherwise."""
    kind, params = multipart.media_type(request.META.get("CONTENT_TYPE", ""))
    if kind != "multipart/related":
        raise DicomWebError(
            415,
            f'STOW-RS takes multipart/related; type="{DICOM}" bodies, not {kind or "nothing"}',
        )
    declared = params.get("type", "").lower()
    if declared and declared != DICOM:
        raise DicomWebError(
            415,
            f'only type="{DICOM}" (Part 10 files) is accepted; {declared} '
            "(metadata with bulk data) is not supported",
        )
    boundary = params.get("boundary", "")
    if not boundary:
        raise DicomWebError(400, "the Content-Type has no boundary parameter")
    return boundary, declared


def _facility(request: HttpRequest, scope: Scope) -> Facility:
    """Where the instances go: the one facility the user may upload to, or ?facility=."""
    if not scope.upload_facility_ids:
        raise DicomWebError(403, "you may not store images at any facility")
    # Id and code, read with the user's roles (the token's statement): the rest of the
    # row is read only if asked for.
    codes = scoping.facility_codes(scope.user)
    if scope.upload_facility_ids <= codes.keys():
        choices = [
            Facility.from_db(DEFAULT_DB_ALIAS, ["id", "code"], [pk, codes[pk]])
            for pk in scope.upload_facility_ids
        ]
    else:
        choices = _rows(Facility, "id", sorted(scope.upload_facility_ids))
    choices.sort(key=lambda facility: facility.code)
    code = request.GET.get("facility", "")
    if code:
        for facility in choices:
            if facility.code.lower() == code.lower():
                return facility
        raise DicomWebError(403, f"you may not store images at facility {code!r}")
    if len(choices) > 1:
        codes = ", ".join(facility.code for facility in choices)
        raise DicomWebError(
            400, f"you may store images at several facilities ({codes}): add ?facility=<code>"
        )
    return choices[0]


def _body(request: HttpRequest) -> multipart.Readable:
    """The request body as a stream, never read whole.

    Django reads at most Content-Length bytes (none without it). A server that
    de-chunks a chunked body itself says so with `wsgi.input_terminated` (gunicorn
    does); Django's development server does not, so a chunked body is a 411 there.
    """
    if request.META.get("CONTENT_LENGTH"):
        return request
    if request.META.get("wsgi.input_terminated"):
        return request.META["wsgi.input"]
    if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        raise DicomWebError(411, "this server needs a Content-Length (cannot read a chunked body)")
    return request


def _store_part(
    part: multipart.Part,
    declared_type: str,
    study_uid: str,
    facility: Facility,
    scope: Scope,
    remote_addr: str | None,
    session: services.IngestSession,
) -> Stored | Failed:
    kind = part.content_type
    if kind != DICOM and (kind or declared_type != DICOM):
        return Failed(
            "",
            "",
            services.STATUS_CANNOT_UNDERSTAND,
            f"a part is {kind or 'untyped'}; only {DICOM} parts (Part 10 files) are accepted",
            media_type=True,
        )
    if part.truncated:
        return Failed(
            "",
            "",
            services.STATUS_OUT_OF_RESOURCES,
            f"a part is larger than {MAX_PART_BYTES // 1024**3} GB",
        )
    try:
        with storage.received(part.body, part.size) as (data, staged):
            return _ingest_part(data, staged, study_uid, facility, scope, remote_addr, session)
    except OSError as error:  # the part could not be staged (disk full)
        logger.error("cannot stage a STOW-RS part: %s", error)
        return Failed("", "", services.STATUS_OUT_OF_RESOURCES, "archive storage is unavailable")


def _ingest_part(
    data: bytes | mmap.mmap,
    staged: storage.StagedFile | None,
    study_uid: str,
    facility: Facility,
    scope: Scope,
    remote_addr: str | None,
    session: services.IngestSession,
) -> Stored | Failed:
    identity = _identity(data) if study_uid else None
    if identity and identity[2] and identity[2] != study_uid:
        return Failed(
            identity[0],
            identity[1],
            STATUS_STUDY_MISMATCH,
            f"the instance belongs to study {identity[2]}, not to {study_uid} of the request",
        )
    try:
        result = services.ingest(
            data,
            facility=facility,
            door=audit.Door.DICOMWEB,
            user=scope.user,
            actor=scope.user.get_username(),
            remote_addr=remote_addr,
            expected_sop_instance_uid="",
            session=session,
            staged=staged,
        )
    except services.IngestError as error:
        sop_class_uid, sop_instance_uid, _ = identity or _identity(data)
        return Failed(sop_class_uid, sop_instance_uid, error.dicom_status, error.reason)
    except DatabaseError as error:
        sop_class_uid, sop_instance_uid, _ = identity or _identity(data)
        refused = Failed(
            sop_class_uid, sop_instance_uid, services.STATUS_OUT_OF_RESOURCES, NOT_INDEXED
        )
        raise _IndexFailure(refused) from error
    place = (
        (result.study_id, result.study_instance_uid, result.series_instance_uid)
        if result.series_instance_uid
        else None
    )
    return Stored(result.sop_class_uid, result.sop_instance_uid, result.instance_id, place)


def _identity(data: bytes | mmap.mmap) -> tuple[str, str, str]:
    """(SOP Class, SOP Instance, Study Instance UID) as far as they can be read; '' if not.
    For the study check and for naming a refused instance; ingest does the real checks."""
    keywords = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID")
    try:
        dataset = pydicom.dcmread(
            stream_of(data), stop_before_pixels=True, specific_tags=list(keywords)
        )
        values = [str(dataset.get(keyword, "") or "").strip() for keyword in keywords]
    except Exception:  # anything unreadable: ingest says why
        return "", "", ""
    sop_class_uid, sop_instance_uid, study_uid = (
        value if len(value) <= 64 and UID_PATTERN.match(value) else "" for value in values
    )
    return sop_class_uid, sop_instance_uid, study_uid


def _studies(stored: list[Stored]) -> dict[int, tuple[int, str, str]]:
    """instance id -> (study id, study UID, series UID): as the ingest said, else (an
    instance stored before, sent again) read with one query."""
    places = {result.instance_id: result.place for result in stored if result.place}
    unknown = [result.instance_id for result in stored if not result.place]
    if unknown:
        rows = Instance.objects.filter(pk__in=unknown).values_list(
            "pk",
            "series__study_id",
            "series__study__study_instance_uid",
            "series__series_instance_uid",
        )
        places |= {pk: (study, study_uid, series_uid) for pk, study, study_uid, series_uid in rows}
    return places


def _only_study(studies: dict[int, tuple[int, str, str]], known: dict[int, Study]) -> Study | None:
    """The one study of `studies` (as the ingest read or made it, else read now)."""
    study_ids = {study_id for study_id, _, _ in studies.values()}
    if len(study_ids) != 1:
        return None
    (study_id,) = study_ids
    if study_id in known:
        return known[study_id]
    found = _rows(Study, "id", [study_id])
    return found[0] if found else None


M = TypeVar("M", Facility, Study)


def _rows(model: type[M], column: str, values: list[Any]) -> list[M]:
    """The rows of `model` whose `column` is among `values`, with one plain statement:
    the two lookups of every request cost more to build through the ORM than to run."""
    with plain_sql.cursor() as cursor:
        cursor.execute(_rows_sql(model, column, len(values)), values)
        return [plain_sql.instance_of(model, row) for row in cursor.fetchall()]


@functools.cache
def _rows_sql(model: type[Model], column: str, count: int) -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in model._meta.concrete_fields)
    return (
        f"SELECT {columns} FROM {quote(model._meta.db_table)} "  # noqa: S608
        f"WHERE {quote(column)} IN ({', '.join(['%s'] * count)})"
    )


def _response(
    root: str,
    study_uids: set[str],
    stored: list[Stored],
    failed: list[Failed],
    studies: dict[int, tuple[int, str, str]],
) -> dict:
    """The Store Instances Response Module (PS3.18 Annex I) in DICOM JSON, tags in order."""
    study_url = f"{root}/studies/{next(iter(study_uids))}" if len(study_uids) == 1 else ""
    document: dict[str, dict] = {"00081190": _element("UR", study_url)}
    if failed:
        document["00081198"] = {"vr": "SQ", "Value": [_failed_item(item) for item in failed]}
    if stored:
        items = []
        for item in stored:
            _, study, series_uid = studies.get(item.instance_id, (0, "", ""))
            url = f"{root}/studies/{study}/series/{series_uid}/instances/{item.sop_instance_uid}"
            items.append(
                {
                    "00081150": _element("UI", item.sop_class_uid),
                    "00081155": _element("UI", item.sop_instance_uid),
                    "00081190": _element("UR", url),
                }
            )
        document["00081199"] = {"vr": "SQ", "Value": items}
    return document


def _failed_item(item: Failed) -> dict[str, dict]:
    document = {}
    if item.sop_class_uid:
        document["00081150"] = _element("UI", item.sop_class_uid)
    if item.sop_instance_uid:
        document["00081155"] = _element("UI", item.sop_instance_uid)
    document["00081197"] = _element("US", item.status)
    document["00090010"] = _element("LO", PRIVATE_CREATOR)
    document["00091001"] = _element("LT", item.reason)
    return document


def _element(vr: str, value: str | int) -> dict:
    return {"vr": vr, "Value": [value]} if value != "" else {"vr": vr}
