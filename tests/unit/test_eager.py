"""Eager mode runs a task through the worker's own execution path (fastq/execution.py)."""

import threading
import time
import uuid

import pytest

from fastq import App
from fastq.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from fastq.result import EagerResult


@pytest.fixture
def app():
    return App("eager", broker=f"memory://{uuid.uuid4()}", task_always_eager=True)


def test_autoretry_runs_again_until_it_succeeds(app):
    calls = []

    @app.task(autoretry_for=(KeyError,), max_retries=5, bind=True)
    def flaky(self):
        calls.append(self.request.retries)
        if len(calls) < 3:
            raise KeyError("not yet")
        return "done"

    result = flaky.delay()
    assert isinstance(result, EagerResult)
    assert result.get() == "done"
    assert calls == [0, 1, 2]


def test_autoretry_gives_up_after_max_retries_with_the_task_error(app):
    calls = []

    @app.task(autoretry_for=(KeyError,), max_retries=2)
    def always_fails():
        calls.append(1)
        raise KeyError("never")

    result = always_fails.apply()
    assert result.state == "FAILURE"
    assert len(calls) == 3
    with pytest.raises(KeyError):
        result.get()


def test_retry_with_new_arguments_runs_with_them(app):
    seen = []

    @app.task(bind=True, max_retries=3)
    def countdown(self, n):
        seen.append(n)
        if n > 0:
            raise self.retry(args=(n - 1,), countdown=60)
        return "liftoff"

    assert countdown.delay(2).get() == "liftoff"
    assert seen == [2, 1, 0]


def test_chain_runs_every_link_and_returns_the_last_result(app):
    @app.task
    def add(x, y):
        return x + y

    result = (add.s(1, 2) | add.s(3) | add.s(4)).apply_async()
    assert result.get(timeout=1) == 10


def test_link_and_link_error_callbacks_run(app):
    got = []

    @app.task
    def add(x, y):
        return x + y

    @app.task
    def record(value):
        got.append(value)

    @app.task
    def boom():
        raise ValueError("no")

    result = add.apply_async((2, 2), link=record.s())
    assert result.get() == 4
    assert got == [4]
    assert [child.get() for child in result.children] == [None]

    failed = boom.apply_async(link_error=record.s())
    assert failed.state == "FAILURE"
    assert got == [4, failed.id]  # errbacks receive the failed task's id


def test_eager_propagates_raises_the_task_exception(app):
    app.conf.task_eager_propagates = True

    @app.task
    def boom():
        raise ValueError("propagated")

    with pytest.raises(ValueError, match="propagated"):
        boom.delay()


def test_soft_time_limit_reaches_the_task(app):
    @app.task(soft_time_limit=0.1)
    def slow():
        try:
            time.sleep(5)
        except SoftTimeLimitExceeded:
            return "stopped in time"
        return "ran to the end"

    started = time.monotonic()
    assert slow.delay().get() == "stopped in time"
    assert time.monotonic() - started < 2


def test_hard_time_limit_fails_the_task_off_the_main_thread(app):
    @app.task(time_limit=0.2)
    def spin():
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pass

    results = []
    worker = threading.Thread(target=lambda: results.append(spin.delay()))
    worker.start()
    worker.join(10)
    [result] = results
    assert result.state == "FAILURE"
    with pytest.raises(TimeLimitExceeded):
        result.get()


def test_request_context_is_the_workers(app):
    @app.task(bind=True)
    def whoami(self):
        return {"id": self.request.id, "retries": self.request.retries,
                "eager": self.request.is_eager, "root": self.request.root_id}

    result = whoami.apply(task_id="fixed-id")
    assert result.get() == {"id": "fixed-id", "retries": 0, "eager": True, "root": "fixed-id"}


def test_errbacks_follow_celerys_arity_rule_in_eager_mode_too(app):
    """An errback that takes (request, exc, traceback) is called with them, an old
    one-argument errback with the failed id: the worker's rule, decided in Execution."""
    seen = []

    @app.task
    def fails(x):
        raise KeyError(x)

    @app.task
    def on_error(request, exc, traceback):
        seen.append(("new", request.id, request.args, type(exc), "KeyError" in traceback))

    @app.task
    def on_error_by_id(task_id):
        seen.append(("old", task_id))

    result = fails.apply_async((7,), link_error=[on_error.s(), on_error_by_id.s()])
    assert result.state == "FAILURE"
    assert seen == [("new", result.id, [7], KeyError, True), ("old", result.id)]

    seen.clear()
    applied = fails.apply((8,), link_error=on_error.s())
    assert seen == [("new", applied.id, [8], KeyError, True)]


def _chord_tasks(app):
    @app.task
    def add(x, y):
        return x + y

    @app.task
    def tsum(values):
        return sum(values)

    @app.task
    def fails(x):
        raise KeyError(x)

    return add, tsum, fails


def test_a_chord_applied_eagerly_gives_the_bodys_result(app):
    from fastq import chord

    add, tsum, _ = _chord_tasks(app)
    assert chord([add.s(1, 1), add.s(2, 2)], tsum.s()).apply_async().get() == 6
    # .apply() runs celery.chord here: its members are counted as a worker counts them
    assert chord([add.s(1, 1), add.s(2, 2)], tsum.s()).apply().get() == 6
    assert chord([add.s(1, 1), add.s(2, 2) | add.s(10)], tsum.s()).apply().get() == 16


def test_a_chord_applied_without_always_eager_runs_here(app, monkeypatch):
    from fastq import chord

    app.conf.task_always_eager = False
    sent = []
    monkeypatch.setattr(app, "publish_many", sent.extend)
    add, tsum, _ = _chord_tasks(app)
    assert chord([add.s(1, 1), add.s(2, 2)], tsum.s()).apply().get() == 6
    assert sent == []  # nothing went to the broker


def test_a_chord_applied_eagerly_fails_with_its_failed_member(app):
    from fastq import chord
    from fastq.exceptions import ChordError

    add, tsum, fails = _chord_tasks(app)
    with pytest.raises(ChordError, match="KeyError"):
        chord([add.s(1, 1), fails.s(2)], tsum.s()).apply().get()


def test_an_eager_chord_member_counts_in_the_backends_join(app):
    """A member applied with ``chord=`` (as a worker receives it) is counted by the
    result backend, and the last one in runs the body here."""
    app.conf.result_backend = "memory://"
    add, _, _ = _chord_tasks(app)
    joined = []

    @app.task
    def body(values):
        joined.append(values)

    app.backend.set_chord_size("g1", 2)
    add.apply((1, 1), chord=body.s().to_dict(), group_id="g1", group_index=0)
    assert joined == []
    add.apply((2, 2), chord=body.s().to_dict(), group_id="g1", group_index=1)
    assert joined == [[2, 4]]


def test_eager_retry_runs_again_in_place(app):
    @app.task(bind=True, max_retries=3)
    def flaky(self):
        if self.request.retries < 2:
            raise self.retry(countdown=10)
        return self.request.retries

    assert flaky.delay().get() == 2
