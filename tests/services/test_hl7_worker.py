"""HL7 end to end through the real broker: python-hl7's MLLPClient -> our listener ->
PostgreSQL -> Redis -> two Celery worker processes -> PostgreSQL.

Eager mode hides what this checks: the listener's announcer publishing batches of ids,
the workers taking batches (and draining) with SKIP LOCKED while the other holds rows,
and each patient's messages still applied in the order they arrived.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from django.db import connection
from hl7.client import MLLPClient

from accounts.models import AuditEvent
from ris.hl7.listener import Background, Options
from ris.hl7.models import InboundMessage, Partner
from ris.models import Patient
from tests.factories import FacilityFactory
from tests.services.conftest import Worker, running_worker

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

PATIENTS = 6
UPDATES = 8  # A08s per patient, after its A01
APPLIED_TIMEOUT = 60


@pytest.fixture
def hl7_workers(celery_on_redis: Celery, redis_url: str, tmp_path: Path) -> Iterator[Worker]:
    """`celery worker --concurrency 2` (prefork) on the test's own database."""
    if connection.vendor != "postgresql":
        pytest.skip("a worker process cannot open the test's SQLite database")
    db = connection.settings_dict
    database_url = (
        f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    )
    log = tmp_path / "worker.log"
    with running_worker(
        celery_on_redis, redis_url, log, "--concurrency=2", env={"DATABASE_URL": database_url}
    ) as worker:
        yield worker


def _message(patient: int, number: int) -> str:
    """The A01 registering `patient` (number 0), then A08s renaming it Name1, Name2, ..."""
    event = "A01" if number == 0 else "A08"
    return "\r".join(
        [
            f"MSH|^~\\&|HIS|HOSP|RADPACS|NORTH|20261201083000||ADT^{event}^ADT_A01|"
            f"P{patient}-{number}|P|2.5.1",
            f"EVN|{event}|20261201083000",
            f"PID|1||W{patient:04d}^^^NORTH_MRN^MR||Name{number}^Anna||19800101|F",
            "PV1|1|O",
        ]
    )


def test_two_workers_apply_each_patients_messages_in_arrival_order(
    hl7_workers: Worker,
) -> None:
    facility = FacilityFactory(code="NORTH", name="North", mrn_issuer="NORTH_MRN")
    Partner.objects.create(facility=facility, name="HIS", application="HIS")
    listener = Background("127.0.0.1", 0, Options(idle_timeout=30))
    assert listener.listener.announcer is not None, "tasks should go through the broker"
    failures: list[BaseException] = []

    def sender(patients: range) -> None:
        """One connection: each patient's messages in order, interleaved across patients."""
        try:
            with MLLPClient(*listener.address) as client:
                for number in range(UPDATES + 1):
                    for patient in patients:
                        ack = client.send_message(_message(patient, number))
                        assert b"MSA|AA|" in ack, ack
        except BaseException as error:
            failures.append(error)

    halves = (range(0, PATIENTS // 2), range(PATIENTS // 2, PATIENTS))
    threads = [threading.Thread(target=sender, args=(half,)) for half in halves]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        listener.stop(grace=5)  # the announcer sends what it still holds
    assert not failures, failures[0]

    deadline = time.monotonic() + APPLIED_TIMEOUT
    while InboundMessage.objects.filter(status=InboundMessage.Status.RECEIVED).exists():
        if time.monotonic() > deadline:
            pytest.fail(f"messages still waiting; worker log:\n{hl7_workers.log_text()[-3000:]}")
        time.sleep(0.2)
    statuses = set(InboundMessage.objects.values_list("status", flat=True))
    assert statuses == {InboundMessage.Status.PROCESSED}, hl7_workers.log_text()[-3000:]
    assert InboundMessage.objects.count() == PATIENTS * (UPDATES + 1)
    names = dict(Patient.objects.filter(facility=facility).values_list("mrn", "family_name"))
    assert names == {f"W{patient:04d}": f"Name{UPDATES}" for patient in range(PATIENTS)}
    # Every rename in order, each audited once with what it changed (Name0 -> Name1 ...).
    for patient in Patient.objects.filter(facility=facility):
        renames = [
            event.detail["changed"]["family_name"]
            for event in AuditEvent.objects.filter(
                patient_id=patient.pk, action=AuditEvent.Action.UPDATE
            ).order_by("id")
        ]
        assert renames == [[f"Name{n}", f"Name{n + 1}"] for n in range(UPDATES)], renames
    assert "process_messages" in hl7_workers.log_text()
