"""The worker behaviours on each in-process pool (threads, gevent, eventlet, asyncio),
with real worker processes on the embedded SQLite broker."""

from __future__ import annotations

import signal
import time
from datetime import datetime, timedelta, timezone

import pytest

from fastq.exceptions import SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded

# the hand-off loop and the pools are the same Python code with or without the speedups
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]

POOLS = ["threads", "gevent", "eventlet", "asyncio"]


def _wait_for_runs(w, task_id: str, count: int = 1, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len(w.runs(task_id)) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(w.runs(task_id)) >= count, w.log()


@pytest.mark.parametrize("pool", POOLS)
def test_results_failures_retries_and_expiry(pool, worker, producer):
    w = worker("-P", pool, "-c", "4")
    from tests.apps.sqlite_app import Boom

    adds = [producer.tasks["t.add"].delay(i, i) for i in range(40)]
    failed = producer.tasks["t.fail"].delay("broken")
    retried = producer.tasks["t.flaky"].delay(2)
    expired = producer.tasks["t.add"].apply_async(
        (1, 1), expires=datetime.now(timezone.utc) - timedelta(seconds=5))
    assert [r.get(timeout=20) for r in adds] == [2 * i for i in range(40)]
    with pytest.raises(Boom):
        failed.get(timeout=20)
    assert "raise Boom(message, 42)" in failed.traceback
    assert retried.get(timeout=20) == 2
    assert [int(r[2]) for r in w.runs(retried.id)] == [0, 1, 2]
    with pytest.raises(TaskRevokedError):
        expired.get(timeout=20)
    assert w.runs(expired.id) == []
    assert "Task t.add[" in w.log() and "] received" in w.log()


@pytest.mark.parametrize("pool", POOLS)
def test_tasks_run_concurrently_up_to_the_concurrency(pool, worker, producer):
    w = worker("-P", pool, "-c", "6")
    results = [producer.tasks["t.sleep"].delay(0.6) for _ in range(6)]
    assert [r.get(timeout=20) for r in results] == [0.6] * 6
    starts = sorted(float(w.runs(r.id)[0][3]) for r in results)
    # all six started before the first could have finished: they ran side by side
    assert starts[-1] - starts[0] < 0.5, starts


@pytest.mark.parametrize("pool", POOLS)
def test_soft_and_hard_time_limits(pool, worker, producer):
    w = worker("-P", pool, "-c", "2")
    assert producer.tasks["t.soft_steps"].delay().get(timeout=20) == "SoftTimeLimitExceeded"
    hard = producer.tasks["t.hard_steps"].delay()
    with pytest.raises(TimeLimitExceeded):
        hard.get(timeout=20)
    assert producer.tasks["t.add"].delay(1, 1).get(timeout=20) == 2
    assert w.proc.poll() is None


@pytest.mark.parametrize("pool", POOLS)
def test_warm_shutdown_finishes_running_tasks_and_returns_the_rest(pool, worker, producer):
    w = worker("-P", pool, "-c", "2", "--prefetch-multiplier", "4")
    running = [producer.tasks["t.sleep"].delay(1.0) for _ in range(2)]
    for r in running:
        _wait_for_runs(w, r.id)
    waiting = [producer.tasks["t.add"].delay(i, 1) for i in range(6)]
    time.sleep(0.3)  # let the worker reserve what it may
    w.signal(signal.SIGTERM)
    assert w.proc.wait(timeout=20) == 0
    assert [r.get(timeout=1) for r in running] == [1.0, 1.0]
    assert all(r.state == "PENDING" for r in waiting)
    assert producer.broker.queue_sizes().get("celery") == 6
    w2 = worker("-P", pool, "-c", "2")
    assert [r.get(timeout=20) for r in waiting] == [i + 1 for i in range(6)]
    assert all(len(w2.runs(r.id)) == 1 for r in waiting)


@pytest.mark.parametrize("pool", POOLS)
def test_cold_shutdown_requeues_the_running_tasks(pool, worker, producer):
    w = worker("-P", pool, "-c", "2")
    results = [producer.tasks["t.sleep"].delay(6.0) for _ in range(2)]
    for r in results:
        _wait_for_runs(w, r.id)
    w.signal(signal.SIGQUIT)
    began = time.monotonic()
    w.proc.wait(timeout=20)
    # the process ends at once, not when the interrupted functions would have returned
    # (the asyncio pool's plain functions once held it open until then)
    assert time.monotonic() - began < 4.0
    assert all(r.state == "PENDING" for r in results)
    worker("-P", pool, "-c", "2")
    assert [r.get(timeout=30) for r in results] == [6.0, 6.0]
    assert all(len(w.runs(r.id)) == 2 for r in results)


@pytest.mark.parametrize("pool", ["threads", "gevent"])
def test_prefetch_zero_takes_a_message_only_when_a_slot_is_free(pool, worker, producer):
    w = worker("-P", pool, "-c", "2", "--prefetch-multiplier", "0")
    long = [producer.tasks["t.sleep"].delay(1.0) for _ in range(2)]
    for r in long:
        _wait_for_runs(w, r.id)
    short = [producer.tasks["t.add"].delay(i, i) for i in range(5)]
    time.sleep(0.3)
    # both slots busy: the short tasks stay in the queue for any other worker to take
    assert producer.broker.queue_sizes().get("celery") == 5
    assert [r.get(timeout=20) for r in short] == [2 * i for i in range(5)]


def test_gevent_runs_a_thousand_sleeping_tasks_at_once(worker, producer):
    worker("-P", "gevent", "-c", "1000")
    started = time.monotonic()
    results = producer.tasks["t.sleep"].delay_many([(0.5,)] * 1000)
    assert [r.get(timeout=30) for r in results] == [0.5] * 1000
    elapsed = time.monotonic() - started
    # one after another this would take 500 s; the issue asks for about 2 s
    assert elapsed < 4.0, elapsed


def test_gevent_reports_a_task_that_blocks_the_hub(worker, producer):
    w = worker("-P", "gevent", "-c", "10")
    blocker = producer.tasks["t.spin"].delay(1.6)
    assert blocker.get(timeout=20) == 1.6
    log = w.log()
    assert "hub has been blocked" in log and f"t.spin[{blocker.id}]" in log, log
    assert producer.tasks["t.add"].delay(2, 2).get(timeout=20) == 4


def test_asyncio_awaits_async_tasks_concurrently_with_limits(worker, producer):
    w = worker("-P", "asyncio", "-c", "50")
    results = [producer.tasks["t.async_sleep"].delay(0.5) for _ in range(50)]
    assert [r.get(timeout=20) for r in results] == [0.5] * 50
    starts = sorted(float(w.runs(r.id)[0][3]) for r in results)
    assert starts[-1] - starts[0] < 0.45, starts
    with pytest.raises(SoftTimeLimitExceeded):
        producer.tasks["t.async_soft"].delay().get(timeout=20)


def test_an_async_task_runs_on_the_solo_pool_too(worker, producer):
    worker()
    assert producer.tasks["t.async_sleep"].delay(0.1).get(timeout=20) == 0.1


@pytest.mark.parametrize("pool", ["threads", "asyncio"])
def test_recycling_restarts_a_pooled_worker_in_place_losing_nothing(pool, worker, producer):
    w = worker("-P", pool, "-c", "4", "--max-tasks-per-child", "25")
    results = [producer.tasks["t.add"].delay(i, i) for i in range(120)]
    assert [r.get(timeout=60) for r in results] == [2 * i for i in range(120)]
    assert all(len(w.runs(r.id)) == 1 for r in results)
    assert "recycling" in w.log()
    assert w.proc.poll() is None  # the same process, restarted in place


@pytest.mark.parametrize("pool", POOLS)
def test_a_revoked_task_waiting_for_a_slot_is_not_run(pool, worker, producer):
    w = worker("-P", pool, "-c", "2", "--prefetch-multiplier", "4")
    busy = [producer.tasks["t.sleep"].delay(2.5) for _ in range(2)]
    for r in busy:
        _wait_for_runs(w, r.id)
    held = producer.tasks["t.add"].delay(1, 2)  # taken and queued in the pool, not started
    time.sleep(0.2)
    held.revoke()  # the worker polls the SQLite control table about once a second
    with pytest.raises(TaskRevokedError, match="revoked"):
        held.get(timeout=20)
    assert [r.get(timeout=20) for r in busy] == [2.5, 2.5]
    assert w.runs(held.id) == []
