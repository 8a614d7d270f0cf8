"""`dicom_server --processes N`: how one process decides to leave a connection to a
sibling (the whole command is tested with dcmtk in test_dimse_processes.py)."""

import socket
import threading
import time
import types

import pytest

from pacs.dimse import server
from pacs.models import DicomNode
from tests.factories import FacilityFactory
from tests.interop.conftest import dcmtk


def _wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def shared_listener(transactional_db, settings, monkeypatch):
    """One process's accept loop on a shared socket, its deferral sleeps recorded."""
    settings.DICOM_ALLOW_UNKNOWN_CALLERS = False
    facility = FacilityFactory(code="NORTH")
    DicomNode.objects.create(facility=facility, ae_title="ECHOSCU", host="127.0.0.1", port=1)
    deferrals: list[float] = []
    monkeypatch.setattr(server, "time", types.SimpleNamespace(sleep=deferrals.append))
    listening = server.listening_socket("127.0.0.1", 0)
    running = server.start("127.0.0.1", 0, listening)
    yield running.server_address[1], deferrals
    running.shutdown()
    running.server_close()


def test_a_connection_not_yet_associated_makes_the_process_defer_the_next_accept(
    shared_listener,
):
    """Four storescu started together used to land 2+2+0+... on four processes: the
    process that accepted one had not registered its association when it looped back
    to accept, so it took the next connection too instead of leaving it to an idle
    sibling."""
    port, deferrals = shared_listener
    threads = threading.active_count()
    first = socket.create_connection(("127.0.0.1", port))  # silent: still negotiating
    try:
        assert _wait_for(lambda: threading.active_count() > threads)
        assert deferrals == []  # nothing served yet: accepted at once
        second = socket.create_connection(("127.0.0.1", port))
        try:
            assert _wait_for(lambda: deferrals != [], timeout=5)
            assert deferrals == [server.ACCEPT_DEFERRAL]
        finally:
            second.close()
    finally:
        first.close()


def test_an_association_that_ended_no_longer_defers_accepts(shared_listener, settings):
    port, deferrals = shared_listener
    echo = dcmtk(
        "echoscu", "-aet", "ECHOSCU", "-aec", settings.DICOM_AE_TITLE, "127.0.0.1", str(port)
    )
    assert echo.returncode == 0, echo.stderr
    threads = threading.active_count()
    with socket.create_connection(("127.0.0.1", port)):
        assert _wait_for(lambda: threading.active_count() > threads)
    assert deferrals == []  # the echo's association no longer counts
