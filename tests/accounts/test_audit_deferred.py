"""Audit rows recorded together: one statement at the end, nothing left by an error."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts import audit
from accounts.models import AuditEvent
from tests.factories import FacilityFactory

pytestmark = pytest.mark.django_db


def test_rows_recorded_in_a_deferred_block_go_in_together_at_its_end():
    facility = FacilityFactory()
    with CaptureQueriesContext(connection) as queries, audit.deferred():
        for n in range(5):
            audit.record(
                action=audit.Action.UPDATE,
                door=audit.Door.HL7,
                actor="hl7",
                object_type="patient",
                object_id=str(n),
                facility=facility,
            )
        assert not AuditEvent.objects.exists()
    inserts = [q for q in queries.captured_queries if "INSERT" in q["sql"]]
    assert len(inserts) == 1
    assert sorted(AuditEvent.objects.values_list("object_id", flat=True)) == list("01234")


def test_an_error_in_a_deferred_block_records_nothing():
    facility = FacilityFactory()
    with pytest.raises(RuntimeError), audit.deferred():
        audit.record(action=audit.Action.UPDATE, door=audit.Door.HL7, facility=facility)
        raise RuntimeError("the transaction is rolled back")
    assert not AuditEvent.objects.exists()
    audit.record(action=audit.Action.UPDATE, door=audit.Door.HL7, facility=facility)
    assert AuditEvent.objects.count() == 1  # outside the block: at once
