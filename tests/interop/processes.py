"""A worker subprocess (fastq or Celery) for interop tests, its output kept in a file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Proc:
    """A worker subprocess whose output goes to a file the test can read."""

    def __init__(self, argv: list[str], env: dict, log_path: str) -> None:
        self.log_path = log_path
        # Celery 5.7 takes about 7 s to exit even on SIGQUIT; the tests have checked all
        # they need by then (its log is written line by line), so a Celery worker is killed
        self._stop_signal = (signal.SIGKILL if os.path.basename(argv[0]) == "celery"
                             else signal.SIGTERM)
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def wait_until(self, ready, timeout: float = 20) -> None:
        """Poll ``ready()`` until true; fail with the worker's log if it exits or stalls."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.log()}")
            if ready():
                return
            time.sleep(0.05)
        raise AssertionError(f"not done after {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(self._stop_signal)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def read_health(path: str) -> dict:
    """A worker's health file, or {} while it is missing or half written."""
    try:
        with open(path, "rb") as fh:
            return orjson.loads(fh.read())
    except (OSError, ValueError):
        return {}


def start_fastq_worker(app: str, queue: str, env: dict, log_path: str, health_path: str,
                       *extra: str) -> Proc:
    """A ``fastq worker -A app -Q queue`` process, returned once it consumes."""
    worker = Proc([sys.executable, "-m", "fastq.cli", "worker", "-A", app, "-Q", queue,
                   "-l", "info", "--health-file", health_path, *extra], env, log_path)
    try:
        worker.wait_until(lambda: read_health(health_path).get("state") == "consuming")
    except BaseException:
        worker.stop()
        raise
    return worker


def run_client_against_fastq_worker(client: str, app: str, queue: str, env: dict,
                                    tmp_path) -> tuple[str, str]:
    """Start a fastq worker for ``app`` on ``queue``, run the Python program ``client``
    (``queue`` as its argument) to its end; (the client's output, the worker's log).
    The client exiting non-zero fails the test with both."""
    worker = start_fastq_worker(app, queue, env, str(tmp_path / "fastq-worker.log"),
                                str(tmp_path / "worker.json"))
    try:
        done = subprocess.run([sys.executable, "-c", client, queue], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr + worker.log()
        return done.stdout, worker.log()
    finally:
        worker.stop()
