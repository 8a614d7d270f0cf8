"""Upload every image file still in the local spool to the remote store (S3).

The per-file `spool_upload` tasks normally empty the spool within seconds; this
sweep catches what they missed (a worker died, the broker or S3 was down). Run it
periodically; it is idempotent and safe next to running workers. Exits 1 when a
file could not be uploaded (it stays spooled for the next run).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from pacs import storage


class Command(BaseCommand):
    help = "Upload spooled image files to the remote image storage."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--grace-minutes",
            type=float,
            default=10.0,
            help="Remove temporary files of interrupted writes older than this.",
        )

    def handle(self, *args: Any, grace_minutes: float, **_: Any) -> None:
        result = storage.spool_flush(grace_seconds=grace_minutes * 60)
        self.stdout.write(
            f"uploaded: {result.uploaded}, failed: {result.failed}, "
            f"temporary removed: {result.leftovers_removed}, "
            f"still spooled: {len(storage.spooled_keys())}"
        )
        if result.failed:
            raise SystemExit(1)
