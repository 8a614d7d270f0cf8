"""Import a legacy archive folder through the same ingest as every other door.

Resumable: each file's outcome is appended (and flushed) to a log; a second run with
the same log skips what is already done, so an interrupted import of a million files
picks up where it stopped. Refused files are listed with their reason and retried on
the next run only with --retry-failed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, OutputWrapper

from accounts import audit
from accounts.models import Facility
from pacs import services, storage

DONE = {"stored", "already_stored", "kept_first", "overwritten"}


def files_under(root: Path) -> Iterator[Path]:
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        for name in sorted(names):
            yield Path(folder) / name


def read_log(path: Path) -> dict[str, str]:
    """Outcome per file from a previous run (the last line for a file wins)."""
    outcomes: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            outcome, _, rest = line.partition("\t")
            name = rest.split("\t", 1)[0]
            if name:
                outcomes[name] = outcome
    return outcomes


class Progress:
    """A one-line progress bar on a terminal, periodic lines otherwise."""

    def __init__(self, total: int, stream: OutputWrapper) -> None:
        self.total, self.stream = total, stream
        self.started = time.monotonic()
        self.last = 0.0
        self.tty = stream.isatty()

    def show(self, done: int, stored: int, failed: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < (0.2 if self.tty else 5.0):
            return
        self.last = now
        rate = done / max(now - self.started, 1e-6)
        width = 30
        filled = int(width * done / self.total) if self.total else width
        bar = "#" * filled + "-" * (width - filled)
        line = f"[{bar}] {done}/{self.total} files, {stored} stored, {failed} refused, {rate:.0f}/s"
        if self.tty:
            self.stream.write("\r" + line, ending="\n" if final else "")
        else:
            self.stream.write(line)
        self.stream.flush()


class Command(BaseCommand):
    help = "Import every DICOM file under FOLDER into FACILITY (resumable with --log)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("folder", type=Path)
        parser.add_argument("--facility", required=True, help="Facility code.")
        parser.add_argument("--log", type=Path, help="Resumable log (default FOLDER.import.log).")
        parser.add_argument("--retry-failed", action="store_true")

    def handle(
        self, *args: Any, folder: Path, facility: str, log: Path | None, **opts: Any
    ) -> None:
        if not folder.is_dir():
            raise CommandError(f"{folder} is not a folder")
        try:
            target = Facility.objects.get(code=facility, is_active=True)
        except Facility.DoesNotExist as error:
            raise CommandError(f"no active facility with code {facility!r}") from error
        log_path = log or folder.with_name(folder.name + ".import.log")
        previous = read_log(log_path)
        skip = {
            name
            for name, outcome in previous.items()
            if outcome in DONE or (outcome == "refused" and not opts["retry_failed"])
        }
        pending = [path for path in files_under(folder) if str(path) not in skip]
        self.stdout.write(
            f"{len(pending)} files to import into {target.code} ({len(skip)} done before); "
            f"log: {log_path}"
        )
        progress = Progress(len(pending), self.stderr)
        stored = failed = 0
        with log_path.open("a", encoding="utf-8") as log_file:
            for done, path in enumerate(pending, start=1):
                try:
                    with storage.mapped(path) as data:  # a 2 GB file is not read into memory
                        result = services.ingest(
                            data,
                            facility=target,
                            door=audit.Door.SYSTEM,
                            actor=f"import:{folder.name}"[:150],
                        )
                    outcome, reason = result.outcome.value, ""
                    stored += 1
                except services.IngestError as error:
                    outcome, reason = "refused", error.reason
                    failed += 1
                except OSError as error:
                    outcome, reason = "refused", f"cannot read: {error.strerror}"
                    failed += 1
                log_file.write(f"{outcome}\t{path}\t{reason}\n")
                log_file.flush()
                progress.show(done, stored, failed)
        progress.show(len(pending), stored, failed, final=True)
        self.stdout.write(f"imported {stored}, refused {failed}")
