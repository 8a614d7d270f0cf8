"""Run the archive's DICOM listener (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET)."""

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from pacs.dimse import server

logger = logging.getLogger(__name__)


def _die_with_parent() -> None:
    """A forked listener must not outlive its parent (kill -9 included), or it would
    keep accepting on the port alone (Linux: PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before prctl
        os._exit(0)


class Command(BaseCommand):
    help = "Listen for DICOM associations (AE title and port from settings)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=settings.DICOM_HOST)
        parser.add_argument("--port", type=int, default=settings.DICOM_PORT)
        parser.add_argument(
            "--processes",
            type=int,
            default=settings.DICOM_PROCESSES,
            help="processes accepting from one shared socket (one GIL each); "
            "1 binds with SO_REUSEPORT so separate commands may share the port",
        )

    def handle(self, *args: Any, host: str, port: int, processes: int, **options: Any) -> None:
        # Before anything listens (forked processes inherit it): a SIGTERM that comes
        # as soon as the port answers still stops cleanly.
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        if processes <= 1:
            self.serve(server.start(host, port), stop)
            return
        # Bound once, then forked before any database connection or thread exists.
        listening = server.listening_socket(host, port)
        children = []
        for _ in range(processes - 1):
            pid = os.fork()
            if pid == 0:
                try:
                    _die_with_parent()
                    self.serve(server.start(host, port, listening), stop, announce=False)
                finally:
                    os._exit(0)
            children.append(pid)
        try:
            self.serve(server.start(host, port, listening), stop)
        finally:
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            for pid in children:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)

    def serve(self, listener: Any, stop: threading.Event, announce: bool = True) -> None:
        """Run until `stop` is set (SIGTERM or SIGINT)."""
        if announce:
            bound_port = listener.server_address[1]
            self.stdout.write(
                f"DICOM listener {settings.DICOM_AE_TITLE} on {listener.server_address[0]}:"
                f"{bound_port}",
                ending="\n",
            )
            self.stdout.flush()
        stop.wait()
        listener.shutdown()
