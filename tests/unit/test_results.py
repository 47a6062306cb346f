"""Celery's result API on fastq's results: parent, children, collect, iterdeps, then,
the fields stored with ``result_extended``; ``fastq.states`` ordering; Celery's exception
names; the App methods Celery projects call (autodiscover_tasks, set_default, finalize,
log, loader)."""

import logging
import sys
import threading
import uuid
from datetime import datetime, timezone

import pytest

import fastq
from fastq import App, chain, states
from fastq._state import current_app
from fastq.exceptions import IncompleteStream
from fastq.result import AsyncResult, EagerResult, GroupResult, result_from_tuple


@pytest.fixture
def app():
    return App("results", broker=f"memory://{uuid.uuid4()}")


def _store(app, task_id, state="SUCCESS", result=None, **extra):
    app.backend.store(task_id, state, result, extra=extra or None)


# -- parent, children, collect, iterdeps ----------------------------------------------
def test_a_sent_chain_returns_the_last_result_with_parents_back_to_the_first(app):
    @app.task(name="add")
    def add(x, y):
        return x + y

    result = chain(add.s(1, 2), add.s(3), add.s(4)).apply_async()
    first = result.parent.parent
    assert first.parent is None
    assert result.name == "add"  # known before any result is stored
    # Celery's tuple form carries the parents
    assert result.as_tuple() == [[result.id, [[result.parent.id, [[first.id, None], None]],
                                              None]], None]
    restored = result_from_tuple(result.as_tuple(), app=app)
    assert restored.parent.parent.id == first.id


def test_parent_is_read_from_the_stored_parent_id(app):
    _store(app, "child", result=2, parent_id="root")
    _store(app, "root", result=1)
    result = AsyncResult("child", app=app)
    assert result.parent == AsyncResult("root") and result.parent.get() == 1
    _store(app, "orphan", result=3)
    assert AsyncResult("orphan", app=app).parent is None


def test_children_collect_and_iterdeps_follow_the_stored_tree(app):
    _store(app, "a", result="A", children=[[["b", None], None], [["g", None],
                                           [[["c", None], None]]]])
    _store(app, "b", result="B")
    _store(app, "c", result="C")
    root = AsyncResult("a", app=app)
    assert [type(c) for c in root.children] == [AsyncResult, GroupResult]
    collected = [(r.id, v) for r, v in root.collect(timeout=1)]
    assert collected[:2] == [("a", "A"), ("b", "B")]
    assert collected[2][0] == "g" and collected[2][1] == ["C"]
    assert collected[3] == ("c", "C")
    assert root.get_leaf() == "C"


def test_iterdeps_stops_at_an_unfinished_result_unless_intermediate(app):
    _store(app, "top", result=1, children=[[["pending", None], None]])
    deps = AsyncResult("top", app=app).iterdeps()
    assert next(deps)[1].id == "top"
    assert next(deps)[1].id == "pending"
    with pytest.raises(IncompleteStream):
        next(deps)
    assert len(list(AsyncResult("top", app=app).iterdeps(intermediate=True))) == 2


# -- fields ------------------------------------------------------------------------------
def test_extended_fields_and_date_done(app):
    _store(app, "x", result=5, name="proj.add", args=[2, 3], kwargs={"z": 1},
           worker="w1@host", retries=1, queue="math")
    result = AsyncResult("x", app=app)
    assert (result.name, result.args, result.kwargs) == ("proj.add", [2, 3], {"z": 1})
    assert (result.worker, result.retries, result.queue) == ("w1@host", 1, "math")
    assert isinstance(result.date_done, datetime)
    assert result.date_done.tzinfo is not None
    assert abs((datetime.now(timezone.utc) - result.date_done).total_seconds()) < 60
    assert AsyncResult("unknown", app=app).date_done is None
    assert result.wait(timeout=1) == 5 and result.info == 5


def test_info_of_a_custom_state_is_its_meta(app):
    _store(app, "p", state="PROGRESS", result={"done": 1})
    result = AsyncResult("p", app=app)
    assert result.state == "PROGRESS" and result.info == {"done": 1}
    assert not result.ready()


def test_then_calls_back_now_when_ready_and_later_when_not(app):
    _store(app, "done", result=1)
    seen = []
    AsyncResult("done", app=app).then(lambda r: seen.append(r.result))
    assert seen == [1]
    arrived = threading.Event()
    AsyncResult("later", app=app).then(lambda r: (seen.append(r.result), arrived.set()))
    _store(app, "later", result=2)
    assert arrived.wait(5) and seen == [1, 2]


# -- eager results ---------------------------------------------------------------------
def test_an_eager_chain_links_parents_and_children():
    app = App("eager-results", broker=f"memory://{uuid.uuid4()}", task_always_eager=True)

    @app.task
    def add(x, y):
        return x + y

    result = (add.s(1, 2) | add.s(3) | add.s(4)).apply_async()
    assert isinstance(result, EagerResult) and result.get() == 10
    assert result.parent.get() == 6 and result.parent.parent.get() == 3
    assert result.parent.children == [result]
    assert [v for _, v in result.parent.parent.collect()] == [3, 6, 10]
    assert isinstance(result.date_done, datetime)


# -- states --------------------------------------------------------------------------------
def test_states_compare_by_celery_precedence():
    assert states.state(states.PENDING) < states.state(states.SUCCESS)
    assert states.state("PROGRESS") > states.state(states.STARTED)
    assert not states.state("PROGRESS") > states.state(states.FAILURE)
    assert states.precedence(states.SUCCESS) == 0
    assert states.precedence("PROGRESS") == states.precedence(None)
    assert max(map(states.state, [states.PENDING, states.STARTED, states.RETRY])) == \
        states.STARTED


# -- Celery's exception names ----------------------------------------------------------
CELERY_EXCEPTIONS = [
    "CeleryWarning", "AlwaysEagerIgnored", "DuplicateNodenameWarning",
    "DuplicateTaskNameWarning", "FixupWarning", "NotConfigured", "SecurityWarning",
    "CeleryError", "ImproperlyConfigured", "SecurityError", "OperationalError",
    "TaskPredicate", "Ignore", "Reject", "Retry", "TaskError", "QueueNotFound",
    "IncompleteStream", "NotRegistered", "AlreadyRegistered", "TimeoutError",
    "MaxRetriesExceededError", "TaskRevokedError", "InvalidTaskError", "ChordError",
    "BackendError", "BackendGetMetaError", "BackendStoreError", "SoftTimeLimitExceeded",
    "TimeLimitExceeded", "WorkerLostError", "Terminated", "CPendingDeprecationWarning",
    "CDeprecationWarning", "WorkerShutdown", "WorkerTerminate", "RetryTaskError",
    "SystemTerminate",
]


def test_every_celery_exception_name_imports_from_fastq_exceptions():
    import fastq.exceptions as exceptions

    missing = [name for name in CELERY_EXCEPTIONS if not hasattr(exceptions, name)]
    assert missing == []
    assert exceptions.ImproperlyConfigured is fastq.ConfigurationError
    assert exceptions.NotRegistered is fastq.TaskNotRegistered
    assert issubclass(exceptions.QueueNotFound, KeyError)
    assert issubclass(fastq.PublishTimeout, exceptions.OperationalError)


# -- the App methods ---------------------------------------------------------------------
def _package(tmp_path, monkeypatch, name, with_tasks=True):
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    if with_tasks:
        (root / "tasks.py").write_text(
            "from fastq import shared_task\n\n@shared_task\ndef ping():\n    return 'pong'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_autodiscover_tasks_imports_at_finalize_and_lists_the_modules_for_workers(
        app, tmp_path, monkeypatch):
    with_tasks = _package(tmp_path, monkeypatch, f"pkg_{uuid.uuid4().hex[:8]}")
    without = _package(tmp_path, monkeypatch, f"pkg_{uuid.uuid4().hex[:8]}", with_tasks=False)
    app.autodiscover_tasks([with_tasks, without])
    assert f"{with_tasks}.tasks" not in sys.modules  # not before finalize
    assert app.conf.imports[-1] == f"{with_tasks}.tasks"
    app.finalize()
    assert f"{with_tasks}.tasks.ping" in app.tasks
    assert f"{without}.tasks" not in sys.modules


def test_autodiscover_tasks_takes_a_callable_and_force(app, tmp_path, monkeypatch):
    name = _package(tmp_path, monkeypatch, f"pkg_{uuid.uuid4().hex[:8]}")
    app.autodiscover_tasks(lambda: [name], force=True)
    assert f"{name}.tasks.ping" in app.tasks
    with pytest.raises(ModuleNotFoundError, match="no package named"):
        app.autodiscover_tasks([f"missing_{uuid.uuid4().hex[:8]}"])


def test_loader_imports_the_default_modules(app, tmp_path, monkeypatch):
    name = _package(tmp_path, monkeypatch, f"pkg_{uuid.uuid4().hex[:8]}")
    app.autodiscover_tasks([name])
    modules = app.loader.import_default_modules()
    assert [m.__name__ for m in modules] == [f"{name}.tasks"]
    assert app.finalized and f"{name}.tasks.ping" in app.tasks


def test_set_default_makes_the_app_current(app):
    other = App("other", broker=f"memory://{uuid.uuid4()}")
    assert current_app() is other
    app.set_default()
    assert current_app() is app


def test_log_setup_adds_one_handler_only_when_there_is_none(app, monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    assert app.log.setup(loglevel="INFO") is True
    assert len(root.handlers) == 1 and root.level == logging.INFO
    assert app.log.setup(loglevel="DEBUG") is False
    assert len(root.handlers) == 1 and root.level == logging.DEBUG


def test_app_task_is_the_default_base_class(app):
    class Audited(app.Task):
        audited = True

    app.Task = Audited

    @app.task
    def noop():
        return None

    assert isinstance(noop, Audited)
    assert fastq.Celery is App


def test_a_worker_stores_the_parent_id_with_result_extended():
    from fastq.task import Request
    from fastq.worker.executor import Executor

    app = App("extended", broker=f"memory://{uuid.uuid4()}", result_extended=True)
    executor = Executor(app, "w1@host")
    child = Request({"id": "child", "task": "t", "parent_id": "parent"}, [1], {}, {})
    root = Request({"id": "root", "task": "t"}, [], {}, {})
    assert executor._extended(child)["parent_id"] == "parent"
    assert "parent_id" not in executor._extended(root)
