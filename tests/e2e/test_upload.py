"""Uploading DICOM files from the browser, one progress bar per file."""

import pytest
from django.db import connection
from pydicom.data import get_testdata_file

from accounts.roles import Role
from pacs.models import Instance
from tests.e2e.conftest import screenshot
from tests.e2e.test_layout import log_in
from tests.factories import member

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    # The page uploads three files at once; SQLite's shared in-memory test database
    # refuses concurrent writers outright.
    pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers"),
]


def test_a_technologist_uploads_files_and_sees_each_result(
    page_factory, live_server, facility_a, tmp_path, settings
):
    settings.STORAGES = {
        **settings.STORAGES,
        "images": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "images")},
        },
    }
    member(facility_a, Role.TECHNOLOGIST, username="tech")
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    page = page_factory(1280, 900)
    log_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/pacs/upload/")
    page.set_input_files(
        "#files", [get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm"), str(junk)]
    )
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("text=Done: 2 stored, 1 refused.")
    results = page.locator(".upload-result").all_inner_texts()
    assert sorted(results) == sorted(
        ["stored", "stored", "not a DICOM Part 10 file (no 'DICM' preamble)"]
    )
    assert page.locator(".upload.ok progress[value='100']").count() == 2
    screenshot(page, "upload")
    assert Instance.objects.count() == 2
    assert page.console_errors == [
        "Failed to load resource: the server responded with a status of 400 (Bad Request)"
    ]  # type: ignore[attr-defined]
