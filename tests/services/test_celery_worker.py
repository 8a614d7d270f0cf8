"""The broker path, once, for real: test process -> Redis -> worker -> Redis -> test process."""

import os
import time

import psycopg
import pytest
import redis
from celery import Celery
from celery.backends.redis import RedisBackend
from celery.result import allow_join_result

from tests.services.conftest import Worker
from tests.services.probe_tasks import add, database_backend, fails_once

pytestmark = pytest.mark.services

RESULT_TIMEOUT = 15


def _wait_for_log(worker: Worker, text: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in worker.log_text():
        if time.monotonic() > deadline:
            pytest.fail(f"{text!r} not in the worker log:\n{worker.log_text()}")
        time.sleep(0.05)


def test_a_task_round_trips_through_redis_and_a_worker(
    celery_on_redis: Celery, celery_worker: Worker, redis_url: str
) -> None:
    result = add.delay(2, 3)

    # Eager tasks run concurrently in threads (other tests) can leave Celery's global
    # "inside a task" flag set; this process is not a task.
    with allow_join_result():
        assert result.get(timeout=RESULT_TIMEOUT) == 5
    # Not eager: the result came back through Redis, from the worker process.
    assert isinstance(result.backend, RedisBackend)
    assert redis.Redis.from_url(redis_url).exists(f"celery-task-meta-{result.id}")
    _wait_for_log(worker=celery_worker, text=f"Task tests.probe.add[{result.id}] succeeded")


def test_a_failing_task_is_retried_by_the_worker(
    celery_on_redis: Celery, celery_worker: Worker
) -> None:
    result = fails_once.delay()

    with allow_join_result():
        assert result.get(timeout=RESULT_TIMEOUT) == 1
    _wait_for_log(worker=celery_worker, text=f"Task tests.probe.fails_once[{result.id}] retry")


def test_a_worker_keeps_its_database_connection_and_replaces_one_that_was_dropped(
    celery_on_redis: Celery, celery_worker: Worker
) -> None:
    def backend() -> int | None:
        with allow_join_result():
            return database_backend.delay().get(timeout=RESULT_TIMEOUT)

    first = backend()
    if first is None:
        pytest.skip("the worker's database is SQLite: nothing to reconnect to")
    assert backend() == first, "a new PostgreSQL connection for every task"

    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [first])
    replaced = backend()  # fails if the dead connection were used
    assert replaced is not None and replaced != first
