from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from pydicom.uid import ComputedRadiographyImageStorage, UltrasoundMultiFrameImageStorage

from accounts.models import Facility, User
from accounts.roles import Role
from billing import exports, selectors
from billing.models import Charge, Payer
from pacs.models import Instance, Study
from ris.models import Appointment, Order, Patient, Report, ReportTemplate

pytestmark = pytest.mark.django_db


def test_demo_data_loads_once_with_every_role_and_a_busy_first_day(
    tmp_path, settings, django_capture_on_commit_callbacks
):
    settings.STORAGES = {
        **settings.STORAGES,
        "images": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "images")},
        },
        "exports": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "exports")},
        },
    }
    credentials = tmp_path / "demo-credentials.txt"
    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("load_demo", credentials_file=str(credentials), stdout=out)
    assert set(Facility.objects.values_list("code", flat=True)) == {"NORTH", "SOUTH"}
    for facility in Facility.objects.all():
        roles = set(facility.memberships.values_list("role", flat=True))
        assert roles == set(Role.values)
        assert Patient.objects.filter(facility=facility).count() >= 8
        assert facility.rooms.exclude(ae_title="").count() >= 3
        assert facility.procedures.count() >= 8
        assert facility.fees.exists()
    today = timezone.localdate()
    assert Appointment.objects.filter(starts_at__date=today).exists()
    assert Appointment.objects.filter(starts_at__date__gt=today).exists()
    assert Order.objects.filter(status=Order.Status.COMPLETED).exists()  # reading list
    # Images for the completed orders, linked to them, in the archive.
    ct = Study.objects.filter(modalities_in_study="CT", order__isnull=False).first()
    assert ct is not None and ct.number_of_instances >= 100
    assert ct.patient == ct.order.patient
    assert Study.objects.filter(modalities_in_study="MR", order__isnull=False).exists()
    # Real images from pydicom-data: a chest CR and a 120-frame ultrasound cine.
    assert Instance.objects.filter(sop_class_uid=ComputedRadiographyImageStorage).exists()
    assert Instance.objects.filter(
        sop_class_uid=UltrasoundMultiFrameImageStorage, number_of_frames=120
    ).exists()
    assert Order.objects.filter(images_received_at__isnull=False).count() == Study.objects.count()
    # Reporting: templates, and one exam per facility read and signed final.
    for facility in Facility.objects.all():
        assert ReportTemplate.objects.filter(facility=facility).count() == 2
        (report,) = Report.objects.filter(facility=facility)
        assert report.status == Report.Status.FINAL and report.versions.count() == 1
    # Billing: the exams done today have their technical charges, the read one its
    # professional charge too, and ready charges of an insured patient make a valid 837P.
    assert Charge.objects.filter(component=Charge.Component.TECHNICAL).count() == (
        Order.objects.filter(status__in=["completed", "final"]).count()
    )
    assert Charge.objects.filter(component=Charge.Component.PROFESSIONAL).count() == 2
    biller = User.objects.get(username="north-billing")
    north = Facility.objects.get(code="NORTH")
    ready_payers = Charge.objects.filter(facility=north, status="ready").values("payer")
    payer = Payer.objects.filter(pk__in=ready_payers).first()
    result = exports.export_charges(
        user=biller,
        facility_id=north.pk,
        charges=selectors.charges(user=biller),
        fmt="837p",
        filters={},
        payer=payer,
    )
    assert result.export.row_count > 0 and result.problems == ()
    # Passwords are printed and work.
    lines = [line.split() for line in out.getvalue().splitlines() if line.startswith("  ")]
    assert len(lines) == User.objects.count()
    username, password = lines[1][:2]
    assert User.objects.get(username=username).check_password(password)
    assert oct(credentials.stat().st_mode & 0o777) == "0o600"

    again = StringIO()
    call_command("load_demo", credentials_file=str(credentials), stdout=again)
    assert "already loaded" in again.getvalue()
    assert password in again.getvalue()
    assert Facility.objects.count() == 2


def test_demo_password_draws_again_when_it_resembles_the_users_name(monkeypatch):
    from ris.management.commands import load_demo

    drawn = iter(["Operator", "x7Qk2mZp9Lw4Rt8N"])
    monkeypatch.setattr(load_demo.secrets, "token_urlsafe", lambda nbytes: next(drawn))
    assert load_demo.demo_password(username="admin", last_name="Operator") == "x7Qk2mZp9Lw4Rt8N"
