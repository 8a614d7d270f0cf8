"""Load demo data once: two facilities, a user of every role, catalogue, rooms, patients,
orders and appointments for today and the coming days.

Passwords are random, written to var/demo-credentials.txt (readable by the owner
only) and printed each time the command runs, so `make run` always shows them.
"""

import datetime as dt
import secrets
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from accounts.models import Facility, User
from accounts.roles import Role
from accounts.services import Signature, user_create
from billing.models import BillingProfile, FeeScheduleEntry, Payer
from billing.x12 import npi_is_valid
from pacs.demo import load_demo_images
from pacs.models import DicomNode
from pacs.services import refresh_pending_studies
from ris import services
from ris.hl7.models import Partner
from ris.models import Order, Procedure, Room
from ris.reporting import services as reporting


def demo_npi(first_nine: int) -> str:
    """A made-up NPI that passes the check digit (claims refuse any other)."""
    return next(f"{first_nine}{d}" for d in range(10) if npi_is_valid(f"{first_nine}{d}"))


DEMO_TEMPLATES = [
    (
        "CT chest",
        "CT",
        [
            {"title": "Clinical information", "text": "[[Indication]]"},
            {
                "title": "Technique",
                "text": "CT of the chest [[Contrast: without | with]] contrast.",
            },
            {"title": "Comparison", "text": "[[Comparison: None | Prior CT]]"},
            {
                "title": "Findings",
                "text": "Lungs: [[Lungs: clear | nodule | consolidation | emphysema]].\n"
                "Pleura: [[Pleura: no effusion | effusion]].\n"
                "Heart and mediastinum: [[Mediastinum: normal | enlarged nodes]].",
            },
            {"title": "Impression", "text": "[[Impression]]"},
        ],
    ),
    (
        "General",
        "",
        [
            {"title": "Clinical information", "text": ""},
            {"title": "Technique", "text": ""},
            {"title": "Comparison", "text": "None."},
            {"title": "Findings", "text": ""},
            {"title": "Impression", "text": ""},
        ],
    ),
]

FACILITIES = [
    ("NORTH", "North Imaging Center", "NORTH_MRN"),
    ("SOUTH", "South Radiology Clinic", "SOUTH_MRN"),
]

# code, name, modality, body part, minutes, contrast, preparation, global, professional
CATALOGUE = [
    ("70450", "CT head without contrast", "CT", "HEAD", 15, False, "", "420.00", "95.00"),
    (
        "71260",
        "CT chest with contrast",
        "CT",
        "CHEST",
        20,
        True,
        "Nothing to eat 4 hours before. Bring recent creatinine result.",
        "610.00",
        "120.00",
    ),
    (
        "74177",
        "CT abdomen and pelvis with contrast",
        "CT",
        "ABDOMEN",
        25,
        True,
        "Nothing to eat 4 hours before; drink oral contrast as instructed.",
        "780.00",
        "150.00",
    ),
    (
        "70553",
        "MRI brain with and without contrast",
        "MR",
        "HEAD",
        45,
        True,
        "Remove all metal. Tell us about implants or pacemakers.",
        "1450.00",
        "210.00",
    ),
    (
        "73721",
        "MRI knee without contrast",
        "MR",
        "KNEE",
        30,
        False,
        "Remove all metal.",
        "980.00",
        "140.00",
    ),
    ("71046", "X-ray chest, 2 views", "DX", "CHEST", 10, False, "", "95.00", "25.00"),
    ("73130", "X-ray hand, 3 views", "DX", "HAND", 10, False, "", "80.00", "20.00"),
    (
        "76700",
        "Ultrasound abdomen, complete",
        "US",
        "ABDOMEN",
        30,
        False,
        "Nothing to eat or drink 8 hours before.",
        "310.00",
        "75.00",
    ),
    (
        "77067",
        "Screening mammography, bilateral",
        "MG",
        "BREAST",
        20,
        False,
        "No deodorant or powder on the day.",
        "240.00",
        "60.00",
    ),
]

ROOMS = {
    "NORTH": [("CT 1", "CT"), ("MR 1", "MR"), ("X-ray 1", "DX"), ("Ultrasound 1", "US")],
    "SOUTH": [("CT", "CT"), ("X-ray", "DX"), ("Mammography", "MG")],
}

PATIENTS = [
    ("Garcia", "Maria", "F", "1968-04-12"),
    ("Smith", "John", "M", "1975-09-30"),
    ("Nguyen", "Thi Lan", "F", "1982-01-05"),
    ("Müller", "Jürgen", "M", "1950-11-23"),
    ("O'Brien", "Siobhan", "F", "1991-06-17"),
    ("Kowalski", "Piotr", "M", "1963-03-08"),
    ("Okafor", "Chiamaka", "F", "1987-12-01"),
    ("Haddad", "Karim", "M", "1979-07-19"),
    ("Rossi", "Giulia", "F", "2001-02-14"),
    ("Tanaka", "Hiroshi", "M", "1958-10-02"),
    ("Johansson", "Erik", "M", "1945-05-25"),
    ("Dubois", "Claire", "F", "1995-08-09"),
]

ROLE_USERS = [
    (Role.FRONT_DESK, "frontdesk", "Fran", "Desk", ""),
    (Role.TECHNOLOGIST, "tech", "Terry", "Tech", "RT(R)"),
    (Role.RADIOLOGIST, "radiologist", "Rita", "Reader", "MD"),
    (Role.REFERRING_PHYSICIAN, "referrer", "Ray", "Ferris", "MD"),
    (Role.BILLING, "billing", "Bill", "Ing", ""),
    (Role.ADMIN, "admin", "Ada", "Min", ""),
]


def demo_password(**attributes: str) -> str:
    """A random password the validators accept for a user with these attributes.

    A random string can by chance share enough letters with a name to trip the
    similarity check, so draw again until one passes.
    """
    while True:
        candidate = secrets.token_urlsafe(12)
        try:
            validate_password(candidate, User(**attributes))
        except ValidationError:
            continue
        return candidate


class Command(BaseCommand):
    help = "Load demo facilities, users, catalogue, patients, orders and appointments (once)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--credentials-file",
            default=str(settings.VAR_DIR / "demo-credentials.txt"),
            help="Where the generated demo passwords are kept and read back from.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        credentials_file = Path(options["credentials_file"])
        if Facility.objects.filter(code__in=[code for code, _, _ in FACILITIES]).exists():
            self.stdout.write("Demo data is already loaded.")
        else:
            credentials = self.load()
            completed = Order.objects.filter(
                facility__code__in=[code for code, _, _ in FACILITIES],
                status=Order.Status.COMPLETED,
            ).select_related("patient", "procedure", "facility")
            count = load_demo_images(list(completed))
            self.stdout.write(f"Demo images: {count} instances for {completed.count()} orders.")
            refresh_pending_studies()  # linked to their orders now, not after a commit
            reported = self.load_reporting()
            self.stdout.write(f"Demo reports: {reported} final, with report templates.")
            credentials_file.parent.mkdir(parents=True, exist_ok=True)
            credentials_file.touch(mode=0o600)
            credentials_file.write_text(
                "".join(
                    f"{username}\t{password}\t{what}\n" for username, password, what in credentials
                )
            )
            self.stdout.write(self.style.SUCCESS("Demo data loaded."))
        if credentials_file.exists():
            self.stdout.write(f"Demo users (from {credentials_file}):")
            for line in credentials_file.read_text().splitlines():
                username, password, what = line.split("\t")
                self.stdout.write(f"  {username:<22} {password:<16} {what}")

    @transaction.atomic
    def load(self) -> list[tuple[str, str, str]]:
        credentials: list[tuple[str, str, str]] = []

        superuser_password = demo_password(
            username="platform-admin", first_name="Platform", last_name="Operator"
        )
        user_create(
            username="platform-admin",
            password=superuser_password,
            first_name="Platform",
            last_name="Operator",
            is_superuser=True,
        )
        credentials.append(
            ("platform-admin", superuser_password, "Django admin site (no facility)")
        )

        today = timezone.localdate()
        for index, (code, name, issuer) in enumerate(FACILITIES):
            facility = Facility.objects.create(
                name=name, code=code, mrn_issuer=issuer, npi=demo_npi(199000000 + index)
            )
            BillingProfile.objects.create(
                facility=facility,
                tax_id=f"99123456{index}",
                address_line1=f"{100 + index} Main Street",
                city="Springfield",
                state="IL",
                postal_code="627010001",
                contact_name="Billing office",
                contact_phone="2175550100",
                sender_id=f"{code}BILL",
                receiver_id="DEMOCLEARING",
                receiver_name="Demo clearinghouse",
            )
            users = {}
            for role, suffix, first, last, title in ROLE_USERS:
                username = f"{code.lower()}-{suffix}"
                last_name = f"{last} ({code.title()})"
                secret = demo_password(username=username, first_name=first, last_name=last_name)
                users[role] = user_create(
                    username=username,
                    password=secret,
                    first_name=first,
                    last_name=last_name,
                    title=title,
                    npi=demo_npi(100000000 + index * 100 + len(users)) if title == "MD" else "",
                    roles=[(facility, role)],
                )
                credentials.append((username, secret, f"{Role(role).label} at {name}"))
            procedures = self.load_catalogue(facility)
            rooms = self.load_rooms(facility, procedures)
            self.load_patients_and_orders(facility, procedures, rooms, users, today, index)
            DicomNode.objects.create(
                facility=facility,
                ae_title=f"{code}_WS1",
                host="127.0.0.1",
                port=11113 + index,
                description="Reading workstation",
            )
            # The hospital's HIS: its messages say MSH-3 "HIS", MSH-4 the facility code.
            Partner.objects.create(
                facility=facility, name=f"{name} HIS", application="HIS", application_facility=code
            )
        return credentials

    @transaction.atomic
    def load_reporting(self) -> int:
        """Report templates for each demo facility, and one exam read and signed final,
        so the referring physician has a result to open and the radiologist a history."""
        reported = 0
        for facility in Facility.objects.filter(code__in=[code for code, _, _ in FACILITIES]):
            radiologist = User.objects.filter(
                memberships__facility=facility, memberships__role=Role.RADIOLOGIST
            ).first()
            if radiologist is None:
                continue
            for name, modality, sections in DEMO_TEMPLATES:
                reporting.template_save(
                    facility_id=facility.pk,
                    name=name,
                    modality=modality,
                    sections=sections,
                    actor=radiologist,
                )
            order = (
                Order.objects.filter(facility=facility, studies__isnull=False)
                .filter(status=Order.Status.COMPLETED)
                .order_by("id")
                .first()
            )
            if order is None:
                continue
            report = reporting.report_start(order=order, actor=radiologist)
            reporting.report_draft_save(
                report=report,
                sections=[
                    {"title": "Clinical information", "text": order.reason},
                    {"title": "Findings", "text": "No acute abnormality."},
                    {"title": "Impression", "text": "Normal study."},
                ],
                actor=radiologist,
            )
            # The demo signs in the radiologist's name: a trusted loader, not a door.
            signature = Signature(user=radiologist, confirmed_at=timezone.now())
            reporting.report_sign(
                report=report, status="final", actor=radiologist, signature=signature
            )
            reported += 1
        return reported

    def load_catalogue(self, facility: Facility) -> dict[str, Procedure]:
        payers = [
            Payer.objects.create(facility=facility, name="Medicare", payer_identifier="00430"),
            Payer.objects.create(facility=facility, name="Acme Health", payer_identifier="ACME1"),
        ]
        procedures = {}
        effective_from = dt.date(timezone.localdate().year, 1, 1)
        for code, name, modality, body_part, minutes, contrast, prep, glob, prof in CATALOGUE:
            procedures[code] = Procedure.objects.create(
                facility=facility,
                code=code,
                name=name,
                modality=modality,
                body_part=body_part,
                duration_minutes=minutes,
                uses_contrast=contrast,
                preparation=prep,
            )
            global_price, professional = Decimal(glob), Decimal(prof)
            for payer, factor in [
                (None, Decimal("1.00")),
                *zip(payers, [Decimal("0.80"), Decimal("0.95")], strict=True),
            ]:
                FeeScheduleEntry.objects.create(
                    facility=facility,
                    payer=payer,
                    procedure_code=code,
                    global_price=(global_price * factor).quantize(Decimal("0.01")),
                    professional_price=(professional * factor).quantize(Decimal("0.01")),
                    technical_price=((global_price - professional) * factor).quantize(
                        Decimal("0.01")
                    ),
                    effective_from=effective_from,
                )
        return procedures

    def load_rooms(self, facility: Facility, procedures: dict[str, Procedure]) -> list[Room]:
        rooms = []
        for number, (name, modality) in enumerate(ROOMS[facility.code], start=1):
            room = Room.objects.create(
                facility=facility,
                name=name,
                modality=modality,
                ae_title=f"{facility.code}_{modality}{number}",
            )
            room.procedures.set([p for p in procedures.values() if p.modality == modality])
            rooms.append(room)
        return rooms

    def load_patients_and_orders(
        self,
        facility: Facility,
        procedures: dict[str, Procedure],
        rooms: list[Room],
        users: dict[str, User],
        today: dt.date,
        facility_index: int,
    ) -> None:
        referrer = users[Role.REFERRING_PHYSICIAN]
        clerk = users[Role.FRONT_DESK]
        next_free: dict[tuple[int, dt.date], dt.datetime] = {}
        patients = PATIENTS[facility_index::2] + PATIENTS[1 - facility_index :: 3]
        payers = list(Payer.objects.filter(facility=facility).order_by("name"))
        for number, (family, given, sex, birth) in enumerate(patients, start=1):
            # Some patients come with insurance, some with an ID from the hospital next door.
            insurance: list[dict[str, Any]] = []
            if number % 3:
                payer = payers[number % len(payers)]
                insurance.append({"payer": payer, "member_id": f"{facility.code}{number:06d}"})
            identifiers: list[dict[str, Any]] = []
            if number % 4 == 1:
                identifiers.append(
                    {"value": f"H{number:06d}", "issuer": "CITY_HOSPITAL", "type_code": "PT"}
                )
            patient = services.patient_create(
                facility=facility,
                mrn=f"{facility_index + 1}{number:05d}",
                family_name=family,
                given_name=given,
                sex=sex,
                birth_date=dt.date.fromisoformat(birth),
                address_street=f"{number} Elm Street",
                address_city="Springfield",
                address_state="IL",
                address_postal_code="62701",
                mobile_phone=f"+1 555 01{number:02d}",
                identifiers=identifiers,
                insurance=insurance,
                actor=clerk,
            )
            room = rooms[number % len(rooms)]
            candidates = [p for p in procedures.values() if p.modality == room.modality]
            procedure = candidates[number % len(candidates)]
            order = services.order_create(
                patient=patient,
                procedure=procedure,
                priority=Order.Priority.STAT if number % 7 == 0 else Order.Priority.ROUTINE,
                referring_physician=referrer,
                reason="Demo order",
                diagnosis_codes="R07.9" if procedure.body_part == "CHEST" else "R69",
                actor=clerk,
            )
            # One round of rooms per day: today, tomorrow, the day after.
            day = today + dt.timedelta(days=((number - 1) // len(rooms)) % 3)
            start = next_free.get((room.pk, day)) or timezone.make_aware(
                dt.datetime.combine(day, dt.time(8, 0))
            )
            appointment = services.appointment_book(
                order=order, room=room, starts_at=start, actor=clerk
            )
            next_free[(room.pk, day)] = appointment.ends_at + dt.timedelta(minutes=15)
            if day == today:
                # Done at the modality this morning: images in, ready for the reading list.
                for status in (
                    Order.Status.ARRIVED,
                    Order.Status.IN_PROGRESS,
                    Order.Status.COMPLETED,
                ):
                    services.order_status_set(order=order, status=status, actor=clerk)
