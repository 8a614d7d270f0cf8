"""Compare image storage with the index, and repair what can be repaired.

- index rows whose file is missing: reported (the study needs re-sending);
- files no row points at (a crash between the durable write and the commit): reported,
  removed with --repair once older than --grace-minutes (younger ones may be in flight);
- left-over temporary files of interrupted writes: removed with --repair;
- with --verify, every file's SHA-256 is checked against its row.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

from django.core.management.base import BaseCommand

from pacs import storage
from pacs.models import Instance, Series


def walk(directory: str = "") -> Iterator[str]:
    """Every file name under `directory` in the image storage (works for disk and S3)."""
    store = storage.image_storage()
    folders, files = store.listdir(directory)
    for name in files:
        yield f"{directory}/{name}" if directory else name
    for folder in folders:
        yield from walk(f"{directory}/{folder}" if directory else folder)


class Command(BaseCommand):
    help = "Check image storage against the index; --repair removes orphans."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--repair", action="store_true")
        parser.add_argument("--verify", action="store_true", help="Re-hash every file.")
        parser.add_argument("--grace-minutes", type=float, default=10.0)

    def handle(
        self, *args: Any, repair: bool, verify: bool, grace_minutes: float, **_: Any
    ) -> None:
        store = storage.image_storage()
        referenced = dict(Instance.objects.values_list("storage_key", "sha256"))
        thumbnails = set(
            Series.objects.exclude(thumbnail_key="").values_list("thumbnail_key", flat=True)
        )
        present: set[str] = set()
        orphans = removed = temporary = 0
        cutoff = time.time() - grace_minutes * 60
        for key in walk():
            name = key.rsplit("/", 1)[-1]
            if name.startswith(".incoming-"):
                temporary += 1
                if repair and store.get_modified_time(key).timestamp() < cutoff:
                    store.delete(key)
                    removed += 1
                continue
            present.add(key)
            if key in referenced or key in thumbnails:
                continue
            orphans += 1
            self.stdout.write(f"orphan file: {key}")
            if repair and store.get_modified_time(key).timestamp() < cutoff:
                store.delete(key)
                removed += 1
        missing = sorted(set(referenced) - present)
        for key in missing:
            uids = Instance.objects.filter(storage_key=key).values_list(
                "sop_instance_uid", flat=True
            )
            self.stdout.write(f"missing file: {key} (instances {', '.join(uids)})")
        corrupt = 0
        if verify:
            for key, digest in referenced.items():
                if key in present and hashlib.sha256(storage.read(key)).hexdigest() != digest:
                    corrupt += 1
                    self.stdout.write(f"corrupt file: {key}")
        self.stdout.write(
            f"files referenced: {len(referenced)}, orphans: {orphans}, temporary: {temporary}, "
            f"missing: {len(missing)}, corrupt: {corrupt}, removed: {removed}"
        )
        if missing or corrupt:
            raise SystemExit(1)
