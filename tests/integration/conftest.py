"""Fixtures that run real worker processes against a SQLite broker in a temp dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson
import pytest

# Django's settings are set up once per session, for every module that uses Django
from tests.integration.django_support import (  # noqa: F401 - fixtures
    django_databases,
    django_project_databases,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class WorkerProcess:
    """A ``fastq worker`` subprocess and the files it shares with the test."""

    #: The ``-A`` module the worker runs.
    app_module = "tests.apps.sqlite_app"

    def __init__(self, workdir, url: str, run_log: str, env: dict) -> None:
        self.workdir = workdir
        self.url = url
        self.run_log = run_log
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.health_file = str(workdir / "workers" / f"w-{id(self)}.json")
        self.log_file = str(workdir / "worker.log")
        self._log = None

    def start(self, *extra: str, wait: bool = True) -> WorkerProcess:
        if os.path.exists(self.health_file):
            os.unlink(self.health_file)
        if getattr(self, "_log", None) is not None:
            self._log.close()
        self._log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastq.cli", "worker", "-A", self.app_module,
             "-l", "info", "--health-file", self.health_file, *extra],
            env=self.env, cwd=str(self.workdir), stdout=self._log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_consuming()
        return self

    def wait_consuming(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.log()}")
            try:
                with open(self.health_file, "rb") as fh:
                    if orjson.loads(fh.read())["state"] == "consuming":
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        raise AssertionError(f"worker did not start:\n{self.log()}")

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30) -> int:
        try:
            if self.proc is None or self.proc.poll() is not None:
                return self.proc.returncode if self.proc else 0
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def log(self) -> str:
        try:
            with open(self.log_file, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def runs(self, task_id: str | None = None) -> list[list[str]]:
        try:
            with open(self.run_log) as fh:
                rows = [line.split() for line in fh if line.strip()]
        except FileNotFoundError:
            return []
        return [r for r in rows if task_id is None or r[0] == task_id]


def read_runs(path) -> list[list[str]]:
    """The rows of a run log (tests/apps' ``_record``): task id, name, retries, time and
    the arguments' repr, which may hold spaces; none before the first run."""
    try:
        with open(path) as fh:
            return [line.split(None, 4) for line in fh if line.strip()]
    except FileNotFoundError:
        return []


def amqp_worker_setup(tmp_path, queue: str, url: str) -> tuple[dict, str]:
    """The environment of worker processes on ``queue`` at ``url`` with results in a
    SQLite file of ``tmp_path`` (and their run log there), and that results URL."""
    results = f"sqlite:///{tmp_path / 'results.sqlite3'}"
    env = dict(os.environ, FASTQ_BROKER_URL=url, FASTQ_RESULT_BACKEND=results,
               FASTQ_TASK_DEFAULT_QUEUE=queue, FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"),
               FASTQ_TEST_RUN_LOG=str(tmp_path / "runs.log"),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    return env, results


@pytest.fixture
def sqlite_env(tmp_path, monkeypatch):
    """FASTQ_* settings pointing producer and workers at a fresh broker file."""
    url = f"sqlite:///{tmp_path / 'broker.sqlite3'}"
    run_log = str(tmp_path / "runs.log")
    values = {
        "FASTQ_BROKER_URL": url,
        "FASTQ_BROKER_LEASE_SECONDS": "1.5",
        "FASTQ_WORKER_STATE_DIR": str(tmp_path / "workers"),
        "FASTQ_TEST_RUN_LOG": run_log,
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return tmp_path, url, run_log, env


@pytest.fixture
def worker(sqlite_env):
    """A worker process factory; every started worker is stopped after the test."""
    tmp_path, url, run_log, env = sqlite_env
    started: list[WorkerProcess] = []

    def make(*extra: str, wait: bool = True) -> WorkerProcess:
        w = WorkerProcess(tmp_path, url, run_log, env)
        started.append(w)
        return w.start(*extra, wait=wait)

    yield make
    for w in started:
        w.stop()


@pytest.fixture
def producer(sqlite_env):
    """The test task module's app, re-imported so it reads this test's broker URL."""
    import importlib
    import sys

    sys.modules.pop("tests.apps.sqlite_app", None)
    module = importlib.import_module("tests.apps.sqlite_app")
    yield module.app
    module.app.close()
