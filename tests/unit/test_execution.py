"""The one execution path (fastq/execution.py) as a worker's Executor runs it."""

from __future__ import annotations

import asyncio
import logging
import uuid

from fastq import App
from fastq.execution import Execution
from fastq.task import Request
from fastq.worker.executor import Executor


def _run(app, task, args=(), embed=None, run_async=False):
    executor = Executor(app, "test@host")
    message = app.build_message(task.name, args, {})
    request = Request(dict(message.headers), list(args), {}, embed or {}, None, "test@host")
    if run_async:
        outcome = asyncio.run(executor.run_async(task, request))
    else:
        outcome = executor.run(task, request)
    return outcome, request, list(executor.pending_results)


def test_a_run_that_sends_nothing_stores_no_children_and_makes_no_list():
    app = App("ex", broker=f"memory://{uuid.uuid4()}")

    @app.task
    def noop():
        return 1

    outcome, request, records = _run(app, noop)
    assert outcome == ("ack", None)
    assert request._children is None  # nothing made for a task that sends nothing
    assert records == [(request.id, "SUCCESS", 1, None, None)]


def test_the_tasks_a_run_sends_are_stored_as_its_children():
    app = App("ex", broker=f"memory://{uuid.uuid4()}")

    @app.task
    def add(x, y):
        return x + y

    @app.task
    def spawn():
        return add.delay(1, 1).id

    for run_async in (False, True):
        _, request, records = _run(app, spawn, run_async=run_async)
        (record,) = records
        assert record[4] == {"children": [[[record[2], None], None]]}
        assert [child.id for child in request.children] == [record[2]]


def test_run_async_awaits_an_async_task_on_the_running_loop():
    app = App("ex", broker=f"memory://{uuid.uuid4()}")

    @app.task(bind=True)
    async def current(self):
        await asyncio.sleep(0)
        return self.request.id

    _, request, records = _run(app, current, run_async=True)
    assert records == [(request.id, "SUCCESS", request.id, None, None)]


def test_errbacks_are_not_children_of_the_failed_result_in_either_mode():
    """The outcome names what was sent before it was recorded: callbacks, not errbacks
    (as Celery, which stores a failure before it calls the errbacks)."""
    app = App("ex", broker=f"memory://{uuid.uuid4()}")

    @app.task
    def fails():
        raise KeyError("no")

    @app.task
    def by_id(task_id):
        return task_id

    executor = Executor(app, "test@host")
    executor.send_children = lambda request, children: request.add_child(object())
    message = app.build_message(fails.name, (), {}, link_error=[by_id.s()])
    request = Request(dict(message.headers), [], {}, {"errbacks": [by_id.s()]}, None,
                      "test@host")
    executor.run(fails, request)
    (record,) = executor.pending_results
    assert record[1] == "FAILURE" and record[4] is None
    assert len(request.children) == 1  # the errback was sent, after the record

    eager = fails.apply(link_error=by_id.s(), throw=False)
    assert eager.state == "FAILURE" and eager.children == []


def test_received_and_succeeded_are_logged_at_the_level_set_before_the_worker_starts(caplog):
    app = App("ex", broker=f"memory://{uuid.uuid4()}")

    @app.task
    def noop():
        return 1

    for level, logged in ((logging.WARNING, []), (logging.INFO, ["received", "succeeded"])):
        caplog.clear()
        caplog.set_level(level, logger="fastq.worker")
        _run(app, noop)
        assert [r.getMessage().split("] ")[1].split()[0] for r in caplog.records
                if r.name == "fastq.worker"] == logged


def test_started_is_stored_for_a_tracked_task_unless_its_result_is_ignored():
    app = App("ex", broker=f"memory://{uuid.uuid4()}")

    @app.task(track_started=True)
    def tracked():
        return 1

    @app.task
    def untracked():
        return 1

    def states(task, ignore_result):
        executor = Execution(app.conf, "test@host")  # its store_now keeps STARTED in hand
        headers = {**app.build_message(task.name, (), {}).headers,
                   "ignore_result": ignore_result}
        executor.run(task, Request(headers, [], {}, {}, None, "test@host"))
        return [record[1] for record in executor.pending_results]

    assert states(tracked, False) == ["STARTED", "SUCCESS"]
    assert states(tracked, True) == [] and states(untracked, False) == ["SUCCESS"]
    app.conf.task_track_started = True
    assert states(untracked, False) == ["STARTED", "SUCCESS"] and states(untracked, True) == []
