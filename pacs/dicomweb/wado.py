"""WADO-RS (PS3.18 10.4): metadata and instances of a study, series or instance.

Metadata comes from the DICOM JSON stored at ingest (never from the files); its
BulkDataURIs are stored relative (`{+bulkdata}/studies/…`) and made absolute here
with the base URL the client used, so a proxy path prefix is kept.
"""

from __future__ import annotations

import functools
import hashlib
import io
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from django.db import connection
from django.db.models import F, QuerySet
from pydicom import dcmread
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    UncompressedTransferSyntaxes,
)

from config import plain_sql
from pacs import storage
from pacs.dicom.parse import BULK_DATA_URI_PREFIX
from pacs.dicomweb.access import DicomWebError, Scope
from pacs.dicomweb.pixels import media_ranges
from pacs.models import Instance, Series, Study

ANY_SYNTAX = "*"
# PS3.18 8.7.3.5.2: application/dicom without a transfer-syntax parameter means this one.
DEFAULT_DICOM_SYNTAX = ExplicitVRLittleEndian


@dataclass(frozen=True)
class Target:
    """What a WADO-RS path names: a study, a series of it, or an instance of that."""

    study_uid: str
    series_uid: str = ""
    sop_instance_uid: str = ""

    @property
    def level(self) -> str:
        if self.sop_instance_uid:
            return "instance"
        return "series" if self.series_uid else "study"


def instances(target: Target, scope: Scope) -> QuerySet[Instance]:
    """The target's instances the scope may see (404 when there are none)."""
    rows = Instance.objects.filter(
        facility_id__in=scope.all_facility_ids,
        series__study__study_instance_uid=target.study_uid,
    )
    condition = scope.study_condition("series__study__")
    if condition is not None:
        rows = rows.filter(condition)
    if target.series_uid:
        rows = rows.filter(series__series_instance_uid=target.series_uid)
    if target.sop_instance_uid:
        rows = rows.filter(sop_instance_uid=target.sop_instance_uid)
    return rows.order_by("series__series_number", "series_id", "instance_number", "pk")


def instance_for_pixels(target: Target, scope: Scope) -> Instance | None:
    """The instance the three UIDs name, if the scope may see it, for its frames, bulk
    data or a picture of it: its row without the metadata JSON (deferred), and the id of
    its study as `study_pk`.

    A viewer asks for hundreds of frames in a row, and the ORM's building of this query
    cost more than the database's running it: when the facilities alone decide the
    scope (everyone but referring physicians and share links), it is one statement built
    once per number of facilities."""
    facility_ids = sorted(scope.all_facility_ids)
    if not facility_ids or not target.sop_instance_uid:
        return None
    if scope.study_condition() is not None:
        rows = instances(target, scope).defer("metadata_json")
        return rows.annotate(study_pk=F("series__study_id")).first()
    sql = _pixel_instance_statement(len(facility_ids))
    params = [target.study_uid, target.series_uid, target.sop_instance_uid, *facility_ids]
    with plain_sql.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    instance = plain_sql.instance_of(Instance, row, deferred=("metadata_json",))
    instance.study_pk = row[-1]
    return instance


@functools.lru_cache(maxsize=16)
def _pixel_instance_statement(facilities: int) -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(
        f"i.{quote(field.column)}"
        for field in Instance._meta.concrete_fields
        if field.name != "metadata_json"
    )
    return (
        f"SELECT {columns}, s.study_id AS study_pk"  # noqa: S608
        f" FROM {quote(Instance._meta.db_table)} i"
        f" JOIN {quote(Series._meta.db_table)} s ON s.id = i.series_id"
        f" JOIN {quote(Study._meta.db_table)} st ON st.id = s.study_id"
        " WHERE st.study_instance_uid = %s AND s.series_instance_uid = %s"
        f" AND i.sop_instance_uid = %s AND i.facility_id IN ({', '.join(['%s'] * facilities)})"
        # as `instances` orders them: UIDs may repeat across facilities
        " ORDER BY s.series_number, i.series_id, i.instance_number, i.id"
        " LIMIT 1"
    )


def metadata_etag(rows: QuerySet[Instance], base_url: str) -> str | None:
    """A strong validator: changes when an instance is added, replaced or removed."""
    digests = list(rows.values_list("sha256", flat=True))
    if not digests:
        return None
    hasher = hashlib.sha256(base_url.encode())
    for digest in digests:
        hasher.update(digest.encode())
    return f'"{hasher.hexdigest()[:32]}"'


def metadata(rows: QuerySet[Instance], base_url: str) -> bytes:
    """The instances' DICOM JSON as one array, BulkDataURIs made absolute."""
    texts = list(rows.values_list("metadata_json", flat=True))
    if not texts:
        raise DicomWebError(404, "no such study, series or instance")
    body = "[" + ",".join(texts) + "]"
    return body.replace(BULK_DATA_URI_PREFIX, base_url.rstrip("/")).encode()


def wanted_syntax(accept: str) -> str:
    """The transfer syntax an Accept header asks of application/dicom parts: a UID,
    '*' for as stored, or the default; 406 for a media type we do not serve."""
    if not accept.strip():
        return DEFAULT_DICOM_SYNTAX
    for media_range in media_ranges(accept):
        kind, params = media_range.kind, media_range.params
        if kind in ("*/*", "multipart/related", "multipart/*"):
            part = params.get("type", "application/dicom").lower()
            if part not in ("application/dicom", "*/*"):
                continue
        elif kind != "application/dicom":
            continue
        return params.get("transfer-syntax", DEFAULT_DICOM_SYNTAX)
    raise DicomWebError(
        406,
        'instances are served as multipart/related; type="application/dicom" '
        "(with an optional transfer-syntax parameter)",
    )


def check_syntax(rows: list[Instance], syntax: str) -> None:
    """406 when some instance cannot be given in `syntax`."""
    if syntax in (ANY_SYNTAX, ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        return
    for instance in rows:
        if instance.transfer_syntax_uid != syntax:
            raise DicomWebError(
                406,
                f"transfer syntax {syntax} is not available for every instance; ask for * "
                f"(as stored) or {ExplicitVRLittleEndian}",
            )


def instance_bytes(instance: Instance, syntax: str) -> bytes:
    """The instance as a Part 10 file in `syntax` ('*': as stored)."""
    data = storage.read(instance.storage_key)
    if syntax in (ANY_SYNTAX, instance.transfer_syntax_uid):
        return data
    if syntax not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        raise DicomWebError(
            406,
            f"transfer syntax {syntax} is not available; ask for * (as stored, "
            f"{instance.transfer_syntax_uid}) or {ExplicitVRLittleEndian}",
        )
    dataset = dcmread(io.BytesIO(data))
    if dataset.file_meta.TransferSyntaxUID not in UncompressedTransferSyntaxes:
        dataset.decompress(generate_instance_uid=False)  # lossless: same instance
    if syntax == ImplicitVRLittleEndian:
        dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


class StoredFileChanged(Exception):
    """A stored file is not the size its index row says (it was damaged after ingest):
    a response that promised that size is broken off rather than sent with other bytes
    (`check_storage` reports the file)."""

    def __init__(self, key: str, indexed: int, found: int) -> None:
        super().__init__(f"{key}: {found} bytes where the index says {indexed}")


def multipart(parts: Iterator[tuple[bytes, dict[str, str]]], boundary: str) -> Iterator[bytes]:
    """A multipart/related body (RFC 2387), one part at a time."""
    for body, headers in parts:
        yield part_head(boundary, headers)
        yield body  # as it is: no copy of a whole file per part
        yield b"\r\n"
    yield close_delimiter(boundary)


def multipart_length(parts: Iterable[tuple[int, dict[str, str]]], boundary: str) -> int:
    """The length of `multipart`'s body for parts of these (body length, headers)."""
    total = len(close_delimiter(boundary))
    for size, headers in parts:
        total += len(part_head(boundary, headers)) + size + 2
    return total


def part_head(boundary: str, headers: dict[str, str]) -> bytes:
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"--{boundary}\r\n{head}\r\n".encode()


def close_delimiter(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode()


def new_boundary() -> str:
    return uuid.uuid4().hex
