"""Run the archive's DICOM listener (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET)."""

import logging
import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from pacs.dimse import server

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Listen for DICOM associations (AE title and port from settings)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=settings.DICOM_HOST)
        parser.add_argument("--port", type=int, default=settings.DICOM_PORT)

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        listener = server.start(host, port)
        bound_port = listener.server_address[1]
        self.stdout.write(
            f"DICOM listener {settings.DICOM_AE_TITLE} on {host}:{bound_port}", ending="\n"
        )
        self.stdout.flush()
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        stop.wait()
        listener.shutdown()
