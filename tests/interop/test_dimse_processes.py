"""`dicom_server --processes N`: forked listeners sharing one socket, balanced by load."""

import re
import signal
import socket
import subprocess
import time

import pytest
from django.db import connection

from pacs.dicom import synthetic
from pacs.models import DicomNode, Instance
from tests.factories import FacilityFactory
from tests.interop.test_dimse_recovery import start_listener, storescu
from tests.network import free_port

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="the listener processes share the database"
    ),
]


def _children(pid: int) -> list[str]:
    return subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()


def _accepting(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.django_db(transaction=True)
def test_associations_spread_over_the_processes_and_all_go_with_the_parent(tmp_path):
    facility = FacilityFactory(code="NORTH")
    DicomNode.objects.create(facility=facility, ae_title="STORESCU", host="127.0.0.1", port=1)
    pushes = []
    for push in range(4):
        folder = tmp_path / f"push{push}"
        folder.mkdir()
        spec = synthetic.StudySpec()
        for number, data in enumerate(synthetic.ct_series(spec, slices=40, rows=64, columns=64)):
            (folder / f"{number:03d}.dcm").write_bytes(data)
        pushes.append(sorted(folder.iterdir()))
    port = free_port()
    log = tmp_path / "listener.log"
    listener = start_listener(port, tmp_path / "images", log, "--processes", "2")
    try:
        # Both processes accepting before the pushes start (the port answers as soon as
        # the parent listens, before it forks and both start their accept loops).
        deadline = time.monotonic() + 30
        while not _children(listener.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        senders = [storescu(port, files) for files in pushes]
        for sender in senders:
            output, _ = sender.communicate(timeout=120)
            assert sender.returncode == 0, output[-2000:]
        assert Instance.objects.count() == 160
        accepted_by = re.findall(r"accepted by process (\d+)", log.read_text())
        assert len(accepted_by) == 4
        assert len(set(accepted_by)) == 2  # not all four on one process (one GIL)
        # kill -9 of the parent takes the forked listener with it: nobody keeps the port.
        listener.send_signal(signal.SIGKILL)
        listener.wait(10)
        deadline = time.monotonic() + 10
        while _accepting(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _accepting(port)
    finally:
        if listener.poll() is None:
            listener.send_signal(signal.SIGTERM)
            listener.wait(30)


@pytest.mark.django_db(transaction=True)
def test_sigterm_stops_every_process(tmp_path):
    port = free_port()
    listener = start_listener(
        port, tmp_path / "images", tmp_path / "listener.log", "--processes", "3"
    )
    # The port answers as soon as the parent listens, a moment before it forks.
    deadline = time.monotonic() + 30
    while len(children := _children(listener.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(children) == 2
    listener.send_signal(signal.SIGTERM)
    assert listener.wait(30) == 0
    assert not _accepting(port)
    for pid in children:
        assert subprocess.run(["kill", "-0", pid], capture_output=True).returncode != 0
