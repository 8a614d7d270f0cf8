"""kill -9 the DICOM listener in the middle of a push: nothing acknowledged is lost."""

import os
import signal
import socket
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

from pacs.dicom import synthetic
from pacs.models import DicomNode, Instance
from tests.factories import FacilityFactory
from tests.interop.conftest import dcmtk
from tests.network import free_port

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="a second process shares the database"
    ),
]
ROOT = Path(__file__).resolve().parents[2]
INSTANCES = 500


def start_listener(port: int, images: Path, log: Path, *options: str) -> subprocess.Popen:
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "IMAGE_STORAGE_DIR": str(images),
        "SECRET_KEY": "recovery-test-" + "x" * 40,
        "DICOM_REUSE_PORT": "0",
        "REDIS_URL": "",
        "LOG_LEVEL": "INFO",
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "dicom_server", "--port", str(port), *options],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process
        assert process.poll() is None, log.read_text()
        time.sleep(0.1)
    pytest.fail(f"listener did not start:\n{log.read_text()}")


def storescu(port: int, files: list[Path]) -> subprocess.Popen:
    return subprocess.Popen(
        [
            "/usr/bin/storescu",
            "-v",
            "-aet",
            "STORESCU",
            "-aec",
            "RADPACS",
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"TCP_NODELAY": "1"},
    )


@pytest.mark.django_db(transaction=True)
def test_killing_the_listener_mid_push_loses_nothing_acknowledged(tmp_path, settings):
    facility = FacilityFactory(code="NORTH")
    DicomNode.objects.create(facility=facility, ae_title="STORESCU", host="127.0.0.1", port=1)
    folder = tmp_path / "push"
    folder.mkdir()
    spec = synthetic.StudySpec()
    files = []
    for number, data in enumerate(synthetic.ct_series(spec, slices=INSTANCES, rows=32, columns=32)):
        path = folder / f"{number:04d}.dcm"
        path.write_bytes(data)
        files.append(path)
    images = tmp_path / "images"
    settings.STORAGES = {
        **settings.STORAGES,
        "images": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(images)},
        },
    }
    port = free_port()
    listener = start_listener(port, images, tmp_path / "listener1.log")
    push = storescu(port, files)
    deadline = time.monotonic() + 60
    while Instance.objects.count() < INSTANCES // 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    listener.send_signal(signal.SIGKILL)
    listener.wait(10)
    output, _ = push.communicate(timeout=60)
    acknowledged = output.count("Received Store Response (Success)")
    assert 0 < acknowledged < INSTANCES, output[-2000:]

    # Every instance that got a success status is in the index, with its file.
    stored = set(Instance.objects.values_list("instance_number", flat=True))
    assert set(range(1, acknowledged + 1)) <= stored

    listener = start_listener(port, images, tmp_path / "listener2.log")
    try:
        again = dcmtk(
            "storescu",
            "-aet",
            "STORESCU",
            "-aec",
            "RADPACS",
            "127.0.0.1",
            str(port),
            *map(str, files),
            timeout=300,
        )
        assert again.returncode == 0, again.stderr[-2000:]
    finally:
        listener.send_signal(signal.SIGTERM)
        listener.wait(30)
    assert Instance.objects.count() == INSTANCES
    assert Instance.objects.values("sop_instance_uid").distinct().count() == INSTANCES

    out = StringIO()
    call_command("check_storage", "--repair", "--grace-minutes", "0", stdout=out)
    out = StringIO()
    call_command("check_storage", "--verify", stdout=out)
    assert (
        f"files referenced: {INSTANCES}, orphans: 0, temporary: 0, missing: 0, corrupt: 0"
        in out.getvalue()
    )
