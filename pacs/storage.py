"""Durable, content-addressed storage of DICOM files.

Keys are the SHA-256 of the bytes (`ab/cd/abcd…`), so identical bytes are stored
once and a key never changes meaning. On local disk a write is durable before
`put` returns: temp file, fsync, rename, fsync of the directory. On S3 a PUT that
returned is durable.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import IO

from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages


def content_key(data: bytes) -> tuple[str, str]:
    """(storage key, sha256 hex) of a file's bytes."""
    digest = hashlib.sha256(data).hexdigest()
    return f"{digest[:2]}/{digest[2:4]}/{digest}.dcm", digest


def image_storage() -> Storage:
    return storages["images"]


def _local_root(storage: Storage) -> Path | None:
    location = getattr(storage, "location", None)
    return Path(location) if location and hasattr(storage, "path") else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def put(key: str, data: bytes) -> bool:
    """Store `data` under `key` durably; False when it was already there (same bytes)."""
    storage = image_storage()
    root = _local_root(storage)
    if root is None:
        if storage.exists(key):
            return False
        storage.save(key, ContentFile(data))
        return True
    target = root / key
    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
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


def open_file(key: str) -> IO[bytes]:
    return image_storage().open(key, "rb")


def read(key: str) -> bytes:
    with open_file(key) as handle:
        return handle.read()


def delete(key: str) -> None:
    image_storage().delete(key)


def exists(key: str) -> bool:
    return image_storage().exists(key)
