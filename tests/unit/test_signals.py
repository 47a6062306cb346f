"""fastq.signals: Celery's Signal API, and the task signals and Task hooks observed the same
way in a worker (memory broker, the consumer loop in a thread) and in eager mode."""

from __future__ import annotations

import gc
import logging
import os
import threading
import uuid

import pytest

from fastq import App, Task, execution, signals
from fastq.worker import _consumer_py
from fastq.worker.executor import Executor
from fastq.worker.pools.solo import SoloPool

# -- the Signal API ---------------------------------------------------------------------


def test_connect_as_decorator_with_and_without_arguments_and_send_returns_responses():
    signal = signals.Signal("test")

    @signal.connect
    def plain(sender=None, **kwargs):
        return ("plain", sender, kwargs["value"])

    @signal.connect(sender="only-this")
    def filtered(sender=None, **kwargs):
        return "filtered"

    assert plain.__name__ == "plain"  # the decorator leaves the function as it was
    assert signal.send(sender="other", value=1) == [(plain, ("plain", "other", 1))]
    assert signal.send(sender="only-this", value=2) == [
        (plain, ("plain", "only-this", 2)), (filtered, "filtered")]
    assert signal.disconnect(plain) is True
    assert signal.disconnect(plain) is False
    assert signal.send(sender="other", value=3) == []


def test_receivers_are_weak_by_default_and_dispatch_uid_connects_once():
    signal = signals.Signal("test")

    def make():
        def receiver(**kwargs):
            return "alive"
        return receiver

    receiver = make()
    signal.connect(receiver)
    assert signal.send(None) == [(receiver, "alive")]
    del receiver
    gc.collect()
    assert signal.send(None) == []
    assert signal.receivers == []  # the dead reference is gone, the list the same object

    strong = make()
    signal.connect(strong, weak=False, dispatch_uid="one")
    signal.connect(make(), weak=False, dispatch_uid="one")  # same uid: ignored
    assert len(signal.send(None)) == 1
    assert signal.disconnect(dispatch_uid="one") is True

    class Holder:
        def method(self, **kwargs):
            return "method"

    holder = Holder()
    signal.connect(holder.method)  # a bound method is held by WeakMethod, not dropped at once
    assert signal.send(None) == [(holder.method, "method")]
    del holder
    gc.collect()
    assert signal.send(None) == []


def test_a_receiver_that_raises_is_logged_and_its_exception_returned(caplog):
    signal = signals.Signal("test")
    error = RuntimeError("receiver bug")

    def bad(**kwargs):
        raise error

    def good(**kwargs):
        return "ok"

    signal.connect(bad, weak=False)
    signal.connect(good, weak=False)
    with caplog.at_level(logging.ERROR, logger="fastq.signals"):
        assert signal.send(None) == [(bad, error), (good, "ok")]
    assert "receiver bug" in caplog.text


def test_a_receiver_must_accept_keyword_arguments():
    with pytest.raises(ValueError, match="keyword arguments"):
        signals.Signal("test").connect(lambda sender: None, weak=False)


def test_every_celery_signal_name_is_there():
    names = ["before_task_publish", "after_task_publish", "task_received", "task_prerun",
             "task_postrun", "task_success", "task_failure", "task_retry", "task_revoked",
             "task_rejected", "task_unknown", "task_internal_error", "worker_init",
             "worker_process_init", "worker_process_shutdown", "worker_ready",
             "worker_shutting_down", "worker_shutdown", "celeryd_init",
             "celeryd_after_setup", "setup_logging", "after_setup_logger",
             "after_setup_task_logger", "import_modules", "heartbeat_sent", "beat_init",
             "beat_embedded_init"]
    for name in names:
        assert isinstance(getattr(signals, name), signals.Signal), name
        assert name in signals.__all__


def test_the_hot_path_holds_the_receiver_lists_themselves():
    # execution.py tests ``if _PRERUN:`` and nothing else when no one listens: that only
    # works while connect/disconnect change the very list it bound at import.
    assert execution._PRERUN is signals.task_prerun.receivers
    assert execution._POSTRUN is signals.task_postrun.receivers

    def receiver(**kwargs):
        pass

    signals.task_prerun.connect(receiver)
    try:
        assert execution._PRERUN
    finally:
        signals.task_prerun.disconnect(receiver)
    assert not execution._PRERUN
    assert execution._PRERUN is signals.task_prerun.receivers


def _calls_of_one_run(app, task):
    """The Python functions and the number of C calls one no-op run makes."""
    import collections
    import sys

    from fastq.task import Request

    executor = Executor(app, "calls@test")
    message = app.build_message(task.name, (1,), {})

    def one():
        executor.run(task, Request(dict(message.headers), [1], {}, {}, None, "calls@test"))
        executor.pending_results.clear()

    for _ in range(3):
        one()
    seen: collections.Counter = collections.Counter()

    def profile(frame, event, arg):
        if event == "call":
            name = frame.f_code.co_qualname
            seen[frame.f_code.co_name if "<locals>" in name else name] += 1
        elif event == "c_call":
            seen["<C calls>"] += 1

    sys.setprofile(profile)
    try:
        one()
    finally:
        sys.setprofile(None)
    return seen


def test_no_receiver_and_no_hook_means_no_extra_call_per_run():
    app = App("calls", broker=f"memory://{uuid.uuid4()}")

    @app.task
    def noop(x):
        return None

    quiet = _calls_of_one_run(app, noop)
    assert set(quiet) == {"one", "Request.__init__", "Execution.run", "Execution._begin",
                          "time_limits", "Task.push_request", "Execution._invoke", "noop",
                          "Execution._succeeded", "Executor._extended", "<C calls>"}

    def receiver(**kwargs):
        pass

    signals.task_postrun.connect(receiver)
    try:
        listened = _calls_of_one_run(app, noop)
    finally:
        signals.task_postrun.disconnect(receiver)
    assert listened["Signal.send"] == 1 and listened["receiver"] == 1
    assert quiet["<C calls>"] < listened["<C calls>"]


def test_a_plain_task_class_has_no_hooks_to_call():
    class OnlySuccess(Task):
        def on_success(self, retval, task_id, args, kwargs):
            pass

    class OnlyCall(Task):
        def __call__(self, *args, **kwargs):
            return super().__call__(*args, **kwargs)

    app = App("plain", broker="memory://")
    plain, hooked, called = (app.task(base=base)(lambda: None)
                             for base in (Task, OnlySuccess, OnlyCall))
    assert plain._plain and not Task._hooks and not Task._custom_call
    assert not hooked._plain and OnlySuccess._hooks and not OnlySuccess._custom_call
    assert not called._plain and OnlyCall._custom_call and not OnlyCall._hooks
    # an instance attribute, not also the class's: CPython 3.11 then reads it fast
    assert "_plain" not in vars(Task) and "_plain" in vars(plain)


# -- the same observations in a worker and in eager mode -------------------------------------


class Recorder:
    """Hooks and signals append here; ids become ``"id"`` when they are the task's own."""

    def __init__(self):
        self.events: list = []
        self.lock = threading.Lock()

    def add(self, *event):
        with self.lock:
            self.events.append(event)


RECORD = Recorder()


class Hooked(Task):
    def __call__(self, *args, **kwargs):
        RECORD.add("__call__", args, self.request.id is not None)
        return super().__call__(*args, **kwargs)

    def before_start(self, task_id, args, kwargs):
        RECORD.add("before_start", task_id == self.request.id, list(args), kwargs)

    def on_success(self, retval, task_id, args, kwargs):
        RECORD.add("on_success", retval, task_id == self.request.id, list(args))

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        RECORD.add("on_failure", repr(exc), einfo.exception is exc,
                   "ZeroDivisionError" in einfo.traceback)

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        RECORD.add("on_retry", repr(exc), task_id == self.request.id)

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        RECORD.add("after_return", status, repr(retval))


def _receivers():
    def prerun(sender=None, task_id=None, task=None, args=None, kwargs=None, **_):
        RECORD.add("task_prerun", task.name, task_id == task.request.id, list(args))

    def postrun(sender=None, task_id=None, task=None, retval=None, state=None, **_):
        RECORD.add("task_postrun", task.name, state, repr(retval))

    def success(sender=None, result=None, runtime=None, **_):
        RECORD.add("task_success", sender.name, result, runtime >= 0)

    def failure(sender=None, task_id=None, exception=None, einfo=None, traceback=None, **_):
        RECORD.add("task_failure", sender.name, repr(exception), traceback is not None)

    def retry(sender=None, request=None, reason=None, einfo=None, **_):
        RECORD.add("task_retry", sender.name, request.retries, repr(reason.exc))

    return {signals.task_prerun: prerun, signals.task_postrun: postrun,
            signals.task_success: success, signals.task_failure: failure,
            signals.task_retry: retry}


@pytest.fixture
def listening():
    connected = _receivers()
    for signal, receiver in connected.items():
        signal.connect(receiver, weak=False, dispatch_uid="test_signals")
    RECORD.events.clear()
    yield RECORD
    for signal in connected:
        signal.disconnect(dispatch_uid="test_signals")
    RECORD.events.clear()


def _define(app):
    @app.task(base=Hooked, name="t.add")
    def add(x, y):
        return x + y

    @app.task(base=Hooked, name="t.div")
    def div(x, y):
        return x / y

    @app.task(base=Hooked, bind=True, name="t.flaky", max_retries=3, default_retry_delay=0)
    def flaky(self, x):
        if self.request.retries == 0:
            raise self.retry(exc=KeyError("again"), countdown=0)
        return x

    return add, div, flaky


def _scenario(app, mode):
    """Run the three tasks in ``mode``; return the recorded events per task."""
    add, div, flaky = _define(app)
    outcomes = []
    for task, args in ((add, (2, 3)), (div, (1, 0)), (flaky, (7,))):
        RECORD.events.clear()
        if mode == "eager":
            result = task.apply(args)
        else:
            result = task.apply_async(args)
        value = result.get(timeout=10, propagate=False)
        outcomes.append((task.name, repr(value), list(RECORD.events)))
    return outcomes


def _worker(app, consumer_cls=_consumer_py.Consumer):
    executor = Executor(app, "sig@test")
    pool = SoloPool(executor, 1)
    pool.start()
    consumer = consumer_cls(app, app.broker, executor, pool, ["celery"], 4,
                            ack_batch_size=8, ack_interval=0.01, hostname="sig@test")
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()

    def stop():
        consumer.stop()
        thread.join(10)
        assert not thread.is_alive()
        pool.stop()

    consumer.stop_and_join = stop
    return consumer


@pytest.fixture
def worker_app():
    app = App("sig", broker=f"memory://{uuid.uuid4()}", worker_ack_interval=0.01)
    yield app
    app.close()


def test_hooks_and_task_signals_are_identical_in_a_worker_and_in_eager_mode(
        worker_app, listening):
    eager_app = App("sig", broker=f"memory://{uuid.uuid4()}")
    eager = _scenario(eager_app, "eager")
    consumer = _worker(worker_app)
    try:
        worker = _scenario(worker_app, "worker")
    finally:
        consumer.stop_and_join()
    assert worker == eager
    (_, added, add_events), (_, failed, div_events), (_, retried, flaky_events) = worker
    assert added == "5"
    assert add_events == [
        ("task_prerun", "t.add", True, [2, 3]),
        ("before_start", True, [2, 3], {}),
        ("__call__", (2, 3), True),
        ("on_success", 5, True, [2, 3]),
        ("task_success", "t.add", 5, True),
        ("after_return", "SUCCESS", "5"),
        ("task_postrun", "t.add", "SUCCESS", "5"),
    ]
    assert "ZeroDivisionError" in failed
    assert div_events[3:] == [
        ("on_failure", "ZeroDivisionError('division by zero')", True, True),
        ("task_failure", "t.div", "ZeroDivisionError('division by zero')", True),
        ("after_return", "FAILURE", "ZeroDivisionError('division by zero')"),
        ("task_postrun", "t.div", "FAILURE", "ZeroDivisionError('division by zero')"),
    ]
    assert retried == "7"
    first_run = flaky_events[:flaky_events.index(("task_postrun", "t.flaky", "RETRY",
                                                  flaky_events[5][3]))+1]
    assert [event[0] for event in first_run] == [
        "task_prerun", "before_start", "__call__", "on_retry", "task_retry", "task_postrun"]
    assert first_run[3] == ("on_retry", "KeyError('again')", True)
    assert first_run[4] == ("task_retry", "t.flaky", 0, "KeyError('again')")
    assert flaky_events[-1] == ("task_postrun", "t.flaky", "SUCCESS", "7")


@pytest.mark.parametrize("mode", ["worker", "eager"])
def test_a_receiver_that_raises_does_not_break_the_task(worker_app, mode):
    @worker_app.task
    def echo(x):
        return x

    def broken(**kwargs):
        raise RuntimeError("broken receiver")

    for signal in (signals.task_prerun, signals.task_success, signals.task_postrun):
        signal.connect(broken, weak=False, dispatch_uid="broken")
    consumer = _worker(worker_app) if mode == "worker" else None
    try:
        result = echo.apply((3,)) if mode == "eager" else echo.delay(3)
        assert result.get(timeout=10) == 3
    finally:
        for signal in (signals.task_prerun, signals.task_success, signals.task_postrun):
            signal.disconnect(dispatch_uid="broken")
        if consumer is not None:
            consumer.stop_and_join()


@pytest.mark.parametrize("mode", ["worker", "eager"])
def test_request_fields_celery_documents(worker_app, mode):
    fields = ("id", "correlation_id", "group", "chord", "reply_to", "is_eager",
              "called_directly", "hostname", "origin", "timelimit", "args", "kwargs",
              "retries", "eta", "expires", "root_id", "parent_id", "ignore_result",
              "properties", "delivery_info")

    @worker_app.task(bind=True)
    def fields_of(self, x, y=0):
        r = self.request
        return {name: getattr(r, name) for name in fields}

    consumer = _worker(worker_app) if mode == "worker" else None
    try:
        result = fields_of.apply((1,), {"y": 2}) if mode == "eager" else fields_of.delay(1, y=2)
        got = result.get(timeout=10)
    finally:
        if consumer is not None:
            consumer.stop_and_join()
    assert got["id"] == result.id == got["root_id"]
    assert got["correlation_id"] == result.id
    assert list(got["args"]) == [1] and got["kwargs"] == {"y": 2}
    assert got["retries"] == 0 and got["called_directly"] is False
    assert got["is_eager"] is (mode == "eager")
    assert got["hostname"] == ("eager" if mode == "eager" else "sig@test")
    assert got["origin"].startswith("gen")
    assert got["group"] is None and got["chord"] is None and got["parent_id"] is None
    assert got["ignore_result"] is False
    assert isinstance(got["properties"], dict) and isinstance(got["delivery_info"], dict)
    assert list(got["timelimit"]) == [None, None]
    # outside a run: Celery's stand-in
    assert fields_of.request.called_directly is True and fields_of.request.id is None
    assert fields_of.request.ignore_result is False


def test_update_state_shows_a_custom_state_to_clients_while_the_task_runs(worker_app):
    release = threading.Event()

    @worker_app.task(bind=True)
    def long(self, total):
        for done in range(1, total + 1):
            self.update_state(state="PROGRESS", meta={"done": done, "total": total})
        release.wait(10)
        return "finished"

    consumer = _worker(worker_app)
    try:
        result = long.delay(3)
        for _ in range(500):
            if result.state == "PROGRESS":
                break
            threading.Event().wait(0.01)
        assert result.state == "PROGRESS"
        assert result.info == {"done": 3, "total": 3}
        assert result.result == result.info
        assert not result.ready()
        release.set()
        assert result.get(timeout=10) == "finished"
        assert result.state == "SUCCESS" and result.info == "finished"
    finally:
        release.set()
        consumer.stop_and_join()


def test_update_state_from_an_eager_task_and_by_id():
    app = App("sig", broker=f"memory://{uuid.uuid4()}")
    seen = []

    @app.task(bind=True)
    def progress(self):
        self.update_state(state="PROGRESS", meta={"step": 1})
        seen.append(app.AsyncResult(self.request.id).state)
        return 1

    assert progress.apply().get() == 1
    assert seen == ["PROGRESS"]
    progress.update_state("some-id", "CUSTOM", {"n": 2})
    assert app.AsyncResult("some-id").info == {"n": 2}
    with pytest.raises(ValueError, match="outside a running task"):
        progress.update_state(state="PROGRESS")


def test_ignore_result_with_track_started_stores_no_started_state(worker_app):
    worker_app.conf.task_track_started = True

    @worker_app.task(ignore_result=True)
    def quiet():
        return 1

    @worker_app.task
    def loud():
        return 2

    consumer = _worker(worker_app)
    try:
        q = quiet.delay()
        assert loud.delay().get(timeout=10) == 2  # one solo worker: quiet ran first
    finally:
        consumer.stop_and_join()
    assert q.state == "PENDING"  # not STARTED: Celery stores nothing either


def test_typing_checks_arguments_when_the_task_is_sent(worker_app):
    @worker_app.task
    def add(x, y, *, scale=1):
        return (x + y) * scale

    @worker_app.task(bind=True)
    def bound(self, x):
        return x

    @worker_app.task(typing=False)
    def lax(x):
        return x

    @worker_app.task
    def anything(*args, **kwargs):
        return args

    with pytest.raises(TypeError, match="missing 1 required positional argument"):
        add.delay(1)
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        add.apply_async((1, 2), {"nope": 3})
    with pytest.raises(TypeError):
        bound.delay(1, 2)  # ``self`` is not the caller's to pass
    with pytest.raises(TypeError):
        add.delay_many([(1,)])
    assert add.apply_async((1, 2), {"scale": 2}) is not None
    assert bound.delay(1) is not None
    assert lax.delay() is not None  # typing=False: sent as it is
    assert anything.delay(1, 2, a=3) is not None


def test_publish_signals_name_the_task_and_see_its_headers(worker_app):
    seen = []

    def before(sender=None, headers=None, body=None, routing_key=None, **_):
        seen.append(("before", sender, headers["id"], routing_key))

    def after(sender=None, routing_key=None, **_):
        seen.append(("after", sender, routing_key))

    signals.before_task_publish.connect(before)
    signals.after_task_publish.connect(after)
    try:
        @worker_app.task
        def ping():
            return "pong"

        result = ping.delay()
    finally:
        signals.before_task_publish.disconnect(before)
        signals.after_task_publish.disconnect(after)
    assert seen == [("before", ping.name, result.id, "celery"),
                    ("after", ping.name, "celery")]


def test_task_logger_records_name_the_running_task(worker_app):
    from fastq.utils.log import TASK_LOG_FORMAT, TaskFormatter, get_task_logger

    task_logger = get_task_logger("tests.signals.tasks")
    lines = []

    class Capture(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    handler = Capture()
    handler.setFormatter(TaskFormatter("%(task_name)s[%(task_id)s]: %(message)s"))
    task_logger.addHandler(handler)
    task_logger.setLevel(logging.INFO)
    try:
        @worker_app.task(name="t.logs")
        def logs():
            task_logger.info("inside")

        consumer = _worker(worker_app)
        try:
            result = logs.delay()
            result.get(timeout=10)
        finally:
            consumer.stop_and_join()
        eager = logs.apply()
        task_logger.info("outside")
    finally:
        task_logger.removeHandler(handler)
    assert lines == [f"t.logs[{result.id}]: inside", f"t.logs[{eager.id}]: inside",
                     "???[???]: outside"]
    assert "%(task_name)s[%(task_id)s]" in TASK_LOG_FORMAT
    with pytest.raises(RuntimeError):
        get_task_logger("fastq.task")


# -- the consumer's decisions ------------------------------------------------------------


def _consumers():
    impls = [pytest.param(_consumer_py.Consumer, id="py")]
    if os.environ.get("FASTQ_NO_SPEEDUPS") != "1":
        from fastq._speedups._consumer import Consumer as CompiledConsumer

        impls.append(pytest.param(CompiledConsumer, id="c"))
    return impls


@pytest.mark.parametrize("consumer_cls", _consumers())
def test_received_unknown_revoked_and_rejected_signals_come_from_the_consumer(worker_app,
                                                                              consumer_cls):
    seen = []

    def received(sender=None, request=None, **_):
        seen.append(("received", request.name))

    def unknown(sender=None, name=None, id=None, message=None, exc=None, **_):
        seen.append(("unknown", name, id))

    def revoked(sender=None, request=None, expired=None, **_):
        seen.append(("revoked", request.name, expired))

    def rejected(sender=None, message=None, exc=None, **_):
        seen.append(("rejected", type(exc).__name__))

    pairs = [(signals.task_received, received), (signals.task_unknown, unknown),
             (signals.task_revoked, revoked), (signals.task_rejected, rejected)]
    for signal, receiver in pairs:
        signal.connect(receiver)

    @worker_app.task(name="t.known")
    def known():
        return "ok"

    consumer = _worker(worker_app, consumer_cls)
    try:
        assert known.delay().get(timeout=10) == "ok"
        missing = worker_app.send_task("t.missing")
        assert missing.get(timeout=10, propagate=False) is not None
        consumer.revoked.add("gone-id")
        gone = known.apply_async(task_id="gone-id")
        assert gone.get(timeout=10, propagate=False) is not None
        expired = known.apply_async(expires=-1)
        assert expired.get(timeout=10, propagate=False) is not None
        bad = worker_app.build_message("t.known")
        bad.properties["content_type"] = "application/x-nonsense"
        worker_app.publish_many([bad])
        assert known.delay().get(timeout=10) == "ok"  # after the bad one, in order
    finally:
        consumer.stop_and_join()
        for signal, receiver in pairs:
            signal.disconnect(receiver)
    assert seen == [("received", "t.known"), ("unknown", "t.missing", missing.id),
                    ("revoked", "t.known", False), ("revoked", "t.known", True),
                    ("rejected", "MessageRejected"), ("received", "t.known")]


# -- the worker process ------------------------------------------------------------------


def test_worker_lifecycle_signals_in_order(worker_app, tmp_path):
    from fastq.worker.supervisor import Worker

    seen = []

    def record(name):
        def receiver(sender=None, **kwargs):
            seen.append((name, sorted(kwargs)))
        return receiver

    names = ["celeryd_init", "import_modules", "worker_init", "worker_process_init",
             "celeryd_after_setup", "worker_ready", "worker_shutting_down",
             "worker_process_shutdown", "worker_shutdown"]
    receivers = [record(name) for name in names]
    for name, receiver in zip(names, receivers):
        getattr(signals, name).connect(receiver)
    threshold = gc.get_threshold()
    try:
        worker = Worker(worker_app, pool="solo", health_file=str(tmp_path / "health.json"))
        worker.install_signal_handlers = lambda: None  # signal handlers: main thread only
        ready = threading.Event()
        signals.worker_ready.connect(lambda **kw: ready.set(), weak=False,
                                     dispatch_uid="test-ready")
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        assert ready.wait(10)
        import signal as os_signal

        worker._on_stop_signal(os_signal.SIGTERM, None)
        thread.join(10)
        assert not thread.is_alive()
    finally:
        signals.worker_ready.disconnect(dispatch_uid="test-ready")
        for name, receiver in zip(names, receivers):
            getattr(signals, name).disconnect(receiver)
        gc.unfreeze()
        gc.set_threshold(*threshold)
    assert [name for name, _ in seen] == names
    assert dict(seen)["celeryd_init"] == ["conf", "instance", "options", "signal"]
    assert dict(seen)["worker_shutting_down"] == ["exitcode", "how", "sig", "signal"]
    assert dict(seen)["worker_process_shutdown"] == ["exitcode", "pid", "signal"]
    assert os.getpid()  # the process itself was not touched


def test_setup_logging_receiver_takes_over_and_otherwise_the_task_logger_is_set_up():
    from fastq.utils.log import TASK_LOGGER_NAME
    from fastq.worker.supervisor import setup_logging

    task_logger = logging.getLogger(TASK_LOGGER_NAME)
    before = (list(task_logger.handlers), task_logger.propagate)
    seen = []

    def take_over(loglevel=None, **kwargs):
        seen.append(("setup_logging", loglevel))
        return True

    signals.setup_logging.connect(take_over)
    try:
        setup_logging("INFO")
    finally:
        signals.setup_logging.disconnect(take_over)
    assert seen == [("setup_logging", logging.INFO)]
    assert list(task_logger.handlers) == before[0]  # nothing configured by fastq

    def after(logger=None, **kwargs):
        seen.append(("after", logger.name))

    signals.after_setup_logger.connect(after)
    signals.after_setup_task_logger.connect(after)
    try:
        setup_logging("WARNING")
    finally:
        signals.after_setup_logger.disconnect(after)
        signals.after_setup_task_logger.disconnect(after)
        for handler in task_logger.handlers[len(before[0]):]:
            task_logger.removeHandler(handler)
        task_logger.propagate = before[1]
    assert seen[1:] == [("after", "root"), ("after", TASK_LOGGER_NAME)]


def test_app_task_is_the_default_base_and_its_hooks_run(listening):
    app = App("sig", broker=f"memory://{uuid.uuid4()}")
    app.Task = Hooked  # Celery's hook: every @app.task without base= gets it

    @app.task(name="t.default_base")
    def plain(x):
        return x

    assert isinstance(plain, Hooked)
    assert plain.apply((4,)).get() == 4
    assert ("on_success", 4, True, [4]) in RECORD.events
