"""`storage.read`: a stored file's bytes, whichever store holds it."""

import pytest

from pacs import storage

pytestmark = pytest.mark.django_db


def test_a_stored_file_reads_back_as_written(image_store):
    data = b"DICM" * 100_000
    key, _ = storage.content_key(data)
    storage.put(key, data)
    assert storage.read(key) == data


def test_a_missing_file_is_an_error_not_empty_bytes(image_store):
    key, _ = storage.content_key(b"never stored")
    with pytest.raises(FileNotFoundError):
        storage.read(key)


def test_a_file_under_another_kind_of_key_reads_through_the_storage(image_store):
    """Series thumbnails have keys of their own: not the content-key fast path."""
    storage.put("thumbnails/ab/t.png", b"\x89PNG")
    assert storage.read("thumbnails/ab/t.png") == b"\x89PNG"
