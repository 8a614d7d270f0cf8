"""Tasks that exist only for the broker-path tests; a worker loads them with --include."""

from celery import Task
from django.db import connection

from config.celery import app


@app.task(bind=True, name="tests.probe.add")
def add(self: Task, x: int, y: int) -> int:
    return x + y


@app.task(bind=True, name="tests.probe.fails_once", max_retries=3)
def fails_once(self: Task) -> int:
    """Fail on the first run and succeed on the retry; returns how many retries it took."""
    if self.request.retries == 0:
        raise self.retry(exc=RuntimeError("first run fails on purpose"), countdown=0)
    return self.request.retries


@app.task(name="tests.probe.database_backend")
def database_backend() -> int | None:
    """The PostgreSQL backend serving the worker's Django connection (None on SQLite)."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]
