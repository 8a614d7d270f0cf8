"""Association threads: event-driven waiting, and their database connections closed."""

import statistics
import time

import pynetdicom
import pytest
from django.db import connection
from pynetdicom import AE, dul
from pynetdicom.sop_class import Verification

from pacs.dimse import reactor
from pacs.models import Study
from tests.interop.conftest import scu, write_series

pytestmark = pytest.mark.interop


def test_the_pinned_pynetdicom_runs_the_event_driven_reactor():
    # A new pynetdicom keeps its own polling loops: re-read them, then move the pin.
    assert pynetdicom.__version__ == reactor.PATCHED_VERSION
    assert dul.DULServiceProvider.run_reactor is reactor.dul_run_reactor


def _echo_round_trips(listener) -> list[float]:
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title=listener.ae_title)
    assert assoc.is_established
    try:
        round_trips = []
        for _ in range(100):
            started = time.perf_counter()
            assert assoc.send_c_echo().Status == 0
            round_trips.append(time.perf_counter() - started)
    finally:
        assoc.release()
    return round_trips


def test_a_c_echo_round_trip_does_not_wait_for_a_polling_tick(listener, monkeypatch, settings):
    settings.DICOM_FAST_STORE = False  # an echo-only association is storage_scp's otherwise
    ours = statistics.median(_echo_round_trips(listener))
    with monkeypatch.context() as polling:  # pynetdicom's own loops, same machine, same load
        for (cls, name), method in reactor.ORIGINALS.items():
            polling.setattr(cls, name, method)
        theirs = statistics.median(_echo_round_trips(listener))
    # pynetdicom sleeps 1 ms before each look, on both sides and in both directions
    # (3.5 ms per echo on an idle machine); waiting on events leaves the threads'
    # hand-offs (about 1.2 ms: SCU and listener share this process's GIL).
    assert ours < theirs / 1.5, (ours, theirs)


def _backends() -> list[tuple[str, str]]:
    """(state, last query) of every session on the test database but this one."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT state, query FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchall()


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_a_finished_association_closes_its_database_connection(listener, tmp_path):
    before = _backends()
    write_series(tmp_path / "series", slices=3)
    result = scu("storescu", listener, "STORESCU", "+sd", files=(str(tmp_path / "series"),))
    assert result.returncode == 0, result.stderr
    # The refresh at the association's end runs in pynetdicom's DUL thread and closes
    # its connection too.
    deadline = time.monotonic() + 10
    while Study.objects.get().number_of_instances != 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    while len(_backends()) > len(before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _backends() == before
