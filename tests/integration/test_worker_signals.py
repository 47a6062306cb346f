"""Signals and Task hooks in real worker processes (SQLite broker): the worker's own
signals in the right process (the prefork parent, each child), the task ones where the
task runs."""

from __future__ import annotations

import collections
import time

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]


@pytest.fixture
def signal_log(sqlite_env, monkeypatch):
    tmp_path, _url, _run_log, env = sqlite_env
    path = tmp_path / "signals.log"
    env["FASTQ_TEST_SIGNAL_LOG"] = str(path)
    return path


@pytest.fixture
def signals_app(sqlite_env):
    import importlib
    import sys

    sys.modules.pop("tests.apps.signals_app", None)
    module = importlib.import_module("tests.apps.signals_app")
    yield module
    module.app.close()
    for signal, receiver in module.CONNECTED:
        signal.disconnect(receiver)


def _lines(path) -> list[tuple[int, str, str]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [(int(pid), what, detail) for pid, what, detail in
            (line.split(" ", 2) for line in text.splitlines() if line)]


def _start(worker, signal_log, *extra):
    # the class the fixture uses (pytest may load conftest under another module name)
    process_class = worker.__globals__["WorkerProcess"]
    process_class.app_module = "tests.apps.signals_app"
    try:
        return worker(*extra)
    finally:
        process_class.app_module = "tests.apps.sqlite_app"


def _wait_for(predicate, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.mark.parametrize("pool", [("-P", "solo"), ("-P", "prefork", "-c", "2")],
                         ids=["solo", "prefork"])
def test_worker_and_task_signals_and_hooks_fire_in_the_right_process(
        worker, signal_log, signals_app, pool):
    w = _start(worker, signal_log, *pool)
    _wait_for(lambda: any(what == "worker_ready" for _, what, _ in _lines(signal_log)))
    assert signals_app.add.delay(2, 3).get(timeout=20) == 5
    failed = signals_app.fail.delay()
    assert isinstance(failed.get(timeout=20, propagate=False), KeyError)
    assert w.stop() == 0
    lines = _lines(signal_log)
    main = w.proc.pid
    by_pid = collections.defaultdict(list)
    for pid, what, detail in lines:
        by_pid[pid].append((what, detail))
    main_events = [what for what, _ in by_pid[main]]
    for name in ("celeryd_init", "import_modules", "worker_init", "celeryd_after_setup",
                 "worker_ready", "worker_shutting_down", "worker_shutdown"):
        assert main_events.count(name) == 1, (name, main_events)
    assert main_events.index("worker_init") < main_events.index("worker_ready") \
        < main_events.index("worker_shutdown")
    runners = [pid for pid, events in by_pid.items()
               if ("worker_process_init", "-") in events]
    if pool[1] == "solo":
        assert runners == [main]
    else:
        assert len(runners) == 2 and main not in runners
    for pid in runners:
        events = [what for what, _ in by_pid[pid]]
        assert events.count("worker_process_shutdown") == 1, events
    # the task signals and hooks, in the process that ran each task, in Celery's order
    ran = [(what, detail) for pid in runners for what, detail in by_pid[pid]
           if what not in ("worker_process_init", "worker_process_shutdown")]
    add_run = [e for e in ran if e[1] in ("s.add", "5", "SUCCESS")]
    assert add_run == [("task_received", "s.add"), ("task_prerun", "s.add"),
                       ("on_success", "5"), ("task_success", "s.add"),
                       ("after_return", "SUCCESS"), ("task_postrun", "s.add")]
    fail_run = [e for e in ran if e[1] in ("s.fail", "KeyError", "FAILURE")]
    assert fail_run == [("task_received", "s.fail"), ("task_prerun", "s.fail"),
                        ("on_failure", "KeyError"), ("task_failure", "s.fail"),
                        ("after_return", "FAILURE"), ("task_postrun", "s.fail")]
