"""HL7 in: every message is stored raw and committed before it is acknowledged, then
applied by a worker, one patient's messages in the order they arrived.

`message_receive` is what the MLLP listener calls for each message; `message_process`
what the Celery task calls. Both can run many at once, in many processes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Min
from django.utils import timezone

from accounts import audit
from accounts.models import Facility
from config import plain_sql
from ris import selectors
from ris.hl7 import ack, outbox, parse
from ris.hl7.inbound import HANDLERS, Context, Handler, NothingToDo, adt
from ris.hl7.models import InboundMessage, Partner
from ris.hl7.parse import Hl7Error, Message
from ris.services import RisError

logger = logging.getLogger(__name__)

# HL7 table 0103: production, training, debugging.
PROCESSING_IDS = frozenset({"P", "T", "D"})
# After this many tries that ended in an unexpected error, a message is set aside as
# failed so it does not hold its patient's later messages up for ever.
MAX_ATTEMPTS = 5

Status = InboundMessage.Status


@dataclass(frozen=True)
class Receipt:
    """What the listener sends back (None: nothing, as enhanced mode's MSH-15 may ask)
    and the stored row's id."""

    ack: str | None
    message_id: int


def message_receive(
    raw: bytes, *, peer: str = "", announce: Callable[[int], None] | None = None
) -> Receipt:
    """Store one message and decide its acknowledgement (HL7 v2.5.1 2.9).

    The row is committed before this returns, so the ACK the caller sends next is only
    ever sent for a message that is durable; an accepted message is queued for
    processing once committed (by `announce(id)` when given: the listener batches).
    Nothing received is dropped: a message we refuse is kept too, with the reason, for
    the message log.
    """
    row = InboundMessage(raw=raw, peer=peer[:64])
    header: parse.Header | None = None
    try:
        # NUL has no place in HL7 text and PostgreSQL text cannot hold it: read it as "?"
        # (the raw bytes keep the original).
        message = parse.parse(raw.replace(b"\x00", b"?"))
        header = message.header
        row.text = message.text
        _describe(row, message)
        row.facility, row.partner = _sender(header)
        _check(message, row.facility)
        if not row.patient_key and row.order_number:
            row.patient_key = _order_queue(row.facility, row.order_number)
    except Hl7Error as error:
        row.status = Status.FAILED if error.replayable else Status.REJECTED
        row.ack_code = error.ack_code
        row.error = error.reason
        row.error_location = error.location
        row.ack = ack.build(
            header,
            error.ack_code,
            reason=error.reason,
            location=error.location,
            error_code=error.error_code,
        )
        if not row.text:
            row.text = raw.decode("utf-8", errors="replace").replace("\x00", "?")
    else:
        row.ack_code = ack.ACCEPT
        row.ack = ack.build(header, ack.ACCEPT)
    if row.status != Status.REJECTED and row.control_id:
        row.copy_key = copy_key(
            row.sending_application, row.sending_facility, row.control_id, row.text
        )
    _store(row)
    if row.status == Status.RECEIVED:
        # Robust: the message is stored either way; a broker that is down must not
        # make the listener say "not stored" (the periodic requeue sends the task).
        transaction.on_commit(lambda: (announce or _process_soon)(row.pk), robust=True)
    wanted = header is None or ack.wanted(header, row.ack_code)
    return Receipt(ack=row.ack if wanted else None, message_id=row.pk)


def _process_soon(message_id: int) -> None:
    from ris.hl7 import tasks

    tasks.process_message.delay(message_id)


def _order_queue(facility: Facility, order_number: str) -> str:
    """The queue of an order message that names no patient (a bare cancel): that of the
    messages about the same order, so it applies after the one creating the order."""
    key = (
        InboundMessage.objects.filter(facility=facility, order_number=order_number)
        .exclude(patient_key="")
        .order_by("-id")
        .values_list("patient_key", flat=True)
        .first()
    )
    return key or ""


def _describe(row: InboundMessage, message: Message) -> None:
    """The columns the log is searched by, and the queue key."""
    header = message.header
    row.sending_application = header.sending_application[:180]
    row.sending_facility = header.sending_facility[:180]
    row.control_id = header.control_id[:199]
    row.message_type = header.message_type[:16]
    row.version = header.version[:8]
    pid = message.segment("PID")
    if pid is not None:
        patient_id, issuer = adt.pid_key(pid)
        if patient_id:
            row.patient_key = f"{issuer}^{patient_id}"[:200]
        row.patient_name = " ".join(part for part in (pid.value(5, 2), pid.value(5, 1)) if part)[
            :200
        ]
    orc = message.segment("ORC")
    obr = message.segment("OBR")
    number = (orc.value(2) if orc else "") or (obr.value(2) if obr else "")
    row.order_number = number[:100]


# Partners by MSH-3, as (read at, {MSH-4: partner}): the listener reads them for every
# message, an admin changes them rarely. Per process, for HL7_PARTNER_CACHE_SECONDS.
_partners: dict[str, tuple[float, dict[str, Partner]]] = {}


def _partners_of(application: str) -> dict[str, Partner]:
    ttl = settings.HL7_PARTNER_CACHE_SECONDS
    now = time.monotonic()
    cached = _partners.get(application)
    if cached is not None and now - cached[0] < ttl:
        return cached[1]
    partners = Partner.objects.filter(application=application, is_active=True).select_related(
        "facility"
    )
    by_facility = {p.application_facility: p for p in partners if p.facility.is_active}
    if ttl > 0:
        _partners[application] = (now, by_facility)
    return by_facility


def _sender(header: parse.Header) -> tuple[Facility, Partner | None]:
    """The facility a message is for: its partner's (by MSH-3 and MSH-4), or the default
    facility of settings for senders not registered."""
    by_facility = _partners_of(header.sending_application)
    partner = by_facility.get(header.sending_facility) or by_facility.get("")
    if partner is not None:
        return partner.facility, partner
    code = settings.HL7_DEFAULT_FACILITY
    facility = Facility.objects.filter(code=code, is_active=True).first() if code else None
    if facility is None:
        raise Hl7Error(
            f"Sending application {header.sending_application!r} "
            f"(facility {header.sending_facility!r}) is not a registered HL7 partner.",
            location="MSH-3",
            error_code=parse.UNKNOWN_KEY_IDENTIFIER,
            ack_code=ack.REJECT,
        )
    return facility, None


def _check(message: Message, facility: Facility) -> None:
    """What can be decided on receipt, cheaply: the envelope (2.9.2.2: type, version and
    processing id we do not support earn AR) and the content every handler needs."""
    header = message.header
    if not header.control_id:
        raise Hl7Error(
            "MSH-10 (message control id) is empty.",
            location="MSH-10",
            error_code=parse.REQUIRED_FIELD_MISSING,
            ack_code=ack.REJECT,
        )
    if header.version not in parse.SUPPORTED_VERSIONS:
        raise Hl7Error(
            f"Version {header.version or '(none)'} (MSH-12) is not supported; "
            f"we read {', '.join(sorted(parse.SUPPORTED_VERSIONS))}.",
            location="MSH-12",
            error_code=parse.UNSUPPORTED_VERSION_ID,
            ack_code=ack.REJECT,
        )
    processing = header.processing_id[:1].upper()
    if processing not in PROCESSING_IDS:
        raise Hl7Error(
            f"Processing id {header.processing_id or '(none)'} (MSH-11) is not P, T or D.",
            location="MSH-11",
            error_code=parse.UNSUPPORTED_PROCESSING_ID,
            ack_code=ack.REJECT,
        )
    handler = HANDLERS.get(header.message_type) or HANDLERS.get(header.message_code)
    if handler is None:
        known = sorted({key.split("^")[0] for key in HANDLERS})
        if header.message_code in known:
            raise Hl7Error(
                f"Event {header.trigger_event or '(none)'} of {header.message_code} "
                "(MSH-9.2) is not supported.",
                location="MSH-9.2",
                error_code=parse.UNSUPPORTED_EVENT_CODE,
                ack_code=ack.REJECT,
            )
        raise Hl7Error(
            f"Message type {header.message_type or '(none)'} (MSH-9) is not supported.",
            location="MSH-9",
            error_code=parse.UNSUPPORTED_MESSAGE_TYPE,
            ack_code=ack.REJECT,
        )
    for name in handler.required_segments:
        if message.segment(name) is None:
            raise Hl7Error(
                f"{header.message_type} needs a {name} segment.",
                location=name,
                error_code=parse.SEGMENT_SEQUENCE_ERROR,
                ack_code=ack.ERROR,
            )
    if handler.check is not None:
        handler.check(message, facility)


def copy_key(sending_application: str, sending_facility: str, control_id: str, text: str) -> bytes:
    """What makes two messages copies of one: the sender, the control id and the content
    but MSH-7 (a resend is often stamped anew). The same id with other content is a new
    message (senders reuse ids)."""
    msh, _, rest = text.partition("\r")
    fields = msh.split(msh[3:4] or "|")
    if len(fields) > 6:
        fields[6] = ""
    hashed = hashlib.sha256()
    for part in (sending_application, sending_facility, control_id):
        hashed.update(part.encode())
        hashed.update(b"\x00")  # never in the text: NUL is read as "?"
    hashed.update("|".join(fields).encode())
    hashed.update(b"\r")
    hashed.update(rest.encode())
    return hashed.digest()


def _store(row: InboundMessage) -> None:
    """Insert the row, committed (autocommit: one statement, one round trip on the
    listener's path). A message whose copy key an earlier row holds (the sender lost our
    ACK and sent it again) is stored as that row's duplicate: applied once, acknowledged
    each time. A copy still being stored on another connection is waited for by the
    unique index. A failed copy of a failed message is kept as another failed row."""
    if row.copy_key is None:
        plain_sql.insert(row)
        return
    for _ in range(3):
        if plain_sql.insert_new(row, "copy_key"):
            return
        with transaction.atomic():
            original_id = (
                InboundMessage.objects.filter(copy_key=row.copy_key)
                .values_list("id", flat=True)
                .first()
            )
            if original_id is None:  # deleted since: this copy is the first again
                continue
            row.copy_key = None
            if row.status == Status.RECEIVED:
                row.status = Status.DUPLICATE
                row.duplicate_of_id = original_id
                row.processed_at = timezone.now()
            plain_sql.insert(row)
            return
    raise RuntimeError(f"Could not store message {row.control_id!r}: its copy key keeps moving.")


# ---- processing ------------------------------------------------------------------------


def message_process(message_id: int) -> None:
    """Apply a received message, after every earlier waiting message of its patient.

    Idempotent: a message already applied (by another worker draining the same patient's
    queue) is left alone. Workers on one patient queue behind the row lock of the oldest
    waiting message, so a patient's messages apply in arrival order.
    """
    row = InboundMessage.objects.filter(pk=message_id).only("facility_id", "patient_key").first()
    if row is None:
        return
    for _ in range(1000):
        if not _process_next(row.facility_id, row.patient_key, message_id):
            return


class ProcessingDeferred(Exception):
    """An unexpected error applying a message: its task retries later (the row says why)."""


@dataclass(frozen=True)
class BatchOutcome:
    """What `messages_process` left to the one-message path: `behind` waits on another
    worker's transaction (its patient's earlier message, or itself, is locked), `deferred`
    failed unexpectedly or queues behind one that did."""

    applied: int
    behind: list[int]
    deferred: list[int]


class _Isolate(Exception):
    """A message of a batch run without savepoints failed: run the batch again with them."""


def messages_process(message_ids: list[int], *, drain: int = 0) -> BatchOutcome:
    """Apply messages the listener stored together in one transaction, as
    `message_process` would one after the other.

    One commit (one WAL flush) and one locking read for the batch instead of one each.
    The batch runs first without a savepoint per message (two statements of six for an
    update); should any message fail, all of it is rolled back and run again with them,
    so that the failure takes back only its own message's writes.
    Order within a patient's queue holds: a queue with an earlier message waiting outside
    the batch, or whose rows another worker holds (SKIP LOCKED: no waiting, so no
    deadlock between two batches), is left out, and so is the rest of a queue after a
    message that failed unexpectedly. The caller hands those to the one-message path.

    `drain`: also take up to that many more waiting messages, oldest first, never tried
    and not held by another worker. When the workers lag behind the listener, each task
    then applies a full batch (the listener's batches are as small as its traffic is
    spread out), and the tasks of what it took find nothing left to do.
    """
    try:
        return _batch_process(message_ids, drain, isolated=False)
    except _Isolate:
        return _batch_process(message_ids, drain, isolated=True)


def _batch_process(message_ids: list[int], drain: int, *, isolated: bool) -> BatchOutcome:
    with transaction.atomic():
        rows = _rows_locked(message_ids, drain)
        behind = _queues_behind(rows)
        wanted = set(message_ids)
        failed_queues: set[tuple[int | None, str]] = set()
        left: list[int] = []
        deferred: list[int] = []
        applied = 0
        # Without savepoints nothing is taken back alone, so the audit rows can wait for
        # the end of the batch and go in with one statement.
        # So can the outcomes of ADT messages (order messages read other messages'
        # status: those written before any of them is applied).
        outcomes: list[InboundMessage] | None = None if isolated else []
        # And the patients of its patient events are read together, and written at the
        # end (before any other kind of message, which may read them).
        patients = (
            None
            if isolated
            else adt.PatientBatch(
                [key for row in rows if _queue(row) not in behind and (key := _patient_key(row))]
            )
        )
        with contextlib.nullcontext() if isolated else audit.deferred():
            for row in rows:
                queue = _queue(row)
                if queue in behind:
                    if row.pk in wanted:  # one taken by draining has a task of its own
                        left.append(row.pk)
                elif queue in failed_queues:
                    deferred.append(row.pk)
                else:
                    event = row.message_type in adt.PATIENT_EVENTS
                    if patients is not None and not event:
                        patients.flush()
                    if outcomes and not row.message_type.startswith("ADT"):
                        _outcomes_write(outcomes)
                    batch = patients if event else None
                    _apply(row, isolated=isolated, outcomes=outcomes, patients=batch)
                    if row.status == Status.RECEIVED:  # unexpected error: its queue waits
                        failed_queues.add(queue)
                        deferred.append(row.pk)
                    else:
                        applied += 1
            if patients is not None:
                patients.flush()
            if outcomes:
                _outcomes_write(outcomes)
    missing = wanted - {row.pk for row in rows}
    if missing:  # done already, or locked by another worker: only the latter wait
        left += InboundMessage.objects.filter(pk__in=missing, status=Status.RECEIVED).values_list(
            "pk", flat=True
        )
    return BatchOutcome(applied=applied, behind=sorted(left), deferred=deferred)


def _rows_locked(message_ids: list[int], drain: int) -> list[InboundMessage]:
    """The batch's messages still waiting and up to `drain` more never tried, oldest
    first, locked (skipping those another worker holds), in id order, with their
    facility and partner."""
    if connection.vendor == "postgresql":
        with plain_sql.cursor() as statement:
            statement.execute(
                _rows_locked_sql(), {"ids": message_ids, "status": Status.RECEIVED, "drain": drain}
            )
            found = statement.fetchall()
        return _rows_with_senders(found)
    locking = InboundMessage.objects.select_for_update(of=("self",), skip_locked=True)
    rows = list(
        locking.filter(pk__in=message_ids, status=Status.RECEIVED)
        .select_related("facility", "partner")
        .order_by("id")
    )
    if drain:
        drained = list(
            locking.filter(status=Status.RECEIVED, attempts=0)
            .exclude(pk__in=[row.pk for row in rows])
            .order_by("id")
            .values_list("pk", flat=True)[:drain]
        )
        rows += InboundMessage.objects.filter(pk__in=drained).select_related("facility", "partner")
        rows.sort(key=lambda row: row.pk)
    return rows


# Not read by a worker: the columns of the message log (the decoded text, the ACK sent).
_UNREAD = ("text", "ack", "copy_key")


@functools.cache
def _rows_locked_sql() -> str:
    """One statement (the ORM's three cost more than running them): the ids locked
    first, without joins (with them, a planner whose statistics predate a burst joined
    and sorted every waiting message before taking the first `drain`: 8 ms, not 1), then
    their rows with facility and partner."""
    quote = connection.ops.quote_name
    table = quote(InboundMessage._meta.db_table)
    read = [f for f in InboundMessage._meta.concrete_fields if f.name not in _UNREAD]
    columns = [f"m.{quote(f.column)}" for f in read]
    columns += [f"f.{quote(f.column)}" for f in Facility._meta.concrete_fields]
    columns += [f"p.{quote(f.column)}" for f in Partner._meta.concrete_fields]
    return (
        f"WITH wanted AS (SELECT id FROM {table} WHERE id = ANY(%(ids)s::bigint[]) "  # noqa: S608
        "AND status = %(status)s ORDER BY id FOR UPDATE SKIP LOCKED), "
        f"drained AS (SELECT id FROM {table} WHERE status = %(status)s AND attempts = 0 "
        "AND id <> ALL(%(ids)s::bigint[]) ORDER BY id LIMIT %(drain)s FOR UPDATE SKIP LOCKED) "
        f"SELECT {', '.join(columns)} FROM {table} m "
        f"LEFT JOIN {quote(Facility._meta.db_table)} f ON f.id = m.facility_id "
        f"LEFT JOIN {quote(Partner._meta.db_table)} p ON p.id = m.partner_id "
        "WHERE m.id IN (SELECT id FROM wanted UNION ALL SELECT id FROM drained) ORDER BY m.id"
    )


def _rows_with_senders(found: list[tuple]) -> list[InboundMessage]:
    """Rows of `_rows_locked_sql` as messages, each facility and partner one instance."""
    message_width = len(InboundMessage._meta.concrete_fields) - len(_UNREAD)
    facility_width = len(Facility._meta.concrete_fields)
    facilities: dict[int, Facility] = {}
    partners: dict[int, Partner] = {}
    rows = []
    for found_row in found:
        row = plain_sql.instance_of(InboundMessage, found_row, deferred=_UNREAD)
        facility_row = found_row[message_width : message_width + facility_width]
        partner_row = found_row[message_width + facility_width :]
        if row.facility_id is not None:
            row.facility = facilities.get(row.facility_id) or facilities.setdefault(
                row.facility_id, plain_sql.instance_of(Facility, facility_row)
            )
        if row.partner_id is not None:
            row.partner = partners.get(row.partner_id) or partners.setdefault(
                row.partner_id, plain_sql.instance_of(Partner, partner_row)
            )
        rows.append(row)
    return rows


def _queue(row: InboundMessage) -> tuple[int | None, str]:
    """A message's queue: its patient's, or its own when it names none."""
    return (row.facility_id, row.patient_key or f"#{row.pk}")


def _patient_key(row: InboundMessage) -> selectors.PatientKey | None:
    """The key a patient event's PID names (from the stored queue key: a key read
    wrongly only misses, and the handler then looks its patient up itself)."""
    if row.message_type not in adt.PATIENT_EVENTS or not row.patient_key or row.facility is None:
        return None
    issuer, _, value = row.patient_key.rpartition("^")
    return (row.facility.pk, issuer or row.facility.mrn_issuer, value)


def _queues_behind(rows: list[InboundMessage]) -> set[tuple[int | None, str]]:
    """Queues of `rows` with an earlier message still waiting outside them."""
    first_here: dict[tuple[int | None, str], int] = {}
    for row in rows:
        if row.patient_key:
            first_here.setdefault((row.facility_id, row.patient_key), row.pk)
    if not first_here:
        return set()
    keys = sorted({key for _facility, key in first_here})
    before = max(first_here.values())
    earliest: Iterable[tuple[int | None, str, int]]
    if connection.vendor == "postgresql":  # built once, prepared: once per batch
        with plain_sql.cursor() as statement:
            statement.execute(_queues_behind_sql(), [Status.RECEIVED, keys, before])
            earliest = statement.fetchall()
    else:
        earliest = (
            InboundMessage.objects.filter(
                status=Status.RECEIVED, patient_key__in=keys, id__lt=before
            )
            .order_by()
            .values_list("facility_id", "patient_key")
            .annotate(first=Min("id"))
        )
    return {
        (facility_id, key)
        for facility_id, key, first in earliest
        if (facility_id, key) in first_here and first < first_here[(facility_id, key)]
    }


@functools.cache
def _queues_behind_sql() -> str:
    quote = connection.ops.quote_name
    return (
        "SELECT facility_id, patient_key, min(id) "  # noqa: S608
        f"FROM {quote(InboundMessage._meta.db_table)} WHERE status = %s "
        "AND patient_key = ANY(%s::text[]) AND id < %s GROUP BY facility_id, patient_key"
    )


def _process_next(facility_id: int | None, patient_key: str, message_id: int) -> bool:
    """Apply the oldest waiting message of the queue; False when `message_id` is done."""
    with transaction.atomic():
        queue = InboundMessage.objects.filter(status=Status.RECEIVED)
        if patient_key:
            queue = queue.filter(facility_id=facility_id, patient_key=patient_key)
        else:
            queue = queue.filter(pk=message_id)
        row = (
            queue.select_for_update(of=("self",))
            .select_related("facility", "partner")
            .order_by("id")
            .first()
        )
        if row is None:
            # Nothing waiting (or the row we waited on was done meanwhile): ours is done
            # unless it is still waiting, which another pass finds.
            return InboundMessage.objects.filter(pk=message_id, status=Status.RECEIVED).exists()
        _apply(row)
    if row.status == Status.RECEIVED:
        raise ProcessingDeferred(f"HL7 message {row.pk}: {row.error}")
    return row.pk != message_id


_OUTCOME_FIELDS = ("status", "attempts", "outcome", "error", "error_location", "processed_at")


def _outcomes_write(rows: list[InboundMessage]) -> None:
    """The outcome columns of messages applied, in one round trip; `rows` is emptied."""
    plain_sql.update_many(rows, _OUTCOME_FIELDS)
    rows.clear()


def _apply(
    row: InboundMessage,
    *,
    isolated: bool = True,
    outcomes: list[InboundMessage] | None = None,
    patients: adt.PatientBatch | None = None,
) -> None:
    """Apply one message inside the caller's transaction (in a savepoint of its own) and
    record the outcome. An unexpected error leaves it waiting, its attempts counted,
    until MAX_ATTEMPTS set it aside as failed.

    Not `isolated`: without the savepoint, and any error raises `_Isolate` (the caller's
    transaction must then be rolled back), but NothingToDo from a patient event (which
    raises it before writing anything). `outcomes`: the row goes there, for the caller to
    write, instead of being written now. `patients`: the batch's patients (patient events
    only)."""
    row.attempts += 1
    error_code = parse.APPLICATION_INTERNAL_ERROR
    message: Message | None = None
    handler: Handler | None = None
    context: Context | None = None
    try:
        message = parse.parse(bytes(row.raw))
        handler = HANDLERS.get(message.header.message_type) or HANDLERS[message.header.message_code]
        context = Context(
            facility=row.facility, partner=row.partner, message_id=row.pk, patients=patients
        )
        if isolated:
            with transaction.atomic():
                outcome = handler.apply(message, context)
        else:
            try:
                outcome = handler.apply(message, context)
            except NothingToDo as nothing:
                if patients is None:
                    raise _Isolate from nothing
                raise
            except Exception as error:
                raise _Isolate from error
    except _Isolate:
        raise
    except NothingToDo as nothing:
        row.status = Status.IGNORED
        row.outcome = str(nothing)[:500]
        row.error = row.error_location = ""
    except (Hl7Error, RisError) as error:
        row.status = Status.FAILED
        row.outcome = ""
        row.error = getattr(error, "reason", str(error))
        row.error_location = getattr(error, "location", "")
        error_code = getattr(error, "error_code", parse.APPLICATION_INTERNAL_ERROR)
        if handler is not None and handler.respond is not None and message and context:
            row.outcome = handler.respond(message, context, error)[:500]
    except Exception as error:
        logger.exception("HL7 message %s failed (attempt %s)", row.pk, row.attempts)
        row.error = f"Internal error (attempt {row.attempts}): {error}"
        row.error_location = ""
        if row.attempts < MAX_ATTEMPTS:
            plain_sql.update(row, ["attempts", "error", "error_location"])
            return
        row.status = Status.FAILED
    else:
        row.status = Status.PROCESSED
        row.outcome = outcome[:500]
        row.error = row.error_location = ""
    answers_itself = handler is None or handler.respond is not None
    answer = message.header.message_code in ("ACK", "ORR") if message else True
    if message and context and not answers_itself and not answer:
        sent = _application_ack(message, context, row, error_code)
        row.outcome = "; ".join(part for part in (row.outcome, sent) if part)[:500]
    row.processed_at = timezone.now()
    # A statement built once: the ORM's building of it cost more than running it, once
    # per message applied.
    if outcomes is not None:
        outcomes.append(row)
    else:
        plain_sql.update(row, _OUTCOME_FIELDS)


def _application_ack(
    message: Message, context: Context, row: InboundMessage, error_code: int
) -> str:
    """Enhanced mode's application acknowledgement (2.9.3), a message of its own once the
    message is applied, as MSH-16 asks (table 0155: AL always, SU on success, ER on
    error). Handlers with responses of their own (orders: ORR, ORI) write those instead."""
    failed = row.status == Status.FAILED
    wanted = message.header.application_ack_type
    if not (wanted == "AL" or (wanted == "SU" and not failed) or (wanted == "ER" and failed)):
        return ""
    partner = context.partner
    if partner is None or not partner.can_receive:
        sender = partner.name if partner else message.header.sending_application or "sender"
        return f"no application ACK sent: {sender} is not a partner we can send to"
    control_id = ack.control_id()
    text = ack.build(
        message.header,
        ack.ERROR if failed else ack.ACCEPT,
        reason=row.error if failed else "",
        location=row.error_location if failed else "",
        error_code=error_code if failed else 0,
        enhanced=False,
        message_control_id=control_id,
    )
    outbox.response_enqueue(
        facility=context.facility,
        partner=partner,
        message_type="ACK",
        control_id=control_id,
        text=text,
        reason=f"application ACK of HL7 message {row.pk} ({message.header.control_id})",
    )
    return f"ACK {control_id} queued for {partner.name}"


def messages_requeue(*, older_than_seconds: int = 60) -> int:
    """Queue again what waits too long (its task was lost with a worker or a broker
    restart): the safety net that makes "stored" mean "will be applied"."""
    from ris.hl7 import tasks

    cutoff = timezone.now() - timezone.timedelta(seconds=older_than_seconds)
    waiting = list(
        InboundMessage.objects.filter(status=Status.RECEIVED, received_at__lt=cutoff)
        .order_by("id")
        .values_list("id", flat=True)[:10000]
    )
    for message_id in waiting:
        tasks.process_message.delay(message_id)
    return len(waiting)


@transaction.atomic
def message_replay(*, message: InboundMessage) -> InboundMessage:
    """Apply a failed (or ignored) message again, now: after a fix of the data it
    depended on, e.g. the procedure its order named was added to the catalogue. The row
    is locked and its status checked under the lock, so a double-clicked replay applies
    once. The door audits who asked."""
    row = InboundMessage.objects.select_for_update().get(pk=message.pk)
    refusals = {
        Status.REJECTED: "A rejected message was never accepted: the sender must send it again.",
        Status.DUPLICATE: "A duplicate is applied through its original message.",
        Status.PROCESSED: "It was processed already: replaying it would apply it twice.",
        Status.RECEIVED: "It is waiting in its patient's queue and will be applied in turn.",
    }
    if row.status in refusals:
        raise RisError(refusals[Status(row.status)])
    _apply(row)
    return row
