from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from pydicom.data import get_testdata_file

from pacs.models import Instance
from tests.pacs.conftest import small_ct

pytestmark = pytest.mark.django_db


def run(folder: Path, *args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("import_folder", str(folder), "--facility", "NORTH", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def legacy(tmp_path, study_spec) -> Path:
    folder = tmp_path / "legacy"
    (folder / "a").mkdir(parents=True)
    for number in range(1, 4):
        (folder / "a" / f"{number}.dcm").write_bytes(small_ct(study_spec, number))
    (folder / "README.txt").write_text("not dicom")
    (folder / "mr.dcm").write_bytes(Path(get_testdata_file("MR_small.dcm")).read_bytes())
    return folder


def test_a_folder_is_imported_with_progress_and_a_log(facility_a, legacy):
    out, err = run(legacy)
    assert "imported 4, refused 1" in out
    assert "5/5 files" in err
    assert Instance.objects.count() == 4
    log = (legacy.parent / "legacy.import.log").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in log) == ["refused"] + ["stored"] * 4
    assert any("README.txt\tnot a DICOM Part 10 file" in line for line in log)


def test_a_second_run_resumes_where_the_first_stopped(facility_a, legacy, study_spec):
    run(legacy)
    (legacy / "a" / "4.dcm").write_bytes(small_ct(study_spec, 4))
    out, _ = run(legacy)
    assert "1 files to import" in out and "imported 1, refused 0" in out
    assert Instance.objects.count() == 5


def test_an_unknown_facility_is_an_error(legacy, db):
    with pytest.raises(CommandError, match="no active facility"):
        run(legacy)


def test_an_empty_file_is_refused_and_the_rest_imported(facility_a, legacy):
    (legacy / "empty.dcm").write_bytes(b"")
    out, _ = run(legacy)
    assert "imported 4, refused 2" in out
    log = (legacy.parent / "legacy.import.log").read_text()
    assert "empty.dcm\tnot a DICOM Part 10 file" in log
