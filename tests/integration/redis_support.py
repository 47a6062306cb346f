"""Helpers for tests against Redis: the shared server, key cleanup, and a private server."""

from __future__ import annotations

import contextlib
import importlib
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from tests import servers

#: The shared server and the DB number the tests use (keys are also prefixed per test).
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 9
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"


def require_redis() -> None:
    """Skip locally, fail in CI, when no Redis answers (ci/services.sh starts one)."""
    servers.require("Redis", REDIS_PORT)


def delete_keys(pattern: str, url: str = REDIS_URL) -> None:
    """Delete every key matching ``pattern`` (a test's prefix + ``*``)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def unique_prefix() -> str:
    return f"fastqtest:{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix unique to the test; every key under it is deleted afterwards."""
    require_redis()
    prefix = unique_prefix()
    yield prefix
    delete_keys(prefix + "*")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A ``redis-server`` of the test's own, on a free loopback port, without persistence."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        if self.binary is None:
            pytest.fail("redis-server is not installed; `bash ci/test.sh` installs it")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise AssertionError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@contextlib.contextmanager
def example_on_redis(module_name: str, prefix: str, sqlite_env: tuple,
                     monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple]:
    """``examples.<module>`` imported afresh with broker and results on this test's Redis
    keys (``prefix``), and a worker process for it, not started: ``(module, worker,
    sent)``; the task ids appended to ``sent`` have their results deleted afterwards."""
    from tests.integration.conftest import WorkerProcess

    tmp_path, _url, run_log, env = sqlite_env
    settings = {"FASTQ_BROKER_URL": f"{REDIS_URL}?global_keyprefix={prefix}",
                "FASTQ_RESULT_BACKEND": REDIS_URL}
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    env.update(settings)
    sys.modules.pop(module_name, None)
    module = importlib.import_module(module_name)
    worker = WorkerProcess(tmp_path, settings["FASTQ_BROKER_URL"], run_log, env)
    worker.app_module = module_name
    sent: list[str] = []
    try:
        yield module, worker, sent
    finally:
        worker.stop()
        module.fastq_app.close()
        for task_id in sent:
            delete_keys(f"celery-task-meta-{task_id}")
