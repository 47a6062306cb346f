"""The prefork pool's plain decisions and the worker's task meter, without processes."""

from __future__ import annotations

import threading
import uuid

import pytest

from fastq import App
from fastq.brokers.base import Delivery
from fastq.exceptions import ConfigurationError, TimeLimitExceeded
from fastq.states import FAILURE, STARTED
from fastq.worker.executor import Executor
from fastq.worker.lifecycle import TaskMeter, TaskObserver, finished_before, resident_kib
from fastq.worker.pools import pool_class
from fastq.worker.pools.prefork import Autoscaler, ChildProcess, PreforkPool, parse_autoscale
from fastq.worker.stacks import format_stacks


class _Process:
    pid = 0


def child(busy: float = 0.0, idle_since: float | None = None, ready: bool = True) -> ChildProcess:
    c = ChildProcess(_Process(), None, 0)  # type: ignore[arg-type]
    c.ready, c.busy_fraction, c.idle_since = ready, busy, idle_since
    return c


def test_pool_class_finds_prefork_whose_parent_runs_no_jobs():
    assert pool_class("prefork") is PreforkPool
    with pytest.raises(TypeError, match="children run their own consumers"):
        PreforkPool().submit([], lambda: False)
    assert PreforkPool().completions() == []


def test_autoscale_grows_only_when_every_child_is_busy():
    scaler = Autoscaler(3, 1, keepalive=5.0, grow_interval=1.0)
    assert scaler.decide([child(0.95), child(0.5)], now=10.0) is None
    assert scaler.decide([child(0.95), child(0.99)], now=10.0) == ("grow", None)
    # not again within the interval, nor past the maximum
    assert scaler.decide([child(1.0), child(1.0)], now=10.5) is None
    assert scaler.decide([child(1.0)] * 3, now=20.0) is None
    # a child that has not consumed yet does not count as busy
    assert scaler.decide([child(1.0), child(ready=False)], now=30.0) is None


def test_autoscale_shrinks_the_longest_idle_child_after_keepalive():
    scaler = Autoscaler(3, 1, keepalive=5.0)
    early, late = child(idle_since=1.0), child(idle_since=3.0)
    assert scaler.decide([early, late], now=5.5) is None
    assert scaler.decide([early, late], now=8.5) == ("shrink", early)
    assert scaler.decide([early], now=100.0) is None  # never below the minimum
    assert scaler.decide([], now=100.0) == ("grow", None)


@pytest.mark.parametrize("text,expected", [("10,3", (10, 3)), ("3,10", (10, 3)),
                                           ("4", (4, 1)), ("2,0", (2, 1))])
def test_parse_autoscale(text, expected):
    assert parse_autoscale(text) == expected


@pytest.mark.parametrize("text", ["", "a,b", "1,2,3", "0"])
def test_parse_autoscale_rejects_nonsense(text):
    with pytest.raises(ConfigurationError, match="autoscale"):
        parse_autoscale(text)


@pytest.fixture
def app():
    app = App("meter", broker=f"memory://{uuid.uuid4()}")

    @app.task(name="m.add")
    def add(x, y):
        return x + y

    @app.task(name="m.limited", time_limit=5)
    def limited():
        return 1

    yield app
    app.close()


def _run(executor, app, name, args=()):
    from fastq.task import Request

    request = Request({"id": str(uuid.uuid4()), "task": name, "retries": 0}, list(args), {},
                      {}, None, "t")
    return executor.run(app.tasks[name], request), request


def test_meter_calls_on_limit_once_after_the_task_that_reaches_max_tasks(app):
    executor = Executor(app, "t")
    reasons = []
    meter = TaskMeter(executor, max_tasks=3, on_limit=reasons.append)
    for _ in range(5):
        _run(executor, app, "m.add", (1, 2))
    assert meter.done == 5 and reasons == ["3 tasks done (max-tasks-per-child=3)"]
    assert meter.busy_seconds > 0 and meter.running_since == 0.0


def test_meter_memory_limit(app):
    executor = Executor(app, "t")
    reasons = []
    TaskMeter(executor, max_memory_kib=1, on_limit=reasons.append)
    _run(executor, app, "m.add", (1, 2))
    assert len(reasons) == 1 and "max-memory-per-child=1 KiB" in reasons[0]
    assert resident_kib() > 1000


def test_meter_reports_hard_limited_tasks_only(app):
    events = []

    class Observer(TaskObserver):
        def task_started(self, task_id, name, hard_limit):
            events.append(("start", name, hard_limit))

        def task_ended(self, task_id):
            events.append(("end",))

    executor = Executor(app, "t")
    TaskMeter(executor, observer=Observer())
    _run(executor, app, "m.add", (1, 2))
    _run(executor, app, "m.limited")
    assert events == [("start", "m.limited", 5), ("end",)]


def test_finished_before_reads_the_backend_for_ready_states(app):
    app.conf.result_backend = f"memory://{uuid.uuid4()}"
    executor = Executor(app, "t")
    done, started, unknown = (str(uuid.uuid4()) for _ in range(3))
    app.backend.store(done, FAILURE, TimeLimitExceeded(0.3))
    app.backend.store(started, STARTED, {"pid": 1})

    def delivery(task_id):
        return Delivery(1, {"id": task_id, "task": "m.add"}, {}, b"", "celery", 1)

    assert finished_before(executor, delivery(done)) == FAILURE
    assert finished_before(executor, delivery(started)) is None
    assert finished_before(executor, delivery(unknown)) is None


def test_stacks_name_every_thread():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="the-waiter", daemon=True)
    thread.start()
    try:
        text = format_stacks()
    finally:
        stop.set()
    assert "--- thread MainThread" in text and "--- thread the-waiter" in text
    # the waiter's own section shows where it blocks: Event.wait, then the lock acquire
    waiter = text.split("--- thread the-waiter", 1)[1].split("--- thread", 1)[0]
    assert ", in wait\n" in waiter and "waiter.acquire()" in waiter
