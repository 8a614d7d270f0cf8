"""Run the HL7 v2 MLLP listener (ADT and orders in; ACKs back once stored)."""

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from ris.hl7 import listener


class Command(BaseCommand):
    help = "Listen for HL7 v2 messages over MLLP (host and port from settings)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=settings.HL7_HOST)
        parser.add_argument("--port", type=int, default=settings.HL7_PORT, help="0: any free port")
        parser.add_argument(
            "--reuse-port",
            action="store_true",
            help="SO_REUSEPORT: run several listeners on one port to use more cores",
        )

    def handle(self, *args: Any, host: str, port: int, reuse_port: bool, **options: Any) -> None:
        def ready(bound_host: str, bound_port: int) -> None:
            # One parseable line: scripts and tests read the real port from it.
            self.stdout.write(f"hl7_listener: listening on {bound_host}:{bound_port}")
            self.stdout.flush()

        limits = listener.Options.from_settings(reuse_port=reuse_port)
        listener.serve(host, port, options=limits, ready=ready)
