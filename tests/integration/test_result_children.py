"""``AsyncResult.children`` of a result a worker stored: the tasks its run sent (from its
body, and its callbacks), recorded as Celery records them, the same as in eager mode."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap

import pytest

from tests.integration.conftest import WorkerProcess

pytestmark = pytest.mark.integration

APP = textwrap.dedent('''
    import os

    from fastq import App

    app = App("children", broker=os.environ["FASTQ_BROKER_URL"])


    @app.task(name="c.add")
    def add(x, y):
        return x + y


    @app.task(name="c.spawn")
    def spawn(n):
        return [add.delay(i, i).id for i in range(n)]


    @app.task(name="c.quiet")
    def quiet():
        return 1
''')


class ChildrenWorker(WorkerProcess):
    app_module = "children_app"


@pytest.fixture
def children_app(sqlite_env):
    tmp_path, url, run_log, env = sqlite_env
    (tmp_path / "children_app.py").write_text(APP)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    sys.path.insert(0, str(tmp_path))
    sys.modules.pop("children_app", None)
    module = importlib.import_module("children_app")
    started: list[WorkerProcess] = []

    def start(*extra: str) -> WorkerProcess:
        worker = ChildrenWorker(tmp_path, url, run_log, env)
        started.append(worker)
        return worker.start(*extra)

    yield module, start
    for worker in started:
        worker.stop()
    module.app.close()
    sys.modules.pop("children_app", None)
    sys.path.remove(str(tmp_path))


def _spawn(module):
    return module.spawn.apply_async((2,), link=module.add.si(5, 5))


@pytest.mark.parametrize("pool", ["solo", "asyncio"])
def test_a_stored_result_names_the_tasks_its_run_sent(children_app, pool):
    module, start = children_app
    start("-P", pool)
    result = _spawn(module)
    sent = result.get(timeout=20)
    children = result.children
    assert [child.id for child in children][:2] == sent  # sent from the body, in order
    assert len(children) == 3  # and its link callback
    assert [child.get(timeout=20) for child in children] == [0, 2, 10]
    assert [value for _, value in result.collect(timeout=20)] == [sent, 0, 2, 10]
    assert [(parent.id if parent else None, node.id) for parent, node in result.iterdeps()] \
        == [(None, result.id)] + [(result.id, child.id) for child in children]
    # a run that sends nothing stores no children
    assert module.quiet.delay().get(timeout=20) == 1
    quiet = module.app.AsyncResult(module.quiet.delay().id)
    quiet.get(timeout=20)
    assert quiet.children == []


def test_eager_mode_gives_the_same_children(children_app):
    module, start = children_app
    start()
    stored = _spawn(module)
    stored.get(timeout=20)
    worker_values = [child.get(timeout=20) for child in stored.children]

    module.app.conf.task_always_eager = True
    eager = _spawn(module)
    sent = eager.get()
    assert [child.id for child in eager.children][:2] == sent
    assert [child.get() for child in eager.children] == worker_values == [0, 2, 10]
    assert [value for _, value in eager.collect()] == [sent, 0, 2, 10]
