"""A real DICOM listener on loopback, talked to by dcmtk's programs (Debian `dcmtk`)."""

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from accounts.models import Facility
from pacs.dicom import synthetic
from pacs.dimse import server
from pacs.models import DicomNode
from tests.factories import FacilityFactory


@dataclass
class Listener:
    port: int
    ae_title: str
    facility: Facility


def dcmtk(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a dcmtk program; TCP_NODELAY=1 makes it turn Nagle off like our listener does."""
    # Debian's dcmtk, not pynetdicom's same-named scripts in the venv.
    program = shutil.which(args[0], path="/usr/bin:/bin")
    if program is None:
        pytest.fail(f"{args[0]} not found (scripts/test.sh installs Debian's dcmtk)")
    return subprocess.run(
        [program, *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )


def scu(
    program: str,
    listener: "Listener",
    calling_ae: str,
    *options: str,
    files: tuple[str, ...] = (),
    timeout: float = 60,
) -> subprocess.CompletedProcess:
    """A dcmtk client calling our listener:
    `program -aet CALLING -aec US [options] host port [files]`."""
    return dcmtk(
        program,
        "-aet",
        calling_ae,
        "-aec",
        listener.ae_title,
        *options,
        "127.0.0.1",
        str(listener.port),
        *files,
        timeout=timeout,
    )


@pytest.fixture
def listener(transactional_db, image_store, settings) -> Iterator[Listener]:
    """Our DICOM listener on a free loopback port, storing on disk and (second run) in S3;
    STORESCU, FINDSCU, MOVESCU, GETSCU and ECHOSCU are known peers."""
    settings.DICOM_ALLOW_UNKNOWN_CALLERS = False
    settings.DICOM_REUSE_PORT = False
    facility = FacilityFactory(code="NORTH", name="North")
    for title in ("STORESCU", "FINDSCU", "MOVESCU", "GETSCU", "ECHOSCU"):
        DicomNode.objects.create(facility=facility, ae_title=title, host="127.0.0.1", port=1)
    running = server.start("127.0.0.1", 0)
    try:
        yield Listener(running.server_address[1], settings.DICOM_AE_TITLE, facility)
    finally:
        running.shutdown()


def write_series(folder: Path, slices: int) -> list[bytes]:
    spec = synthetic.StudySpec(patient=synthetic.PatientSpec(patient_id="P1"))
    files = list(synthetic.ct_series(spec, slices=slices, rows=64, columns=64))
    folder.mkdir()
    for number, data in enumerate(files):
        (folder / f"ct{number:03d}.dcm").write_bytes(data)
    return files
