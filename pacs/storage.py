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

import contextlib
import hashlib
import itertools
import logging
import mmap
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, NamedTuple

from django.conf import settings
from django.core.files.base import File
from django.core.files.storage import Storage, storages

logger = logging.getLogger(__name__)

TEMPORARY_PREFIX = ".incoming-"
# Where files received piece by piece wait for their content address (the images root,
# or the spool for a remote store: the same filesystem as their final folder).
STAGING_FOLDER = ".incoming"


def content_key(data: bytes) -> tuple[str, str]:
    """(storage key, sha256 hex) of a file's bytes."""
    digest = hashlib.sha256(data).hexdigest()
    return key_of(digest), digest


def key_of(digest: str) -> str:
    """The storage key of the bytes whose SHA-256 is `digest`."""
    return f"{digest[:2]}/{digest[2:4]}/{digest}.dcm"


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


_known_dirs: set[Path] = set()
_temporary_names = itertools.count()


def _temporary_name() -> str:
    return f"{TEMPORARY_PREFIX}{os.getpid()}-{threading.get_ident()}-{next(_temporary_names)}"


def _write_temporary(folder: Path, data: bytes) -> Path:
    """Write `data` to a new temporary file in `folder` and fsync it."""
    path, fd = _write_unsynced(folder, data)
    return _sync_temporary(path, fd)


def _sync_temporary(path: Path, fd: int) -> Path:
    """fsync and close a file `_write_unsynced` wrote (removed if that fails)."""
    try:
        os.fsync(fd)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return path


def _write_unsynced(folder: Path, data: bytes) -> tuple[Path, int]:
    """Write `data` to a new temporary file in `folder`: (its path, its open descriptor)."""
    for attempt in (1, 2):
        if folder not in _known_dirs:
            folder.mkdir(parents=True, exist_ok=True)
            _known_dirs.add(folder)
        path = folder / _temporary_name()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            _known_dirs.discard(folder)  # removed since (check_storage prunes empty folders)
            if attempt == 2:
                raise
            continue
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return path, fd
    raise AssertionError("unreachable")


def _install(temporary: Path, target: Path) -> None:
    """Give the written file its name, durably (rename, then fsync of the folder)."""
    try:
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def _write_durably(target: Path, data: bytes) -> bool:
    """Write `target` so that it survives a crash once this returns; False when it exists."""
    if target.exists():
        return False
    _install(_write_temporary(target.parent, data), target)
    return True


def _target(key: str) -> tuple[Path, bool]:
    """Where `key` is written (the spool for a remote store), and whether it is spooled."""
    store = image_storage()
    if isinstance(store, SpooledStorage):
        return store.spool_path(key), True
    return Path(store.path(key)), False


def put(key: str, data: bytes) -> bool:
    """Store `data` under `key` durably; False when it was already there (same bytes).

    With a remote store "there" means the spool: asking S3 would put its latency on
    every C-STORE. A second upload of bytes S3 already holds is a no-op of the task.
    """
    target, spooled = _target(key)
    created = _write_durably(target, data)
    if created and spooled:
        # Queued now, not on commit: the task needs only the spool file, already
        # durable, and no index row (ingest writes before its transaction).
        _queue_upload(key)
    return created


_writers: ThreadPoolExecutor | None = None
_writers_lock = threading.Lock()


def _writer_pool() -> ThreadPoolExecutor:
    global _writers
    with _writers_lock:
        if _writers is None:
            _writers = ThreadPoolExecutor(max_workers=16, thread_name_prefix="image-writer")
        return _writers


Prepared = tuple[str, str, Path, Path | None]  # key, sha256, target, temporary file


class StagedFile:
    """An instance written to disk as it arrives (a C-STORE's P-DATA fragments) and
    hashed on the way, so memory holds one fragment whatever the instance's size. It
    waits under a temporary name in the staging folder; `PendingPut.of_staged` then
    names it by its content, or it is discarded. Nothing is visible under a key before.
    """

    def __init__(self) -> None:
        for attempt in (1, 2):
            folder = staging_folder()
            self.path = folder / _temporary_name()
            try:
                self._fd = os.open(
                    self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
                )
                break
            except FileNotFoundError:
                forget_folder(folder)  # pruned since (check_storage removes empty folders)
                if attempt == 2:
                    raise
        self._hash = hashlib.sha256()
        self.size = 0
        self._view: mmap.mmap | None = None

    def write(self, chunk: bytes | memoryview) -> None:
        self._hash.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._fd, view) :]
        self.size += len(chunk)

    def contents(self) -> mmap.mmap:
        """The bytes written, mapped read-only (page cache, not this process's heap)."""
        if self._view is None:
            self._view = mmap.mmap(self._fd, 0, access=mmap.ACCESS_READ)
        return self._view

    def digest(self) -> str:
        return self._hash.hexdigest()

    def sync(self) -> None:
        os.fsync(self._fd)

    def release(self) -> None:
        """Close the mapping and the file (the name stays: install or discard it)."""
        if self._view is not None:
            with contextlib.suppress(BufferError):  # a view still exported: the GC closes it
                self._view.close()
            self._view = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def discard(self) -> None:
        """Drop the file unless it was installed (then its temporary name is gone)."""
        self.release()
        self.path.unlink(missing_ok=True)


# An instance arriving as a file (a STOW-RS part, an upload) larger than this is staged
# on disk and parsed from a mapping instead of being read into memory.
STAGE_ABOVE_BYTES = 1024 * 1024
_STAGE_CHUNK_BYTES = 1024 * 1024


@contextlib.contextmanager
def received(stream: IO[bytes], size: int) -> Iterator[tuple[bytes | mmap.mmap, StagedFile | None]]:
    """(bytes, staged file) of an instance arriving as a file object: read into memory
    when small; copied to a staged file and mapped when larger, so a 1 GB instance never
    sits in memory. Pass both to `services.ingest`; the staged file is dropped on exit
    unless ingest installed it. Raises OSError when it cannot be staged."""
    if size <= STAGE_ABOVE_BYTES:
        yield stream.read(), None
        return
    staged = StagedFile()
    try:
        buffer = bytearray(_STAGE_CHUNK_BYTES)
        view = memoryview(buffer)
        while count := stream.readinto(buffer):  # type: ignore[attr-defined]
            staged.write(view[:count])
        yield staged.contents(), staged
    finally:
        staged.discard()


@contextlib.contextmanager
def mapped(path: Path) -> Iterator[bytes | mmap.mmap]:
    """A file's bytes to ingest without reading it into memory (page cache instead)."""
    with path.open("rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:  # an empty file cannot be mapped
            yield b""
            return
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            yield view


def staging_folder() -> Path:
    """The folder of files still arriving (on the filesystem of their final place)."""
    folder = _staging_root() / STAGING_FOLDER
    if folder not in _known_dirs:
        folder.mkdir(parents=True, exist_ok=True)
        _known_dirs.add(folder)
    return folder


def forget_folder(folder: Path) -> None:
    """A folder made earlier is gone (check_storage prunes empty ones): make it again
    when next asked."""
    _known_dirs.discard(folder)


def _staging_root() -> Path:
    store = image_storage()
    if isinstance(store, SpooledStorage):
        return store.spool
    root = _local_root(store)
    if root is None:  # image_storage() returns a local store or a spooled one
        raise AssertionError("unreachable")
    return root


class PendingPut:
    """A content-addressed `put` whose file's fsync (and naming) runs in a writer thread
    while the caller goes on (ingest parses the header and inserts the row). Then
    `install()` names the file durably, or `discard()` drops it. Nothing is visible
    under the key before `install()`.

    The bytes are hashed and written to the page cache here, in the caller's thread,
    while they are in this core's cache: handing that to the writer thread cost more
    CPU (the bytes read again on the other core, the GIL passed back and forth) than
    it overlapped (STOW-RS, 1 client: 249 -> 277 instances/s)."""

    def __init__(self, data: bytes) -> None:
        key, self._digest = content_key(data)
        self._future: Future[Prepared] = Future()
        try:
            target, _ = _target(key)
            if target.exists():
                self._future.set_result((key, self._digest, target, None))
            else:
                path, fd = _write_unsynced(target.parent, data)
                self._future = _writer_pool().submit(
                    self._prepare, key, self._digest, target, path, fd
                )
        except OSError as error:  # raised where the caller asks for the key
            self._future.set_exception(error)
        self._settled = False
        self._staged: StagedFile | None = None
        self._named_by_writer = False

    @classmethod
    def of_staged(cls, staged: StagedFile) -> PendingPut:
        """The same for a file already written and hashed: only its fsync is left to
        overlap with the parse. The put owns the file from here."""
        pending = cls.__new__(cls)
        pending._future = _writer_pool().submit(cls._prepare_staged, staged)
        pending._settled = False
        pending._staged = staged
        pending._named_by_writer = False
        return pending

    def installing(self) -> tuple[str, str]:
        """(storage key, sha256) as soon as the content is hashed (a staged file's at
        once), and the file named by the writer as soon as its fsync is done: the caller
        writes its index row meanwhile and answers only after `install()` (which then
        waits) returned. Until then the row may name a file that is not there yet; after
        a crash in between, the sender (who got no answer) sends again and that put
        names the file."""
        digest = self._staged.digest() if self._staged is not None else self._digest
        named: Future[Prepared] = Future()

        def name(prepared: Future[Prepared]) -> None:  # in the writer thread
            try:
                _, _, target, temporary = result = prepared.result()
                if temporary is not None:
                    _install(temporary, target)
            except BaseException as error:
                named.set_exception(error)
            else:
                named.set_result(result)

        self._future.add_done_callback(name)
        self._future = named
        self._named_by_writer = True
        return key_of(digest), digest

    @staticmethod
    def _prepare_staged(staged: StagedFile) -> Prepared:
        digest = staged.digest()
        key = key_of(digest)
        target, _ = _target(key)
        if target.exists():  # the caller may still be reading the mapping: only unlink
            staged.path.unlink(missing_ok=True)
            return key, digest, target, None
        staged.sync()
        folder = target.parent
        if folder not in _known_dirs:
            folder.mkdir(parents=True, exist_ok=True)
            _known_dirs.add(folder)
        return key, digest, target, staged.path

    @staticmethod
    def _prepare(key: str, digest: str, target: Path, path: Path, fd: int) -> Prepared:
        return key, digest, target, _sync_temporary(path, fd)

    def key(self) -> tuple[str, str]:
        """(storage key, sha256); raises the writer's OSError."""
        key, digest, _, _ = self._future.result()
        return key, digest

    def install(self) -> bool:
        """Make the file durable under its key; False when the key held it already."""
        key, _, target, temporary = self._future.result()
        self._settled = True
        if temporary is None:
            return False
        if not self._named_by_writer:
            _install(temporary, target)
        if _target(key)[1]:
            _queue_upload(key)
        return True

    def discard(self) -> None:
        """Drop the written file (the caller refused the instance)."""
        if self._settled:
            return
        self._settled = True
        try:
            temporary = self._future.result()[3]
        except OSError:
            return
        if temporary is not None and not self._named_by_writer:
            temporary.unlink(missing_ok=True)


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
