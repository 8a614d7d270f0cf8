import os
import time
from io import StringIO

import pytest
from django.core.management import call_command

from pacs import storage
from pacs.models import Instance
from pacs.services import ingest
from tests.pacs.conftest import small_ct, stored_files

pytestmark = pytest.mark.django_db


def age(path, minutes: float) -> None:
    old = time.time() - minutes * 60
    os.utime(path, (old, old))


def run(*args: str) -> tuple[str, int]:
    out = StringIO()
    try:
        call_command("check_storage", *args, stdout=out)
    except SystemExit as exit_:
        return out.getvalue(), int(exit_.code)
    return out.getvalue(), 0


def test_a_consistent_archive_checks_clean(facility_a, study_spec):
    ingest(small_ct(study_spec, 1), facility=facility_a, door="dimse")
    output, status = run("--verify")
    assert status == 0
    assert "orphans: 0, temporary: 0, missing: 0, corrupt: 0" in output


def test_repair_removes_old_orphans_and_leftovers_but_not_fresh_ones(
    facility_a, study_spec, image_store
):
    ingest(small_ct(study_spec, 1), facility=facility_a, door="dimse")
    old_orphan = image_store / "aa" / "bb" / "old.dcm"
    fresh_orphan = image_store / "aa" / "bb" / "fresh.dcm"
    leftover = image_store / "aa" / "bb" / ".incoming-xyz"
    for path in (old_orphan, fresh_orphan, leftover):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    age(old_orphan, 60)
    age(leftover, 60)
    output, status = run("--repair")
    assert "orphan file: aa/bb/old.dcm" in output and "removed: 2" in output
    assert status == 0
    assert not old_orphan.exists() and not leftover.exists() and fresh_orphan.exists()
    assert len(stored_files(image_store)) == 2


def test_a_missing_or_corrupt_file_is_reported_and_fails(facility_a, study_spec, image_store):
    ingest(small_ct(study_spec, 1), facility=facility_a, door="dimse")
    ingest(small_ct(study_spec, 2), facility=facility_a, door="dimse")
    first, second = Instance.objects.order_by("id")
    image_store.remove(first.storage_key)
    image_store.overwrite(second.storage_key, b"tampered")
    output, status = run("--verify")
    assert status == 1
    assert f"missing file: {first.storage_key}" in output
    assert f"corrupt file: {second.storage_key}" in output
    assert storage.exists(second.storage_key)
