"""The consumer loop and executor on the in-memory broker, in a thread: no servers."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest

from fastq import App, _speedups
from fastq.worker import _consumer_py
from fastq.worker.executor import Executor
from fastq.worker.pools.asyncio import AsyncioPool
from fastq.worker.pools.solo import SoloPool
from fastq.worker.pools.threads import ThreadPool


@pytest.fixture
def app():
    app = App("mem", broker=f"memory://{uuid.uuid4()}", worker_ack_interval=0.01)
    yield app
    app.close()


#: in-process pools that need no monkey-patching (gevent/eventlet: tests/integration)
POOLS = {"solo": SoloPool, "threads": ThreadPool, "asyncio": AsyncioPool}


@pytest.fixture(params=sorted(POOLS))
def pool_name(request) -> str:
    return request.param


@pytest.fixture
def run_worker(app, impl, pool_name):
    Consumer = _consumer_py.Consumer if impl == "py" else _speedups.load("_consumer").Consumer
    consumers = []

    def start(prefetch: int = 4):
        executor = Executor(app, "mem@test")
        pool = POOLS[pool_name](executor, 1 if pool_name == "solo" else 3)
        pool.start()
        consumer = Consumer(app, app.broker, executor, pool, ["celery"], prefetch,
                            ack_batch_size=64, ack_interval=0.01, hostname="mem@test")
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        consumers.append((consumer, thread, pool))
        return consumer

    def stop():
        while consumers:
            consumer, thread, pool = consumers.pop()
            consumer.stop()
            thread.join(10)
            assert not thread.is_alive()
            pool.stop()
            c = consumer.counters
            # nothing received is unaccounted for
            assert c["received"] == (c["acked"] + c["dead_lettered"] + c["released"]
                                     + c["requeued"] + c["deferred"])

    start.stop = stop
    yield start
    stop()


def test_tasks_run_and_results_are_stored(app, run_worker):
    @app.task
    def mul(x, y):
        return x * y

    run_worker()
    results = [mul.delay(i, 3) for i in range(100)]
    assert [r.get(timeout=5) for r in results] == [3 * i for i in range(100)]


def test_acks_late_false_acks_before_the_task_runs(app, run_worker):
    holder = {}

    @app.task(acks_late=False)
    def early():
        return holder["consumer"].counters["acked"]

    @app.task
    def late():
        return holder["consumer"].counters["acked"]

    holder["consumer"] = run_worker()
    assert late.delay().get(timeout=5) == 0  # acks_late: its ack comes after it ran
    time.sleep(0.05)  # let the flush of the first ack happen
    assert early.delay().get(timeout=5) == 2  # its own ack went out first


def test_future_eta_goes_back_to_the_broker_not_into_memory(app, run_worker):
    @app.task
    def later():
        return time.time()

    consumer = run_worker()
    sent = time.time()
    # As a Celery client would send it: an eta header the broker knows nothing about.
    message = app.build_message(later.name, countdown=0.3)
    message.not_before = 0.0
    app.publish_many([message])
    result = app.AsyncResult(message.headers["id"])
    assert result.get(timeout=5) >= sent + 0.3
    assert consumer.counters["deferred"] == 1
    # with the broker told, the message waits there and the consumer never sees it early
    result = later.apply_async(countdown=0.3)
    assert result.get(timeout=5) >= sent + 0.3
    assert consumer.counters["deferred"] == 1


def test_a_task_that_expires_while_waiting_in_hand_is_revoked_not_run(app, run_worker):
    gate = threading.Event()
    ran: list[str] = []

    @app.task
    def blocker():
        gate.wait(5)

    @app.task
    def short():
        ran.append("short")

    # every slot of every pool busy, the expiring task taken into the worker's hands
    # (prefetched) while it was still valid, and still waiting when it expires
    blockers = [blocker.delay() for _ in range(3)]
    result = short.apply_async(expires=0.3)
    sent = time.monotonic()
    consumer = run_worker(prefetch=8)
    while consumer.counters["received"] < 4 and time.monotonic() < sent + 5:
        time.sleep(0.01)
    time.sleep(max(0.0, sent + 0.4 - time.monotonic()))
    gate.set()
    assert [b.get(timeout=5) for b in blockers] == [None] * 3
    with pytest.raises(Exception, match="expired"):
        result.get(timeout=5)
    assert result.state == "REVOKED" and ran == []


def test_rate_limited_tasks_are_deferred_not_blocking(app, run_worker):
    @app.task(rate_limit="5/s")
    def limited():
        return time.monotonic()

    @app.task
    def free():
        return time.monotonic()

    consumer = run_worker()
    started = time.monotonic()
    slow = [limited.delay() for _ in range(4)]
    fast = free.delay()
    assert fast.get(timeout=5) - started < 0.4  # not stuck behind the limited ones
    finished = sorted(r.get(timeout=5) for r in slow)
    assert finished[-1] - finished[0] >= 0.5  # 4 tasks at 5/s span >= 0.6 s minus slack
    assert consumer.counters["deferred"] >= 2


def test_ignore_result_stores_nothing(app, run_worker):
    @app.task(ignore_result=True)
    def quiet():
        return 1

    @app.task
    def loud():
        return 2

    run_worker()
    q = quiet.delay()
    assert loud.delay().get(timeout=5) == 2
    time.sleep(0.05)
    assert q.state == "PENDING"


def test_link_and_chain_pass_results_along(app, run_worker):
    @app.task
    def add(x, y):
        return x + y

    run_worker()
    result = (add.s(1, 2) | add.s(10) | add.s(100)).delay()
    assert result.get(timeout=5) == 113
    linked = add.apply_async((2, 2), link=add.s(1000))
    assert linked.get(timeout=5) == 4


def test_bind_gives_the_request_context(app, run_worker):
    @app.task(bind=True)
    def info(self):
        r = self.request
        return [r.id, r.retries, r.delivery_info["routing_key"], r.hostname]

    run_worker()
    result = info.delay()
    assert result.get(timeout=5) == [result.id, 0, "celery", "mem@test"]


def test_async_def_tasks_run_and_their_event_loops_are_closed(app, run_worker):
    # An event loop left to the garbage collector raises ResourceWarning (twice more for
    # its self-pipe sockets) in whichever later test is running when it is collected:
    # the pools must close the loops they open, by the time they stop.
    loops = []

    @app.task
    async def double(x):
        await asyncio.sleep(0)
        loops.append(asyncio.get_running_loop())
        return 2 * x

    run_worker()
    assert [double.delay(i).get(timeout=5) for i in range(6)] == [0, 2, 4, 6, 8, 10]
    run_worker.stop()
    assert loops and all(loop.is_closed() for loop in loops)
