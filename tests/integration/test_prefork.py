"""The prefork pool as real processes on a SQLite broker: the shared worker behaviours,
children killed, recycled, restarted and autoscaled, signals, the hard limit backstop."""

from __future__ import annotations

import collections
import os
import re
import signal
import time

import orjson
import pytest

from tests.integration.test_worker_sqlite import (  # noqa: F401 - run here under prefork
    test_an_expired_task_is_revoked_not_run,
    test_autoretry_gives_up_after_max_retries,
    test_countdown_runs_no_earlier_than_asked,
    test_failure_reraises_the_same_exception_with_the_remote_traceback,
    test_hard_time_limit_ends_the_task_and_stores_time_limit_exceeded,
    test_poison_messages_are_dead_lettered_and_the_worker_keeps_running,
    test_results_come_back,
    test_retry_republishes_with_incremented_retries,
    test_soft_time_limit_raises_inside_the_task,
)

# supervision around the same consumer the solo tests run on both twins
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]

PREFORK = ("-P", "prefork", "-c", "2")


@pytest.fixture(autouse=True)
def _short_autoscale_keepalive(monkeypatch):
    # set before the worker fixture copies the environment
    monkeypatch.setenv("FASTQ_WORKER_AUTOSCALE_KEEPALIVE", "1")


@pytest.fixture
def worker(worker):
    """The shared tests' worker, as a prefork parent with two children."""

    def make(*extra: str, wait: bool = True):
        return worker(*PREFORK, *extra, wait=wait)

    return make


def health(w) -> dict:
    with open(w.health_file, "rb") as fh:
        return orjson.loads(fh.read())


def wait_for(predicate, timeout: float = 20, what: str = "", w=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (OSError, ValueError, KeyError):
            value = None
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{w.log()}" if w else ""))


def child_pids(w) -> list[int]:
    return [c["pid"] for c in health(w)["children"]]


def run_counts(w) -> collections.Counter:
    return collections.Counter(row[0] for row in w.runs())


def test_banner_and_health_describe_the_children(worker, producer):
    w = worker()
    line = next(x for x in w.log().splitlines() if " ready: " in x)
    assert "pool=prefork children=2 start_method=fork" in line
    report = health(w)
    assert report["pool"] == "prefork" and report["pid"] == w.proc.pid
    children = report["children"]
    assert len(children) == 2 and all(c["state"] == "consuming" for c in children)
    assert w.proc.pid not in {c["pid"] for c in children}
    from click.testing import CliRunner

    from fastq.cli import main

    out = CliRunner().invoke(main, ["status", "-A", "tests.apps.sqlite_app"])
    assert out.exit_code == 0, out.output
    for c in children:
        assert f"child pid={c['pid']} consuming tasks=" in out.output


def test_second_sigterm_is_a_cold_shutdown_that_requeues_the_running_task(worker, producer):
    w = worker()
    result = producer.tasks["t.sleep"].delay(1.5)
    wait_for(lambda: w.runs(result.id), what="the task to start", w=w)
    w.signal(signal.SIGTERM)
    time.sleep(0.1)
    w.signal(signal.SIGTERM)
    assert w.proc.wait(timeout=20) == 0
    assert "cold shutdown (SIGTERM)" in w.log() and result.state == "PENDING"
    worker()
    assert result.get(timeout=30) == 1.5


def test_both_children_take_work(worker, producer):
    w = worker("--prefetch-multiplier", "1")
    results = [producer.tasks["t.sleep"].delay(0.3) for _ in range(6)]
    assert [r.get(timeout=20) for r in results] == [0.3] * 6
    wait_for(lambda: all(c["tasks"] > 0 for c in health(w)["children"]), 5, "reports", w)
    pid = producer.tasks["t.pid"].delay().get(timeout=20)
    assert pid in child_pids(w)


def test_kill_9_of_a_child_mid_task_runs_it_once_more_and_replaces_the_child(worker, producer):
    w = worker()
    before = set(child_pids(w))
    result = producer.tasks["t.sleep"].delay(2.0)
    holder = wait_for(lambda: next((c["pid"] for c in health(w)["children"]
                                    if c["running"] == result.id), None), 10, "the start", w)
    wait_for(lambda: w.runs(result.id), 10, "the task body", w)
    os.kill(holder, signal.SIGKILL)
    assert result.get(timeout=30) == 2.0  # redelivered once the 1.5 s lease lapsed
    assert len(w.runs(result.id)) == 2
    assert f"child {holder} died (killed by SIGKILL) while running task {result.id}" in w.log()
    after = wait_for(lambda: len(child_pids(w)) == 2 and set(child_pids(w)), what="replacement")
    assert holder not in after and len(after & before) == 1
    assert w.proc.poll() is None


def test_recycling_after_k_tasks_loses_and_duplicates_nothing(worker, producer):
    w = worker("--max-tasks-per-child", "500", "--prefetch-multiplier", "16")
    count = 10_000  # the issue: K tasks per child over 10K tasks
    results = producer.tasks["t.add"].delay_many([(i, 1) for i in range(count)])
    assert [r.get(timeout=60) for r in results] == [i + 1 for i in range(count)]
    counts = run_counts(w)
    assert len(counts) == count and set(counts.values()) == {1}
    recycled = re.findall(r"child \d+ recycled: (\d+) tasks done", w.log())
    assert len(recycled) >= count // 500 - 2
    assert all(int(n) == 500 for n in recycled)
    assert producer.broker.queue_sizes().get("celery", 0) == 0
    assert w.proc.poll() is None


def test_recycling_on_memory(worker, producer):
    w = worker("--max-memory-per-child", "100000")  # KiB
    first = producer.tasks["t.hog"].delay(100).get(timeout=20)
    wait_for(lambda: f"child {first} recycled: resident size" in w.log(), 10, "recycle", w)
    wait_for(lambda: first not in child_pids(w) and len(child_pids(w)) == 2, 10, "replaced", w)
    assert producer.tasks["t.add"].delay(1, 2).get(timeout=20) == 3


def test_warm_shutdown_under_load_loses_nothing(worker, producer):
    w = worker("--prefetch-multiplier", "8")
    count = 400
    results = producer.tasks["t.sleep"].delay_many([(0.002,)] * count)
    wait_for(lambda: len(w.runs()) > 50, what="some progress", w=w)
    w.signal(signal.SIGTERM)
    assert w.proc.wait(timeout=20) == 0
    done_by_first = run_counts(w)
    assert len(done_by_first) < count, "stopped too late to test anything"
    w2 = worker()
    assert [r.get(timeout=60) for r in results] == [0.002] * count
    counts = run_counts(w2)
    assert len(counts) == count and set(counts.values()) == {1}


def test_sighup_replaces_the_children_and_the_parent_stays(worker, producer):
    w = worker()
    before = set(child_pids(w))
    w.signal(signal.SIGHUP)
    wait_for(lambda: health(w)["state"] == "consuming" and len(child_pids(w)) == 2
             and not set(child_pids(w)) & before, what="new children", w=w)
    assert producer.tasks["t.add"].delay(2, 3).get(timeout=20) == 5
    assert w.proc.poll() is None and health(w)["pid"] == w.proc.pid


def test_sigusr1_dumps_the_stacks_of_parent_and_children(worker):
    w = worker()
    pids = child_pids(w)
    w.signal(signal.SIGUSR1)
    for pid in (w.proc.pid, *pids):
        wait_for(lambda pid=pid: f"stacks of process {pid}:" in w.log(), 10, f"{pid}", w)
    assert "--- thread MainThread" in w.log()
    assert w.proc.poll() is None


def test_spawn_start_method(worker, producer):
    w = worker("--start-method", "spawn")
    assert "start_method=spawn" in w.log()
    assert [r.get(timeout=30) for r in [producer.tasks["t.add"].delay(i, i)
                                        for i in range(20)]] == [2 * i for i in range(20)]
    from tests.apps.sqlite_app import Boom

    with pytest.raises(Boom):
        producer.tasks["t.fail"].delay("spawned").get(timeout=20)


def test_hard_limit_backstop_kills_a_child_stuck_outside_python(worker, producer):
    w = worker()
    from fastq.exceptions import TimeLimitExceeded

    result = producer.tasks["t.stuck"].delay(30)
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=20)
    wait_for(lambda: "killed at the hard time limit of t.stuck" in w.log(), 5, "the kill", w)
    # the message comes back when the lease lapses, and is acked, not run
    wait_for(lambda: "redelivered but already FAILURE" in w.log(), 10, "redelivery", w)
    assert len(w.runs(result.id)) == 1
    assert producer.broker.queue_sizes().get("celery", 0) == 0
    assert producer.tasks["t.add"].delay(1, 1).get(timeout=20) == 2
    assert w.proc.poll() is None


def test_autoscale_grows_when_busy_and_shrinks_when_idle(worker, producer):
    w = worker("--autoscale", "3,1", "--prefetch-multiplier", "1")
    assert "children=1..3 (autoscale)" in w.log()
    assert len(child_pids(w)) == 1
    results = producer.tasks["t.sleep"].delay_many([(0.25,)] * 40)
    wait_for(lambda: len(child_pids(w)) == 3, 20, "growth to 3 children", w)
    assert [r.get(timeout=30) for r in results] == [0.25] * 40
    wait_for(lambda: len(child_pids(w)) == 1, 20, "shrinking back to 1", w)
    assert "autoscale: child" in w.log()
