"""Image storage for tests: a folder, or a real S3 endpoint (moto server on loopback)
behind the archive's local spool. Tests that store images run once on each."""

import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
import botocore.loaders
import botocore.session
import pytest
from storages.backends.s3 import S3Storage

from tests.network import free_port

S3_CREDENTIALS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "region_name": "us-east-1",
}


@dataclass(frozen=True)
class ImageStore:
    """Where a test's images go: a folder ("disk"), or a moto S3 bucket behind a local
    spool ("s3"). `root` is the folder, or the spool that holds files not yet uploaded;
    `store / key` is a path under it."""

    backend: str
    root: Path
    endpoint: str = ""
    bucket: str = ""

    def __truediv__(self, key: str) -> Path:
        return self.root / key

    def s3(self) -> Any:  # a botocore S3 client
        return boto3.client("s3", endpoint_url=self.endpoint, **S3_CREDENTIALS)

    def bucket_keys(self) -> list[str]:
        """What the bucket holds, asked of S3 itself (not through pacs.storage)."""
        if self.backend != "s3":
            return []
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))

    def remove(self, key: str) -> None:
        """Lose a stored file behind the archive's back, wherever it lives."""
        (self.root / key).unlink(missing_ok=self.backend == "s3")
        if self.backend == "s3":
            self.s3().delete_object(Bucket=self.bucket, Key=key)

    def overwrite(self, key: str, data: bytes) -> None:
        """Change a stored file's bytes behind the archive's back, wherever it lives."""
        path = self.root / key
        if self.backend == "disk" or path.exists():
            path.write_bytes(data)
        if self.backend == "s3" and key in self.bucket_keys():
            self.s3().put_object(Bucket=self.bucket, Key=key, Body=data)

    def local_keys(self) -> list[str]:
        """Files under `root`: the images folder, or the spool (temporary files included)."""
        if not self.root.exists():
            return []
        return sorted(
            p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()
        )


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3 endpoint (moto server) on loopback, started once when an S3 test runs."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if server.poll() is not None:
                pytest.fail(f"moto server exited: {log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"moto server did not answer: {log_path.read_text()}")
                time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="session")
def botocore_loader() -> botocore.loaders.Loader:
    return botocore.loaders.create_loader()


def _sharing_loader(loader: botocore.loaders.Loader) -> Callable[[S3Storage], boto3.Session]:
    """S3Storage._create_session with one botocore loader for all tests: each new
    session otherwise re-reads botocore's JSON models (~0.2 s per test)."""

    def create_session(storage: S3Storage) -> boto3.Session:
        core = botocore.session.get_session()
        core.register_component("data_loader", loader)
        return boto3.Session(
            aws_access_key_id=storage.access_key,
            aws_secret_access_key=storage.secret_key,
            botocore_session=core,
        )

    return create_session


def s3_backend(endpoint: str, bucket: str, **options: object) -> dict:
    """STORAGES["images"] as config/settings.py builds it for IMAGE_STORAGE=s3."""
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "endpoint_url": endpoint,
            "region_name": S3_CREDENTIALS["region_name"],
            "access_key": S3_CREDENTIALS["aws_access_key_id"],
            "secret_key": S3_CREDENTIALS["aws_secret_access_key"],
            "location": "",
            "file_overwrite": False,
            "default_acl": None,
            "querystring_auth": True,
            **options,
        },
    }


@pytest.fixture(params=["disk", "s3"])
def image_store(
    request: pytest.FixtureRequest, tmp_path: Path, settings, monkeypatch: pytest.MonkeyPatch
) -> ImageStore:
    """Each test stores images in its own empty folder, and again in its own S3 bucket."""
    if request.param == "disk":
        root = tmp_path / "images"
        settings.STORAGES = {
            **settings.STORAGES,
            "images": {
                "BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": str(root)},
            },
        }
        return ImageStore("disk", root)
    endpoint = request.getfixturevalue("moto_endpoint")
    loader = request.getfixturevalue("botocore_loader")
    monkeypatch.setattr(S3Storage, "_create_session", _sharing_loader(loader))
    store = ImageStore("s3", tmp_path / "spool", endpoint, f"images-{uuid.uuid4().hex[:20]}")
    store.s3().create_bucket(Bucket=store.bucket)
    settings.IMAGE_SPOOL_DIR = store.root
    settings.STORAGES = {**settings.STORAGES, "images": s3_backend(endpoint, store.bucket)}
    return store


def stored_files(store: ImageStore) -> list[PurePosixPath]:
    """The DICOM files the image storage holds (on disk; or in the bucket and the spool),
    by key, temporary files included. Series thumbnails, derived from them, are not."""
    keys = {*store.local_keys(), *store.bucket_keys()}
    return [PurePosixPath(key) for key in sorted(keys) if not key.startswith("thumbnails/")]
