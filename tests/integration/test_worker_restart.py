"""A single-process worker recycles and restarts in place: same pid, nothing lost."""

from __future__ import annotations

import collections
import signal
import time

import pytest

# supervision around the same consumer the solo tests run on both twins
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]


def _wait_for(predicate, w, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}:\n{w.log()}")


def test_max_tasks_per_child_re_executes_the_solo_worker(worker, producer):
    w = worker("--max-tasks-per-child", "150", "--prefetch-multiplier", "16")
    pid = w.proc.pid
    count = 600
    results = producer.tasks["t.add"].delay_many([(i, 0) for i in range(count)])
    assert [r.get(timeout=60) for r in results] == list(range(count))
    counts = collections.Counter(row[0] for row in w.runs())
    assert len(counts) == count and set(counts.values()) == {1}
    restarts = w.log().count("recycling: 150 tasks done (max-tasks-per-child=150)")
    assert restarts >= count // 150 - 1
    # a fresh banner per run (the last one may still be starting)
    _wait_for(lambda: w.log().count(" ready: ") == restarts + 1, w, "the last restart")
    assert w.proc.poll() is None and w.proc.pid == pid
    assert producer.tasks["t.pid"].delay().get(timeout=20) == pid


def test_sighup_restarts_a_solo_worker_in_place(worker, producer):
    w = worker()
    w.signal(signal.SIGHUP)
    _wait_for(lambda: w.log().count(" ready: ") == 2, w, "the second banner")
    assert "restart (SIGHUP)" in w.log()
    assert producer.tasks["t.pid"].delay().get(timeout=20) == w.proc.pid
    w.signal(signal.SIGTERM)
    assert w.proc.wait(timeout=20) == 0


def test_sigusr1_dumps_the_stacks_of_a_solo_worker(worker):
    w = worker()
    w.signal(signal.SIGUSR1)
    _wait_for(lambda: f"stacks of process {w.proc.pid}:" in w.log(), w, "the dump")
    log = w.log()
    assert "--- thread MainThread" in log and "fastq-health" in log
    assert w.proc.poll() is None
