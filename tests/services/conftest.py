"""Real Redis and Celery worker processes for the broker-path tests.

Everything else runs Celery eagerly; these fixtures exercise what eager mode
hides (serialization, the broker, retries in a worker process).
"""

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from config.celery import app as celery_app
from tests.network import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 30.0


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends SIGTERM if pytest dies, so no orphans."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _spawn(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )


def _stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for(check: Callable[[], bool], proc: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()}")
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"{what} not ready after {STARTUP_TIMEOUT:.0f}s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server on a free loopback port, without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server not found (scripts/test.sh installs it with apt-get)")
    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    log = workdir / "redis.log"
    cmd = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir)]
    cmd += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
    proc = _spawn(cmd, log)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_timeout=1)

    def answers_ping() -> bool:
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return False

    try:
        _wait_for(answers_ping, proc, "redis-server", log)
        yield url
    finally:
        client.close()
        _stop(proc)


def _reset_connections(app: Celery) -> None:
    """Drop the app's cached broker pools and result backend so the next use reads app.conf."""
    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None
    app._backend_cache = None
    with contextlib.suppress(AttributeError):
        del app._local.backend


@pytest.fixture(scope="session")
def celery_on_redis(redis_url: str) -> Iterator[Celery]:
    """The project's Celery app, switched from eager to the Redis broker for this process.

    Settings were imported without REDIS_URL, so the app is eager with a memory
    broker; point it at our Redis and restore it afterwards.
    """
    overrides: dict[str, Any] = {
        "broker_url": redis_url,
        "result_backend": redis_url,
        "task_always_eager": False,
    }
    saved = {key: celery_app.conf.get(key) for key in overrides}
    celery_app.conf.update(overrides)
    _reset_connections(celery_app)
    try:
        yield celery_app
    finally:
        celery_app.conf.update(saved)
        _reset_connections(celery_app)


class Worker:
    def __init__(self, proc: subprocess.Popen, hostname: str, log: Path) -> None:
        self.proc = proc
        self.hostname = hostname
        self.log = log

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def running_worker(
    app: Celery, redis_url: str, log: Path, *options: str, env: dict[str, str] | None = None
) -> Iterator[Worker]:
    """A `celery worker` process consuming from our Redis (`options` added to its
    command line, `env` to its environment), answering pings, stopped on exit."""
    hostname = f"worker-{uuid.uuid4().hex[:8]}@localhost"
    environment = dict(os.environ)
    environment["REDIS_URL"] = redis_url
    # The worker is not under pytest, so settings refuse the development key there.
    environment.setdefault("SECRET_KEY", "services-test-worker-key-not-secret")
    environment["PYTHONUNBUFFERED"] = "1"
    environment["DATABASE_CONN_MAX_AGE"] = "60"  # as docs/operations.md has production run it
    environment.update(env or {})
    cmd = [sys.executable, "-m", "celery", "-A", "config", "worker", *options]
    cmd += ["-l", "info", "-n", hostname, "--without-gossip", "--without-mingle"]
    cmd += ["--without-heartbeat"]
    proc = _spawn(cmd, log, environment)

    def answers_ping() -> bool:
        return bool(app.control.ping(destination=[hostname], timeout=0.5))

    try:
        _wait_for(answers_ping, proc, "celery worker", log)
        yield Worker(proc, hostname, log)
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def celery_worker(
    celery_on_redis: Celery, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """A real `celery worker` process consuming from our Redis, with the probe tasks loaded."""
    log = tmp_path_factory.mktemp("celery") / "worker.log"
    options = ("--pool=solo", "--include", "tests.services.probe_tasks")
    with running_worker(celery_on_redis, redis_url, log, *options) as worker:
        yield worker
