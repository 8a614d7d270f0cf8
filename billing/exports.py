"""Charge exports: CSV, XLSX and X12 837P claim batches.

An export that bills (`mark=True`) takes the charges that are ready, marks them exported
in the same transaction that records the export (one UPDATE: a concurrent export cannot
take them too), writes the file row by row to a temporary file (flat memory for 100,000
charges), keeps it in the "exports" storage with its SHA-256, so downloading it again
gives the same bytes. A report export (`mark=False`) takes any charges and marks nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from decimal import Decimal
from itertools import groupby
from operator import attrgetter
from pathlib import Path
from typing import IO, Any

from django.core.files import File
from django.core.files.storage import storages
from django.db import transaction
from django.db.models import QuerySet, Sum
from django.utils import timezone

from accounts import audit
from accounts.models import User
from accounts.spreadsheet import safe_cell
from billing import x12
from billing.models import BillingProfile, Charge, ChargeExport, Payer
from ris.models import PatientInsurance

COLUMNS = [
    "charge_id",
    "service_date",
    "facility",
    "accession_number",
    "mrn",
    "patient_name",
    "birth_date",
    "payer",
    "payer_id",
    "member_id",
    "procedure_code",
    "modifiers",
    "component",
    "units",
    "unit_price",
    "amount",
    "diagnosis_codes",
    "referring_name",
    "referring_npi",
    "rendering_name",
    "rendering_npi",
    "place_of_service",
    "status",
    "reverses_charge",
]
CHUNK = 2000


class ExportError(Exception):
    """An export that cannot be made; the message is safe to show."""


@dataclass(frozen=True)
class ExportResult:
    export: ChargeExport
    problems: tuple[str, ...]  # claims left out of an 837P, and why (they stay ready)


# The columns read for a row, in COLUMNS order but for the patient's name, which is
# made from its parts: plain values, no model instances (5x faster for 100,000 rows).
_ROW_FIELDS = (
    "pk",
    "service_date",
    "facility__code",
    "order__accession_number",
    "patient__mrn",
    "patient__family_name",
    "patient__given_name",
    "patient__middle_name",
    "patient__birth_date",
    "payer__name",
    "payer__payer_identifier",
    "member_id",
    "procedure_code",
    "modifiers",
    "component",
    "units",
    "unit_price",
    "amount",
    "diagnosis_codes",
    "referring_name",
    "referring_npi",
    "rendering_name",
    "rendering_npi",
    "place_of_service",
    "status",
    "adjusts_id",
)


def _rows(charges: QuerySet[Charge]) -> Iterator[list[Any]]:
    with closing(charges.values_list(*_ROW_FIELDS).iterator(chunk_size=CHUNK)) as stream:
        for row in stream:
            (pk, served, facility, accession, mrn, family, given, middle, born, *rest) = row
            given_names = " ".join(part for part in (given, middle) if part)
            name = f"{family}, {given_names}" if given_names else family  # display_name
            *values, adjusts = rest
            values[0] = values[0] or ""  # payer name: self-pay
            values[1] = values[1] or ""
            yield [pk, served, facility, accession, mrn, name, born, *values, adjusts or ""]


def write_csv(rows: Iterable[list[Any]], out: IO[bytes]) -> None:
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    writer = csv.writer(text)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if v is None else safe_cell(v) for v in row])
    text.detach()


def write_xlsx(rows: Iterable[list[Any]], path: Path) -> None:
    """A write-only workbook: rows go to disk as they come (openpyxl's streaming mode)."""
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("Charges")
    sheet.append(COLUMNS)
    for row in rows:
        sheet.append([_xlsx_value(v) for v in row])
    book.save(path)


def _xlsx_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    return safe_cell(value)


# ---- exporting ---------------------------------------------------------------------------


def _claim_candidates(charges: QuerySet[Charge], payer: Payer) -> QuerySet[Charge]:
    """What goes on claims to `payer`: its ready charges, not reversal lines (a void
    claim needs the payer's claim number, which an 835 brings: done by hand for now)."""
    return charges.filter(payer=payer, status=Charge.Status.READY, adjusts__isnull=True)


@transaction.atomic
def export_charges(
    *,
    user: User,
    facility_id: int,
    charges: QuerySet[Charge],
    fmt: str,
    filters: dict[str, Any],
    mark: bool = True,
    payer: Payer | None = None,
) -> ExportResult:
    """Export `charges` (already scoped to what the user may see) of one facility.

    A billing export first marks its charges exported (one UPDATE, which locks them: a
    concurrent export waits, then finds them taken), then streams them to the file; an
    837P claim that cannot be made is given back (ready again) before the commit."""
    charges = charges.filter(facility_id=facility_id)
    if fmt == ChargeExport.Format.X12_837P:
        if payer is None or payer.facility_id != facility_id:
            raise ExportError("Choose the payer the claims go to.")
        if not mark:
            raise ExportError("Claims are exported to be billed: they are marked exported.")
        profile = _billing_profile(facility_id)
        charges = _claim_candidates(charges, payer)
    elif mark:
        charges = charges.filter(status=Charge.Status.READY)
    export = ChargeExport.objects.create(
        facility_id=facility_id,
        format=fmt,
        filters=filters,
        payer=payer,
        marks_exported=mark,
        created_by=user,
    )
    if mark:
        Charge.objects.filter(
            pk__in=charges.order_by().values("pk"), status=Charge.Status.READY
        ).update(status=Charge.Status.EXPORTED, export=export, updated_at=timezone.now())
        selected = Charge.objects.filter(export=export)
    else:
        selected = charges
    problems: tuple[str, ...] = ()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"export.{fmt}"
        if fmt == ChargeExport.Format.CSV:
            with path.open("wb") as out:
                write_csv(_rows(selected.order_by("service_date", "id")), out)
        elif fmt == ChargeExport.Format.XLSX:
            write_xlsx(_rows(selected.order_by("service_date", "id")), path)
        else:
            with path.open("wb") as out:
                left_out, problems = write_837p(profile, payer, selected, out)
            if left_out:  # not billed after all: ready again, for the next export
                for start in range(0, len(left_out), 5000):
                    Charge.objects.filter(pk__in=left_out[start : start + 5000]).update(
                        status=Charge.Status.READY, export=None
                    )
        row_count = selected.count()
        if mark and row_count == 0:
            raise ExportError(
                "No claim could be made: " + "; ".join(problems[:5])
                if problems
                else "No charges ready to bill match: nothing was exported."
            )
        digest, size = _digest(path)
        key = f"{facility_id}/{timezone.now():%Y/%m}/{export.pk}-{digest[:12]}.{fmt}"
        with path.open("rb") as data:
            key = storages["exports"].save(key, File(data))
    total = selected.exclude(status=Charge.Status.VOID).aggregate(t=Sum("amount"))["t"] or 0
    export.row_count = row_count
    export.total = total
    export.sha256 = digest
    export.size = size
    export.storage_key = key
    export.save(update_fields=["row_count", "total", "sha256", "size", "storage_key"])
    audit.record(
        action=audit.Action.EXPORT,
        obj=export,
        user=user,
        door=audit.Door.PAGE,
        facility=export.facility,
        detail={
            "format": fmt,
            "rows": row_count,
            "filters": filters,
            "sha256": digest,
            "marked": mark,
            "left_out": len(problems),
        },
        # The file names these patients: who exported them is on each one's trail.
        patient_ids=list(selected.order_by().values_list("patient_id", flat=True).distinct()),
    )
    return ExportResult(export=export, problems=problems)


def _digest(path: Path) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            sha.update(block)
            size += len(block)
    return sha.hexdigest(), size


def open_export(export: ChargeExport) -> IO[bytes]:
    return storages["exports"].open(export.storage_key, "rb")


# ---- 837P ------------------------------------------------------------------------------------

# Errors of the envelope, not of one claim (x12 names where each error is).
BATCH_LEVEL = ("Submitter", "Billing provider", "Batch", "Payer", "Receiver")

RELATIONSHIP = {
    PatientInsurance.Relationship.SELF: "18",
    PatientInsurance.Relationship.SPOUSE: "01",
    PatientInsurance.Relationship.CHILD: "19",
    PatientInsurance.Relationship.OTHER: "G8",
}


def _billing_profile(facility_id: int) -> BillingProfile:
    profile = (
        BillingProfile.objects.select_for_update()
        .select_related("facility")
        .filter(facility_id=facility_id)
        .first()
    )
    if profile is None or not (profile.sender_id and profile.receiver_id):
        raise ExportError(
            "The facility's billing profile (tax id, address, clearinghouse ids) is not set: "
            "an administrator fills it in the admin site."
        )
    return profile


def write_837p(
    profile: BillingProfile, payer: Payer, charges: QuerySet[Charge], out: IO[bytes]
) -> tuple[list[int], tuple[str, ...]]:
    """Claims (one per exam) of `charges` to `out`, in interchanges of at most
    MAX_CLAIMS_PER_TRANSACTION claims each (one ISA per chunk, its own control number),
    so memory holds one chunk, never the whole file. Returns the charge ids left out
    (claims the standard cannot carry) and why."""
    facility = profile.facility
    billing = x12.Provider(
        last_name_or_org=facility.name,
        npi=facility.npi,
        tax_id=profile.tax_id,
        is_organization=True,
        taxonomy=profile.taxonomy,
        address=x12.Address(
            profile.address_line1,
            profile.address_line2,
            profile.city,
            profile.state,
            profile.postal_code,
        ),
    )
    now = timezone.now()
    coverage: dict[int, PatientInsurance] = {}
    for insurance in PatientInsurance.objects.filter(payer=payer).order_by("-rank", "-id"):
        coverage[insurance.patient_id] = insurance  # the lowest rank comes last and stays

    def batch(of: tuple[x12.Claim, ...], number: int) -> x12.Batch:
        return x12.Batch(
            sender_id=profile.sender_id,
            receiver_id=profile.receiver_id,
            interchange_number=number,
            group_number=number,
            created_at=now,
            submitter=x12.Provider(last_name_or_org=facility.name, is_organization=True),
            submitter_contact=profile.contact_name or facility.name,
            submitter_phone=profile.contact_phone,
            receiver_name=profile.receiver_name or "CLEARINGHOUSE",
            billing_provider=billing,
            payer_name=payer.name,
            payer_id=payer.payer_identifier,
            claims=of,
        )

    def flush(chunk: list[x12.Claim]) -> None:
        profile.interchange_counter += 1
        out.write(
            x12.claim_batch_837p(batch(tuple(chunk), profile.interchange_counter)).encode("ascii")
        )
        chunk.clear()

    left_out: list[int] = []
    problems: list[str] = []
    chunk: list[x12.Claim] = []
    rows = charges.select_related("patient", "order").order_by("order_id", "id")
    # Closed before an error leaves: on PostgreSQL the iterator is a server-side cursor,
    # which must be closed while the transaction (savepoint) that declared it still is.
    with closing(rows.iterator(chunk_size=CHUNK)) as stream:
        for _, group in groupby(stream, key=attrgetter("order_id")):
            lines = list(group)
            try:
                claim = _claim(lines, coverage.get(lines[0].patient_id))
                x12.claim_batch_837p(batch((claim,), 1))  # alone: a bad claim stays out
            except x12.X12Error as error:
                if str(error).startswith(BATCH_LEVEL):  # the profile's fault: none can go
                    raise ExportError(f"Billing profile or payer: {error}") from error
                problems.append(f"{lines[0].order.accession_number}: {error}")
                left_out.extend(charge.pk for charge in lines)
                continue
            chunk.append(claim)
            if len(chunk) >= x12.MAX_CLAIMS_PER_TRANSACTION:
                flush(chunk)
    if chunk:
        flush(chunk)
    profile.save(update_fields=["interchange_counter"])
    return left_out, tuple(problems)


def _claim(lines: list[Charge], insurance: PatientInsurance | None) -> x12.Claim:
    first = lines[0]
    patient = first.patient
    person = x12.Person(
        last_name=patient.family_name,
        first_name=patient.given_name,
        middle_name=patient.middle_name,
        birth_date=patient.birth_date,
        sex=patient.sex if patient.sex in ("M", "F") else "U",
        address=x12.Address(
            patient.address_street,
            patient.address_other,
            patient.address_city,
            patient.address_state,
            patient.address_postal_code,
        ),
    )
    relationship = (
        RELATIONSHIP.get(insurance.relationship_to_subscriber, "18") if insurance else "18"
    )
    subscriber, patient_loop = person, None
    if relationship != "18" and insurance is not None:
        last, _, given = insurance.subscriber_name.replace(",", "^").partition("^")
        subscriber = x12.Person(
            last_name=last.strip() or patient.family_name,
            first_name=given.strip(),
            middle_name="",
            birth_date=None,
            sex="U",
            address=None,
        )
        patient_loop = person
    codes = tuple(c.strip().upper() for c in first.diagnosis_codes.split(",") if c.strip())
    pointers = tuple(range(1, min(len(codes), 4) + 1))

    def provider(name: str, npi: str) -> x12.Provider | None:
        if not npi:
            return None
        last, _, given = name.rpartition(" ")
        return x12.Provider(
            last_name_or_org=last or given, first_name=given if last else "", npi=npi
        )

    rendering = next(
        (provider(c.rendering_name, c.rendering_npi) for c in lines if c.rendering_npi), None
    )
    return x12.Claim(
        claim_id=first.order.accession_number,
        subscriber=subscriber,
        member_id=first.member_id,
        group_number=insurance.group_number if insurance else "",
        relationship=relationship,
        patient=patient_loop,
        place_of_service=first.place_of_service,
        diagnosis_codes=codes,
        lines=tuple(
            x12.ServiceLine(
                procedure_code=c.procedure_code,
                modifiers=tuple(m for m in c.modifiers.split(",") if m),
                charge=c.amount if c.amount is not None else Decimal("0"),
                units=c.units,
                service_date=c.service_date,
                diagnosis_pointers=pointers,
                line_id=str(c.pk),
            )
            for c in lines
        ),
        referring=provider(first.referring_name, first.referring_npi),
        rendering=rendering,
    )
