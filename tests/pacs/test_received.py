"""`storage.received`: small instances read into memory, large ones staged on disk."""

import io
import mmap
from pathlib import Path

import pytest

from pacs import storage


def _staged_files() -> list:
    folder = storage._staging_root() / storage.STAGING_FOLDER
    return list(folder.iterdir()) if folder.is_dir() else []


def test_a_small_instance_is_read_into_memory():
    with storage.received(io.BytesIO(b"abc"), 3) as (data, staged):
        assert (data, staged) == (b"abc", None)


def test_a_large_instance_is_staged_mapped_and_dropped_on_exit():
    content = bytes(range(256)) * (storage.STAGE_ABOVE_BYTES // 128)
    with storage.received(io.BytesIO(content), len(content)) as (data, staged):
        assert isinstance(data, mmap.mmap) and staged is not None
        assert data[:] == content and staged.size == len(content)
        assert staged.digest() == storage.content_key(content)[1]
        assert _staged_files() == [staged.path]
    assert _staged_files() == []


def test_a_failed_staging_raises_and_leaves_no_file(monkeypatch):
    def disk_full(self, chunk):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.StagedFile, "write", disk_full)
    content = b"x" * (storage.STAGE_ABOVE_BYTES + 1)
    with pytest.raises(OSError), storage.received(io.BytesIO(content), len(content)):
        pass
    assert _staged_files() == []


def test_pynetdicoms_temporary_file_goes_to_a_staging_folder_made_again_if_pruned():
    from pacs.dimse import server

    folder = storage.staging_folder()
    folder.rmdir()  # check_storage prunes empty folders; the process still remembers it
    with server._staged_temporary_file(delete=False, mode="wb", suffix=".dcm") as handle:
        path = Path(handle.name)
    assert path.parent == folder and path.name.startswith(storage.TEMPORARY_PREFIX)
    assert _staged_files() == [path]
    path.unlink()
