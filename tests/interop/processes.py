"""A worker subprocess (fastq or Celery) for interop tests, its output kept in a file."""

from __future__ import annotations

import os
import signal
import subprocess
import time

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
