"""Durable, content-addressed storage of DICOM files.

Keys are the SHA-256 of the bytes (`ab/cd/abcd…`), so identical bytes are stored
once and a key never changes meaning. On local disk a write is durable before
`put` returns: temp file, fsync, rename, fsync of the directory.

A remote store (S3) is never on the C-STORE path: `put` writes the file durably
into a local spool (`IMAGE_SPOOL_DIR`) and queues `pacs.tasks.spool_upload`; the
spool copy is removed only once the remote holds the object. Reads look in the
spool first. A lost task (a worker died, the broker was down) leaves the file in
the spool, where `spool_flush` (command `flush_spool`, periodic task) uploads it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, NamedTuple

from django.conf import settings
from django.core.files.base import File
from django.core.files.storage import Storage, storages

logger = logging.getLogger(__name__)

TEMPORARY_PREFIX = ".incoming-"


def content_key(data: bytes) -> tuple[str, str]:
    """(storage key, sha256 hex) of a file's bytes."""
    digest = hashlib.sha256(data).hexdigest()
    return f"{digest[:2]}/{digest[2:4]}/{digest}.dcm", digest


def image_storage() -> Storage:
    """The images storage; a remote one is seen through the spool, so files not yet
    uploaded are listed, read and deleted like the others (check_storage relies on it)."""
    store = storages["images"]
    if _local_root(store) is not None:
        return store
    return SpooledStorage(store, spool_dir())


def spool_dir() -> Path:
    return Path(getattr(settings, "IMAGE_SPOOL_DIR", settings.VAR_DIR / "spool"))


def _local_root(storage: Storage) -> Path | None:
    location = getattr(storage, "location", None)
    return Path(location) if location and hasattr(storage, "path") else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(target: Path, data: bytes) -> bool:
    """Write `target` so that it survives a crash once this returns; False when it exists."""
    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=TEMPORARY_PREFIX)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return True


def put(key: str, data: bytes) -> bool:
    """Store `data` under `key` durably; False when it was already there (same bytes).

    With a remote store "there" means the spool: asking S3 would put its latency on
    every C-STORE. A second upload of bytes S3 already holds is a no-op of the task.
    """
    store = image_storage()
    if isinstance(store, SpooledStorage):
        created = _write_durably(store.spool_path(key), data)
        if created:
            # Queued now, not on commit: the task needs only the spool file, already
            # durable, and no index row (ingest calls put before its transaction).
            _queue_upload(key)
        return created
    return _write_durably(Path(store.path(key)), data)


def _queue_upload(key: str) -> None:
    """Never fails the caller: the file is safe in the spool and spool_flush uploads it."""
    from pacs import tasks  # pacs.tasks imports pacs.services, which imports this module

    try:
        tasks.spool_upload.delay(key)
    except Exception:
        logger.warning(
            "upload of %s not done now; it stays spooled for spool_flush", key, exc_info=True
        )


def open_file(key: str) -> IO[bytes]:
    store = image_storage()
    if isinstance(store, SpooledStorage):
        try:
            return store.spool_path(key).open("rb")
        except FileNotFoundError:
            pass  # uploaded (the spool copy goes only once the remote has it)
        return store.remote.open(key, "rb")
    return store.open(key, "rb")


def read(key: str) -> bytes:
    with open_file(key) as handle:
        return handle.read()


def delete(key: str) -> None:
    image_storage().delete(key)


def exists(key: str) -> bool:
    return image_storage().exists(key)


class SpooledStorage(Storage):
    """A remote storage with a local spool in front: files not yet uploaded live in
    the spool under their key. Writes go through `put`, not `save`."""

    def __init__(self, remote: Storage, spool: Path) -> None:
        self.remote = remote
        self.spool = spool

    def spool_path(self, name: str) -> Path:
        return self.spool / name

    def _open(self, name: str, mode: str = "rb") -> File:
        if any(flag in mode for flag in "wax+"):
            raise ValueError("image files are written with pacs.storage.put")
        try:
            return File(self.spool_path(name).open(mode), name)
        except FileNotFoundError:
            return self.remote.open(name, mode)

    def exists(self, name: str) -> bool:
        return self.spool_path(name).exists() or self.remote.exists(name)

    def delete(self, name: str) -> None:
        """Remove both copies. An upload running at the same moment may put the remote
        one back: an orphan that check_storage reports and removes."""
        self.spool_path(name).unlink(missing_ok=True)
        self.remote.delete(name)

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        folders, files = self.remote.listdir(path)
        local = self.spool_path(path)
        if local.is_dir():
            for entry in local.iterdir():
                (folders if entry.is_dir() else files).append(entry.name)
        return sorted(set(folders)), sorted(set(files))

    def size(self, name: str) -> int:
        try:
            return self.spool_path(name).stat().st_size
        except FileNotFoundError:
            return self.remote.size(name)

    def get_modified_time(self, name: str) -> datetime:
        try:
            stamp = self.spool_path(name).stat().st_mtime
        except FileNotFoundError:
            return self.remote.get_modified_time(name)
        return datetime.fromtimestamp(stamp, tz=UTC if settings.USE_TZ else None)


def _spooled() -> SpooledStorage | None:
    store = image_storage()
    return store if isinstance(store, SpooledStorage) else None


def spool_upload(key: str) -> bool:
    """Upload one spooled file, then drop it from the spool; False when it is not spooled.

    Idempotent: an object the remote already holds with the same size is not sent
    again (the key is the content's hash). The spool copy is removed only after the
    remote acknowledged the object, so a reader always finds one of the two.
    """
    store = _spooled()
    if store is None:
        return False
    path = store.spool_path(key)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return False
    with handle:
        size = os.fstat(handle.fileno()).st_size
        if _remote_size(store.remote, key) != size:
            # _save writes exactly `key` (save() would invent another name when
            # file_overwrite is off); replacing identical bytes is harmless. It returns
            # only once S3 acknowledged the whole object, readable at once.
            store.remote._save(key, File(handle, key))
    path.unlink(missing_ok=True)
    return True


def _remote_size(remote: Storage, key: str) -> int | None:
    try:
        return remote.size(key)
    except FileNotFoundError:
        return None


class Flushed(NamedTuple):
    uploaded: int
    failed: int
    leftovers_removed: int


def spool_flush(grace_seconds: float = 600.0) -> Flushed:
    """Upload every spooled file: the guarantee behind the per-file tasks.

    Safe to run any time and alongside the tasks. Also removes temporary files of
    writes interrupted more than `grace_seconds` ago (younger ones may be in flight).
    """
    store = _spooled()
    if store is None or not store.spool.is_dir():
        return Flushed(0, 0, 0)
    uploaded = failed = leftovers = 0
    cutoff = time.time() - grace_seconds
    for path in sorted(p for p in store.spool.rglob("*") if p.is_file()):
        if path.name.startswith(TEMPORARY_PREFIX):
            if _mtime(path) < cutoff:
                path.unlink(missing_ok=True)
                leftovers += 1
            continue
        key = path.relative_to(store.spool).as_posix()
        try:
            uploaded += spool_upload(key)
        except Exception:
            failed += 1
            logger.exception("cannot upload spooled %s; it stays spooled", key)
    return Flushed(uploaded, failed, leftovers)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def spooled_keys() -> list[str]:
    """Keys waiting in the spool (for monitoring: a growing list means uploads fail)."""
    store = _spooled()
    if store is None or not store.spool.is_dir():
        return []
    return sorted(
        p.relative_to(store.spool).as_posix()
        for p in store.spool.rglob("*")
        if p.is_file() and not p.name.startswith(TEMPORARY_PREFIX)
    )
