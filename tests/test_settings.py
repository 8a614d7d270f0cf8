"""Settings come from the environment; production settings pass Django's deploy checks."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = {
    "SECRET_KEY": "a-long-random-production-secret-" + "k" * 40,
    "ALLOWED_HOSTS": "pacs.example.org",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_PRELOAD": "1",
    "BEHIND_TLS_PROXY": "1",
}


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    # Start from a clean slate: make test itself exports some of these.
    ours = ("SECRET_KEY", "DEBUG", "DATABASE_URL", "REDIS_URL", "IMAGE_STORAGE", "VAR_DIR")
    base = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_the_deploy_checks(tmp_path):
    result = run_python(
        "import django, sys; django.setup(); from django.core.management import call_command;"
        "call_command('check', '--deploy', '--fail-level', 'WARNING')",
        {**PRODUCTION, "VAR_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr


def test_embedded_defaults_are_sqlite_local_images_and_eager_celery(tmp_path):
    result = run_python(
        "import django; django.setup(); from django.conf import settings as s;"
        "from django.core.files.storage import storages;"
        "print(s.DATABASES['default']['ENGINE'], type(storages['images']).__name__,"
        " storages['images'].location, s.CELERY_TASK_ALWAYS_EAGER)",
        {"DEBUG": "1", "VAR_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        "FileSystemStorage",
        str(tmp_path / "images"),
        "True",
    ]


def test_database_redis_and_s3_come_from_the_environment(tmp_path):
    result = run_python(
        "import django; django.setup(); from django.conf import settings as s;"
        "from django.core.files.storage import storages; im = storages['images'];"
        "print(s.DATABASES['default']['ENGINE'], s.DATABASES['default']['HOST'],"
        " s.CELERY_BROKER_URL, s.CELERY_TASK_ALWAYS_EAGER, type(im).__name__, im.bucket_name,"
        " im.endpoint_url)",
        {
            **PRODUCTION,
            "VAR_DIR": str(tmp_path),
            "DATABASE_URL": "postgres://radpacs:pw@db.internal:5432/radpacs",
            "REDIS_URL": "redis://cache.internal:6379/0",
            "IMAGE_STORAGE": "s3",
            "S3_BUCKET": "radpacs-images",
            "S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.postgresql",
        "db.internal",
        "redis://cache.internal:6379/0",
        "False",
        "S3Storage",
        "radpacs-images",
        "http://127.0.0.1:9000",
    ]


def test_database_connections_are_kept_unless_told_otherwise(tmp_path):
    code = (
        "import django; django.setup(); from django.conf import settings;"
        "print(settings.DATABASES['default']['CONN_MAX_AGE'])"
    )
    base = {"VAR_DIR": str(tmp_path), "DEBUG": "1"}
    kept = run_python(code, {**base, "DATABASE_CONN_MAX_AGE": ""})
    told = run_python(code, {**base, "DATABASE_CONN_MAX_AGE": "0"})
    assert (kept.stdout.strip(), told.stdout.strip()) == ("60", "0"), kept.stderr + told.stderr
