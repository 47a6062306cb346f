"""Micro-benchmarks of the per-message hot paths, run only on request with pytest-benchmark.

    python -m pytest bench/test_micro.py --benchmark-only

pyproject's ``testpaths`` is ``["tests"]``, so the normal test run never collects this
file; it needs no server (the consumer case uses the in-memory broker).
"""

from __future__ import annotations

import os
import uuid

import pytest

pytest.importorskip("pytest_benchmark")

from fastq import App, protocol, serialization  # noqa: E402
from fastq.brokers.base import Delivery  # noqa: E402
from fastq.worker import _consumer_py  # noqa: E402
from fastq.worker.executor import Executor  # noqa: E402
from fastq.worker.pools.solo import SoloPool  # noqa: E402

TASK_ID = "3f7c2a9e-8d41-4b6e-9c0a-5e2f1d7b8a64"

#: What Celery 5.7's ``add.delay(2, 3)`` puts on the wire (protocol v2, JSON), as a
#: literal so the figures do not move when Celery's own builder changes.
CELERY_HEADERS = {
    "lang": "py", "task": "tasks.add", "id": TASK_ID, "shadow": None, "eta": None,
    "expires": None, "group": None, "group_index": None, "retries": 0,
    "timelimit": [None, None], "root_id": TASK_ID, "parent_id": None,
    "argsrepr": "(2, 3)", "kwargsrepr": "{}", "origin": "gen4242@bench-host",
    "ignore_result": False, "replaced_task_nesting": 0, "stamped_headers": None,
    "stamps": {},
}
CELERY_PROPERTIES = {
    "correlation_id": TASK_ID, "reply_to": "5d1b0a8e-2c3f-3d4e-9f60-7a8b9c0d1e2f",
    "delivery_mode": 2, "priority": 0, "content_type": "application/json",
    "content_encoding": "utf-8",
}
CELERY_BODY = (b'[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, '
               b'"chord": null}]')

#: A small body of the kind results and arguments usually are.
SMALL_BODY = [[2, 3, "hello"], {"user_id": 42, "flags": ["a", "b"]},
              {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]

ACCEPT = serialization.resolve_accept(["json"])


def test_decode_celery_message(benchmark):
    headers, args, kwargs, embed = benchmark(
        protocol.decode_task, CELERY_HEADERS, CELERY_PROPERTIES, CELERY_BODY, ACCEPT)
    assert (headers["task"], args, kwargs) == ("tasks.add", [2, 3], {})


def test_build_task_message(benchmark):
    message = benchmark(protocol.build_task_message, "tasks.add", TASK_ID, (2, 3), {},
                        queue="celery", origin="gen4242@bench-host")
    assert message.headers["argsrepr"] == "(2, 3)"


def test_json_round_trip(benchmark):
    def round_trip():
        return serialization.json_loads(serialization.json_dumps(SMALL_BODY))

    assert benchmark(round_trip) == SMALL_BODY


def _consumers():
    impls = [pytest.param(_consumer_py.Consumer, id="py")]
    if os.environ.get("FASTQ_NO_SPEEDUPS") != "1":
        try:
            from fastq._speedups._consumer import Consumer as CompiledConsumer
        except ImportError:
            pass  # not built: measure the Python loop alone
        else:
            impls.append(pytest.param(CompiledConsumer, id="c"))
    return impls


@pytest.fixture
def app():
    app = App("micro", broker=f"memory://{uuid.uuid4()}", task_acks_late=True)

    @app.task(name="tasks.add")
    def add(x, y):
        return x + y

    yield app
    app.close()


@pytest.mark.parametrize("consumer_cls", _consumers())
def test_consumer_prepare(benchmark, app, consumer_cls):
    executor = Executor(app, "micro@bench")
    consumer = consumer_cls(app, app.broker, executor, SoloPool(executor), ["celery"], 4,
                            hostname="micro@bench")
    # late acks: _prepare only decodes and vets, touching no broker state, so the same
    # delivery can go through it again and again
    delivery = Delivery(1, CELERY_HEADERS, CELERY_PROPERTIES, CELERY_BODY, queue="celery")
    job = benchmark(consumer._prepare, delivery)
    assert job is not None and job[0].name == "tasks.add"
    assert consumer.counters["dead_lettered"] == 0
