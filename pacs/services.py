"""Archive operations. `ingest` is the one way an image enters, whichever door it uses.

Order of work: parse the header once (no pixel data), write the bytes durably under
their content address, then record Study/Series/Instance in one transaction. The
caller reports success only after `ingest` returns (a deferred `IngestSession`:
after its `settle()` and the caller's commit). Slow work (counts, order
linking, thumbnails) runs in a Celery task after commit.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import logging
import mmap
from collections.abc import Iterable
from dataclasses import dataclass, field

from django import db
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from accounts import audit
from accounts.models import Facility, User
from config import plain_sql
from pacs import storage
from pacs.dicom.parse import DicomParseError, Header, instance_json, read_instance
from pacs.dicom.render import RenderError, render
from pacs.models import Instance, Series, Study
from ris import selectors as ris_selectors
from ris.models import Order

logger = logging.getLogger(__name__)


class DuplicatePolicy(enum.StrEnum):
    """What to do when a stored SOP Instance UID arrives again with different bytes."""

    REJECT = "reject"
    KEEP_FIRST = "keep_first"
    OVERWRITE = "overwrite"


class IngestOutcome(enum.StrEnum):
    STORED = "stored"
    ALREADY_STORED = "already_stored"  # same bytes again: a no-op success
    KEPT_FIRST = "kept_first"  # different bytes, policy keep_first: success, nothing changed
    OVERWRITTEN = "overwritten"


class IngestError(Exception):
    """The instance is refused; `reason` is for the sender, `dicom_status` for DIMSE."""

    def __init__(self, reason: str, dicom_status: int = 0xC000, http_status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.dicom_status = dicom_status
        self.http_status = http_status


# PS3.4 B.2.3 / PS3.7 C: 0xC000 "cannot understand", 0x0111 "duplicate SOP instance",
# 0xA700 "out of resources".
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_DUPLICATE_SOP_INSTANCE = 0x0111
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DATASET_MISMATCH = 0xA900  # "Data Set does not match SOP Class" family


@dataclass(frozen=True)
class IngestResult:
    outcome: IngestOutcome
    instance_id: int
    study_id: int
    sop_class_uid: str
    sop_instance_uid: str
    # Where the instance was stored, when this call stored it (else read the row).
    study_instance_uid: str = ""
    series_instance_uid: str = ""


@dataclass
class IngestSession:
    """One push (a DIMSE association, a STOW-RS request): the series and study rows it
    has looked up, so each further instance of them costs one INSERT, not two SELECTs
    more; and the studies it stored into (an association refreshes them at its end).

    `deferred` (STOW-RS, whose answer covers many instances): the caller holds a
    transaction over several instances and calls `settle()` before it commits. Ingest
    then goes on to the next instance while this one's file is still being written
    and fsynced, and leaves the study's refresh flag to `settle()`, so the study row is
    locked only while the transaction commits. No row is committed before its file is
    durable, and one commit covers them all.
    """

    series: dict[tuple[int, str, str], tuple[int, int]] = field(default_factory=dict)
    study_ids: set[int] = field(default_factory=set)
    # The study rows it has read or made, as they were then (STOW-RS names them in its
    # audit events without reading them again).
    studies: dict[int, Study] = field(default_factory=dict)
    deferred: bool = False
    # (instance id, storage key, put) inserted in the open transaction, file not settled;
    # no instance id: a refused instance's file, dropped once the transaction has ended
    unsettled: list[tuple[int | None, str, storage.PendingPut]] = field(default_factory=list)
    unflagged_study_ids: set[int] = field(default_factory=set)
    # (storage key, whether the put made the file) named by `settle()` for rows the open
    # transaction holds: dropped by `abandon()` if that transaction fails to commit.
    installed: list[tuple[str, bool]] = field(default_factory=list)

    def remember(self, key: tuple[int, str, str], series_id: int, study: Study) -> None:
        """The series (facility, study UID, series UID) `key` is stored, in `study`."""
        self.series[key] = (series_id, study.pk)
        self.studies[study.pk] = study

    def settle(self) -> set[int]:
        """Before the caller's commit: wait until the files of the instances inserted
        since the last call are durable; delete the rows of those whose file failed
        (their ids are returned: refuse them); flag their studies for the follow-up
        task. Raises what the database raises (the caller rolls back and `abandon`s)."""
        failed: set[int] = set()
        for instance_id, key, pending in self.unsettled:
            if instance_id is None:  # refused: dropped whether the transaction commits or not
                created = _install_settled(pending)
                self.installed.append((key, created))
                transaction.on_commit(functools.partial(_discard_unreferenced, key, created))
                continue
            try:
                self.installed.append((key, pending.install()))
            except OSError as error:
                logger.error("cannot store instance %s: %s", instance_id, error)
                failed.add(instance_id)
                # renamed, then the folder's fsync failed: no row will name it
                transaction.on_commit(functools.partial(_discard_unreferenced, key, True))
        self.unsettled.clear()
        transaction.on_commit(self.installed.clear)
        if failed:
            Instance.objects.filter(pk__in=failed).delete()
        if self.unflagged_study_ids:
            flagged = _flag_for_refresh(sorted(self.unflagged_study_ids))
            self.unflagged_study_ids.clear()
            for study_id in flagged:
                transaction.on_commit(functools.partial(_refresh_soon, study_id))
        return failed

    def abandon(self) -> None:
        """After the caller rolled back: drop the files no row will name, and forget the
        series rows the transaction may have created."""
        self.series.clear()
        self.studies.clear()
        self.unflagged_study_ids.clear()
        named = [(key, _install_settled(pending)) for _, key, pending in self.unsettled]
        for key, created in self.installed + named:
            try:
                _discard_unreferenced(key, created)
            except db.Error as error:  # the database is gone: check_storage finds the file
                logger.error("cannot tell whether %s is still referenced: %s", key, error)
        self.unsettled.clear()
        self.installed.clear()


def duplicate_policy() -> DuplicatePolicy:
    return DuplicatePolicy(getattr(settings, "DICOM_DUPLICATE_POLICY", DuplicatePolicy.REJECT))


def ingest(
    data: bytes | mmap.mmap,
    *,
    facility: Facility,
    door: str,
    actor: str = "",
    user: User | None = None,
    remote_addr: str | None = None,
    expected_sop_instance_uid: str = "",
    schedule_refresh: bool = True,
    session: IngestSession | None = None,
    staged: storage.StagedFile | None = None,
) -> IngestResult:
    """Store one DICOM Part 10 file for `facility`; raise IngestError to refuse it.

    `expected_sop_instance_uid` is the UID the request announced (C-STORE Affected SOP
    Instance UID, STOW-RS study path); a dataset that says otherwise is refused.
    A door that knows when a push ends (the DIMSE association) passes
    `schedule_refresh=False` and calls `study_refresh` itself at the end; the study is
    flagged either way, so `refresh_pending_studies` catches what a crash left.
    `session` (one per association) remembers the series rows the push created.
    `staged`: the bytes were received straight into this file (`data` is its mapping);
    it is named by its content if the instance is stored, the caller releases it.
    """
    # The file is hashed, written and fsynced in a writer thread while this one parses.
    pending = storage.PendingPut(data) if staged is None else storage.PendingPut.of_staged(staged)
    try:
        header, metadata = read_instance(data)
        if expected_sop_instance_uid and expected_sop_instance_uid != header.sop_instance_uid:
            raise IngestError(
                "dataset SOP Instance UID differs from the request's", STATUS_DATASET_MISMATCH
            )
        cache_key = (facility.pk, header.study_instance_uid, header.series_instance_uid)
        known = session.series.get(cache_key) if session is not None else None
        deferred = session is not None and session.deferred
        # The steady state of a push (its series known): the file's write and fsyncs and
        # the row's commit run at once; the answer waits for both.
        overlapped = known is not None or deferred
        if overlapped:
            key, digest = pending.installing()
            created_file = False  # known once install() returns
        else:
            key, digest = pending.key()
            created_file = pending.install()
    except DicomParseError as error:
        pending.discard()
        logger.warning("refused instance from %s (%s): %s", actor or door, door, error)
        raise IngestError(str(error), STATUS_CANNOT_UNDERSTAND) from error
    except OSError as error:
        pending.discard()
        logger.error("cannot store an instance from %s: %s", actor or door, error)
        raise IngestError("archive storage is unavailable", STATUS_OUT_OF_RESOURCES, 503) from error
    except BaseException:
        pending.discard()
        raise

    audit_context = {"door": door, "user": user, "actor": actor, "remote_addr": remote_addr}
    try:
        if known is not None:  # one statement, committed on its own
            series_id, study_id = known
            inserted = _insert_instance(
                header, facility, series_id, study_id, key, digest, data, metadata, not deferred
            )
        elif (stored := _series_stored(header, facility)) is not None:  # as above
            series_id, study = stored
            study_id = study.pk
            inserted = _insert_instance(
                header, facility, series_id, study_id, key, digest, data, metadata, not deferred
            )
            if session is not None:
                session.remember(cache_key, series_id, study)
        else:  # a new series (and maybe study) commits with its first instance
            with transaction.atomic():
                series_id, study = _series_for(header, facility, audit_context)
                study_id = study.pk
                inserted = _insert_instance(
                    header, facility, series_id, study_id, key, digest, data, metadata, not deferred
                )
            if session is not None:
                session.remember(cache_key, series_id, study)
    except BaseException:
        if session is not None:  # a remembered row may be what is gone
            session.series.clear()
            session.studies.clear()
        if deferred:  # the transaction may be lost: the file is dropped once it has ended
            session.unsettled.append((None, key, pending))
            raise
        if overlapped:
            created_file = _install_settled(pending)
        _discard_unreferenced(key, created_file)
        raise
    # A staged file is released by the caller on return: its put is settled here.
    settle_later = deferred and inserted is not None and staged is None
    if overlapped and not settle_later:
        try:
            created_file = pending.install()
        except OSError as error:
            if inserted is not None:  # committed, but its file is not durable: take it back
                Instance.objects.filter(pk=inserted[0]).delete()
            _discard_unreferenced(key, True)  # renamed, then the folder's fsync failed
            logger.error("cannot store an instance from %s: %s", actor or door, error)
            raise IngestError(
                "archive storage is unavailable", STATUS_OUT_OF_RESOURCES, 503
            ) from error

    if inserted is None:  # the SOP instance was already stored
        existing = (
            Instance.objects.filter(facility=facility, sop_instance_uid=header.sop_instance_uid)
            .only("id", "sha256", "storage_key", "series__study_id", "sop_class_uid")
            .select_related("series")
            .first()
        )
        if existing is None:  # deleted meanwhile: nothing to compare with; let the sender retry
            _discard_unreferenced(key, created_file)
            raise IngestError(
                "instance changed while storing; send it again", STATUS_OUT_OF_RESOURCES, 503
            )
        if existing.storage_key != key:
            _discard_unreferenced(key, created_file)
        return _resend(existing, header, data, key, digest, actor or door)

    instance_id, flagged = inserted
    if session is not None:
        session.study_ids.add(study_id)
    if settle_later:
        session.unsettled.append((instance_id, key, pending))
    if deferred:
        session.unflagged_study_ids.add(study_id)
    elif flagged and schedule_refresh:
        # Only when the flag was clear: a 3,000-instance upload queues a few tasks.
        transaction.on_commit(functools.partial(_refresh_soon, study_id))
    return IngestResult(
        IngestOutcome.STORED,
        instance_id,
        study_id,
        header.sop_class_uid,
        header.sop_instance_uid,
        header.study_instance_uid,
        header.series_instance_uid,
    )


@functools.cache
def _instance_sql(columns: tuple[str, ...]) -> tuple[str, str, str]:
    """(insert, flag, both in one statement) for `_insert_instance`. Names come from
    the models and the database's quoting; every value is a query parameter."""
    quote = connection.ops.quote_name
    instance_table, study_table = quote(Instance._meta.db_table), quote(Study._meta.db_table)
    insert = (
        f"INSERT INTO {instance_table} ({', '.join(quote(name) for name in columns)}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(columns))}) "
        f"ON CONFLICT ({quote('facility_id')}, {quote('sop_instance_uid')}) DO NOTHING "
        f"RETURNING {quote('id')}"
    )
    flag = (
        f"UPDATE {study_table} SET {quote('needs_refresh')} = %s "  # noqa: S608
        f"WHERE {quote('id')} = %s AND NOT {quote('needs_refresh')}"
    )
    insert_and_flag = (
        f"WITH inserted AS ({insert}), flagged AS ({flag} "  # noqa: S608
        f"AND EXISTS (SELECT 1 FROM inserted) RETURNING 1) "
        f"SELECT {quote('id')}, EXISTS (SELECT 1 FROM flagged) FROM inserted"
    )
    return insert, flag, insert_and_flag


def _refresh_soon(study_id: int) -> None:
    from pacs import tasks

    tasks.study_refresh.apply_async((study_id,), countdown=2)


def _flag_for_refresh(study_ids: list[int]) -> list[int]:
    """Flag the studies for the follow-up task; those whose flag was clear (the others
    have a task coming)."""
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(Study._meta.db_table)} SET {quote('needs_refresh')} = %s "  # noqa: S608
            f"WHERE {quote('id')} IN ({', '.join(['%s'] * len(study_ids))}) "
            f"AND NOT {quote('needs_refresh')} RETURNING {quote('id')}",
            [True, *study_ids],
        )
        return sorted(row[0] for row in cursor.fetchall())


def _insert_instance(
    header: Header,
    facility: Facility,
    series_id: int,
    study_id: int,
    key: str,
    digest: str,
    data: bytes,
    metadata: str,
    flag: bool = True,
) -> tuple[int, bool] | None:
    """Insert the instance row and flag its study for the follow-up task: (instance id,
    whether the flag was clear); None when the SOP instance is already stored (nothing
    is written then). `flag=False`: the row only (the flag is the caller's).

    This is the one write per C-STORE, so on PostgreSQL it is one statement: one round
    trip and one commit. The study flag is written only when it was clear, so a long
    push updates the study row once, and a crash mid-push leaves the study flagged for
    refresh_pending_studies.
    """
    columns = {
        "facility_id": facility.pk,
        "series_id": series_id,
        "sop_instance_uid": header.sop_instance_uid,
        "sop_class_uid": header.sop_class_uid,
        "transfer_syntax_uid": header.transfer_syntax_uid,
        "instance_number": header.integer("InstanceNumber"),
        "rows": header.integer("Rows"),
        "columns": header.integer("Columns"),
        "number_of_frames": header.integer("NumberOfFrames") or 1,
        "storage_key": key,
        "size": len(data),
        "sha256": digest,
        "metadata_json": metadata,
        "received_at": timezone.now(),
    }
    insert, flag_sql, insert_and_flag = _instance_sql(tuple(columns))
    values = list(columns.values())
    if connection.vendor == "postgresql":
        # A server-side prepared statement: parsed and planned once per connection
        # (an association's), its values sent as parameters, not quoted into the text.
        with plain_sql.cursor() as cursor:
            if not flag:
                cursor.execute(insert, values)
                row = cursor.fetchone()
                return (row[0], False) if row else None
            cursor.execute(insert_and_flag, [*values, True, study_id])
            row = cursor.fetchone()
        return (row[0], bool(row[1])) if row else None
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(insert, values)
        row = cursor.fetchone()
        if row is None or not flag:
            return None if row is None else (row[0], False)
        cursor.execute(flag_sql, [True, study_id])
        return row[0], cursor.rowcount > 0


def _series_stored(header: Header, facility: Facility) -> tuple[int, Study] | None:
    """(series id, study) of the instance's series if it is stored, with one prepared
    statement (no savepoint then, no ORM lookups); IngestError if of another study."""
    known = _series_known(facility, header.series_instance_uid)
    if known is None:
        return None
    series_id, study = known
    if study.study_instance_uid != header.study_instance_uid:
        raise IngestError(
            f"series {header.series_instance_uid} already belongs to another study",
            STATUS_CANNOT_UNDERSTAND,
        )
    return series_id, study


def _series_for(header: Header, facility: Facility, audit_context: dict) -> tuple[int, Study]:
    """(series id, study) of the instance's series, creating rows as needed."""
    stored = _series_stored(header, facility)  # made meanwhile by another push?
    if stored is not None:
        return stored
    study, study_created = _study_for(header, facility)
    if study_created:
        audit.record(
            action=audit.Action.CREATE,
            obj=study,
            detail={"study_instance_uid": study.study_instance_uid},
            **audit_context,
        )
    series, _ = Series.objects.get_or_create(
        facility=facility,
        series_instance_uid=header.series_instance_uid,
        defaults={
            "study": study,
            "modality": header.text("Modality", 16),
            "series_number": header.integer("SeriesNumber"),
            "series_description": header.text("SeriesDescription"),
            "body_part_examined": header.text("BodyPartExamined", 16),
            "series_date": header.text("SeriesDate", 8),
        },
    )
    if series.study_id != study.pk:
        raise IngestError(
            f"series {header.series_instance_uid} already belongs to another study",
            STATUS_CANNOT_UNDERSTAND,
        )
    return series.pk, study


def _series_known(facility: Facility, series_uid: str) -> tuple[int, Study] | None:
    """(series id, its study) of a series already stored, else None. Each STOW-RS
    request and each association asks once per series it stores into."""
    with plain_sql.cursor() as cursor:
        cursor.execute(_series_known_sql(), [facility.pk, series_uid])
        row = cursor.fetchone()
    return None if row is None else (row[-1], plain_sql.instance_of(Study, row))


@functools.cache
def _series_known_sql() -> str:
    quote = connection.ops.quote_name
    study_columns = ", ".join(f"t.{quote(f.column)}" for f in Study._meta.concrete_fields)
    return (
        f"SELECT {study_columns}, s.{quote('id')} "  # noqa: S608
        f"FROM {quote(Series._meta.db_table)} s JOIN {quote(Study._meta.db_table)} t "
        f"ON t.{quote('id')} = s.{quote('study_id')} "
        f"WHERE s.{quote('facility_id')} = %s AND s.{quote('series_instance_uid')} = %s"
    )


def _study_for(header: Header, facility: Facility) -> tuple[Study, bool]:
    issuer = header.text("IssuerOfPatientID")
    return Study.objects.get_or_create(
        facility=facility,
        study_instance_uid=header.study_instance_uid,
        defaults={
            "dicom_patient_id": header.text("PatientID"),
            "issuer_of_patient_id": issuer,
            "patient_name": header.text("PatientName", 324),
            "patient_birth_date": header.text("PatientBirthDate", 8),
            "patient_sex": header.text("PatientSex", 16),
            "study_date": header.text("StudyDate", 8),
            "study_time": header.text("StudyTime", 16),
            "accession_number": header.text("AccessionNumber", 16),
            "study_id": header.text("StudyID", 16),
            "study_description": header.text("StudyDescription"),
            "referring_physician_name": header.text("ReferringPhysicianName", 324),
            "modalities_in_study": header.text("Modality", 16),
        },
    )


def _resend(
    existing: Instance, header: Header, data: bytes, key: str, digest: str, sender: str
) -> IngestResult:
    """The SOP instance is already stored: same bytes succeed quietly; different bytes
    follow the duplicate policy."""
    study_id = existing.series.study_id
    if existing.sha256 == digest:
        logger.info("instance %s re-sent by %s: already stored", header.sop_instance_uid, sender)
        return IngestResult(
            IngestOutcome.ALREADY_STORED,
            existing.pk,
            study_id,
            header.sop_class_uid,
            header.sop_instance_uid,
        )
    policy = duplicate_policy()
    logger.warning(
        "instance %s re-sent by %s with different content; policy %s",
        header.sop_instance_uid,
        sender,
        policy,
    )
    if policy == DuplicatePolicy.REJECT:
        raise IngestError(
            f"SOP instance {header.sop_instance_uid} is already stored with different content",
            STATUS_DUPLICATE_SOP_INSTANCE,
            409,
        )
    if policy == DuplicatePolicy.KEEP_FIRST:
        return IngestResult(
            IngestOutcome.KEPT_FIRST,
            existing.pk,
            study_id,
            header.sop_class_uid,
            header.sop_instance_uid,
        )
    created_file = storage.put(key, data)
    old_key = existing.storage_key
    try:
        with transaction.atomic():
            Instance.objects.filter(pk=existing.pk).update(
                storage_key=key,
                sha256=digest,
                size=len(data),
                transfer_syntax_uid=header.transfer_syntax_uid,
                metadata_json=instance_json(header),
            )
    except BaseException:
        _discard_unreferenced(key, created_file)
        raise
    # Once the row names the new file for good (a caller's transaction may still roll back).
    transaction.on_commit(functools.partial(_discard_unreferenced, old_key, True))
    return IngestResult(
        IngestOutcome.OVERWRITTEN,
        existing.pk,
        study_id,
        header.sop_class_uid,
        header.sop_instance_uid,
    )


def _install_settled(pending: storage.PendingPut) -> bool:
    """Wait for a put the writer names; whether it made the file (False if it failed)."""
    try:
        return pending.install()
    except OSError:
        return False


def _discard_unreferenced(key: str, created: bool) -> None:
    """Remove a file no index row points at (identical bytes may serve another facility)."""
    if created and not Instance.objects.filter(storage_key=key).exists():
        storage.delete(key)


def refresh_later(study_ids: Iterable[int]) -> None:
    """Queue `study_refresh` once for each study a push stored into (a DIMSE
    association, a STOW-RS request), when the push ends. A queue that is down loses
    nothing: the studies stay flagged for `refresh_pending_studies`."""
    from pacs import tasks

    for study_id in sorted(set(study_ids)):
        try:
            tasks.study_refresh.delay(study_id)
        except Exception:
            logger.exception("could not schedule the refresh of study %s", study_id)


def study_refresh(study_id: int) -> None:
    """Recompute a study's counts and modalities, and link it to its patient and order.

    Idempotent: the flag is cleared first, so instances arriving meanwhile flag the
    study again and schedule another run.
    """
    Study.objects.filter(pk=study_id).update(needs_refresh=False)
    study = Study.objects.filter(pk=study_id).first()
    if study is None:
        return
    series_counts = (
        Series.objects.filter(study_id=study_id)
        .annotate(instance_count=Count("instances"))
        .values_list("pk", "modality", "instance_count")
    )
    modalities: list[str] = []
    total = 0
    for series_id, modality, count in series_counts:
        changed = (
            Series.objects.filter(pk=series_id)
            .exclude(number_of_instances=count)
            .update(number_of_instances=count)
        )
        if changed or not Series.objects.filter(pk=series_id).exclude(thumbnail_key="").exists():
            series_thumbnail(series_id)
        total += count
        if modality and modality not in modalities:
            modalities.append(modality)
    link = study_match(study)
    Study.objects.filter(pk=study_id).update(
        number_of_series=len(series_counts),
        number_of_instances=total,
        modalities_in_study="\\".join(modalities)[:64],
        **link,
    )
    order_id = link.get("order_id") or study.order_id
    if order_id:
        Order.objects.filter(pk=order_id, images_received_at=None).update(
            images_received_at=timezone.now()
        )


THUMBNAIL_SIZE = 128


def series_thumbnail(series_id: int) -> None:
    """Render the series' middle image as a small PNG; a failure leaves no thumbnail."""
    instances = list(
        Instance.objects.filter(series_id=series_id)
        .order_by("instance_number", "id")
        .values_list("storage_key", "number_of_frames")
    )
    if not instances:
        return
    key, frames = instances[len(instances) // 2]
    try:
        png = render(storage.read(key), frame=frames // 2, size=THUMBNAIL_SIZE)
    except (RenderError, OSError) as error:
        logger.info("no thumbnail for series %s: %s", series_id, error)
        return
    digest = hashlib.sha256(png).hexdigest()
    thumbnail_key = f"thumbnails/{digest[:2]}/{digest}.png"
    storage.put(thumbnail_key, png)
    Series.objects.filter(pk=series_id).update(thumbnail_key=thumbnail_key)


def refresh_pending_studies() -> int:
    """Refresh every study still flagged (a listener killed mid-push, a lost task)."""
    pending = list(Study.objects.filter(needs_refresh=True).values_list("pk", flat=True))
    for study_id in pending:
        study_refresh(study_id)
    return len(pending)


def study_match(study: Study) -> dict[str, int | None]:
    """The RIS patient and order of a study, by Patient ID + issuer and Accession Number
    (or the Study Instance UID the worklist gave the modality).

    A study whose patient cannot be found is left unmatched for a human to reconcile;
    an order is linked only when its patient agrees with the study's.
    """
    if study.patient_id and study.order_id:
        return {}
    facility = study.facility
    patient = None
    if study.dicom_patient_id:
        # By MRN or another identifier; a merged record's old MRN finds the survivor.
        patient = ris_selectors.patient_by_identifier(
            facility=facility, value=study.dicom_patient_id, issuer=study.issuer_of_patient_id
        )
    order = None
    if study.accession_number:
        order = Order.objects.filter(
            facility=facility, accession_number=study.accession_number
        ).first()
    if order is None:
        # A modality that took the worklist's Study Instance UID but no accession number.
        order = Order.objects.filter(
            facility=facility, study_instance_uid=study.study_instance_uid
        ).first()
    if order is not None and patient is not None and order.patient_id != patient.pk:
        logger.warning(
            "study %s: accession %s belongs to another patient; order not linked",
            study.study_instance_uid,
            study.accession_number,
        )
        order = None
    if patient is None and order is not None:
        patient = order.patient
    link: dict[str, int | None] = {}
    if patient is not None and study.patient_id is None:
        link["patient_id"] = patient.pk
    if order is not None and study.order_id is None:
        link["order_id"] = order.pk
    return link
