"""Awaiting results from asyncio code, against a real worker process and real result stores."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest
import redis

from fastq import App, ResultTimeout, group
from tests.apps.async_app import Boom, define_tasks
from tests.integration.conftest import ROOT, WorkerProcess
from tests.integration.redis_support import REDIS_URL, require_redis

pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]


class AsyncAppWorker(WorkerProcess):
    app_module = "tests.apps.async_app"


def _backend_url(kind: str, workdir) -> str:
    if kind == "redis":
        require_redis()
        return REDIS_URL
    return f"sqlite:///{workdir / 'results.sqlite3'}"


@pytest.fixture(scope="module", params=["redis", "sqlite"])
def backend_kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def deployment(backend_kind, tmp_path_factory):
    """A worker (asyncio pool, 1,000 slots) and a producer App sharing a broker and a
    result store; one per store kind for the whole module, queues unique to it."""
    workdir = tmp_path_factory.mktemp(f"async-{backend_kind}")
    broker_url = f"sqlite:///{workdir / 'broker.sqlite3'}"
    backend_url = _backend_url(backend_kind, workdir)
    env = dict(os.environ, FASTQ_BROKER_URL=broker_url, FASTQ_RESULT_BACKEND=backend_url,
               FASTQ_RESULT_EXPIRES="300", FASTQ_WORKER_STATE_DIR=str(workdir / "workers"),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    worker = AsyncAppWorker(workdir, broker_url, str(workdir / "runs.log"), env)
    worker.start("-P", "asyncio", "-c", "1000", "--prefetch-multiplier", "1")
    producer = App("async-producer", broker=broker_url, backend=backend_url,
                   result_expires=300)
    try:
        yield producer, define_tasks(producer), worker
    finally:
        producer.close()
        worker.stop()


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def test_await_and_aget_return_the_value(deployment) -> None:
    _app, tasks, _worker = deployment

    async def main():
        result = await tasks.add.adelay(2, 3)
        other = await tasks.add.aapply_async((10,), {"y": 20})
        return await result, await other.aget(timeout=20), await result

    assert run(main()) == (5, 30, 5)


def test_a_failure_is_raised_or_returned(deployment) -> None:
    _app, tasks, _worker = deployment

    async def main():
        result = await tasks.fail.adelay("no luck")
        with pytest.raises(Boom, match="no luck"):
            await result.aget(timeout=20)
        returned = await result.aget(propagate=False)
        return result, returned

    result, returned = run(main())
    assert isinstance(returned, Boom)
    assert result.failed()


def test_aget_times_out_with_the_state(deployment) -> None:
    _app, tasks, _worker = deployment

    async def main():
        # no worker consumes this queue: the task stays PENDING
        result = await tasks.add.aapply_async((1, 1), queue=f"nobody-{uuid.uuid4().hex}")
        started = time.monotonic()
        with pytest.raises(ResultTimeout, match="still PENDING after 0.3s"):
            await result.aget(timeout=0.3)
        return time.monotonic() - started

    assert 0.3 <= run(main()) < 2.0


def test_the_loop_runs_on_while_results_are_awaited(deployment) -> None:
    _app, tasks, _worker = deployment

    async def main():
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.ensure_future(tick())
        started = time.monotonic()
        value = await (await tasks.nap.adelay(0.5, "done"))
        elapsed = time.monotonic() - started
        ticker.cancel()
        return value, ticks, elapsed

    value, ticks, elapsed = run(main())
    assert value == "done"
    # a blocked loop would tick a handful of times; a free one about every 10 ms
    assert ticks >= 0.5 * elapsed / 0.01


def test_group_members_come_in_finishing_order(deployment) -> None:
    app, tasks, _worker = deployment

    async def main():
        loop = asyncio.get_running_loop()
        job = group(tasks.nap.s(0.9, "slow"), tasks.nap.s(0.1, "fast"),
                    tasks.nap.s(0.5, "middle"), app=app)
        group_result = await loop.run_in_executor(None, job.apply_async)
        order = [r.result async for r in group_result.aiter_completed(timeout=20)]
        return order, await group_result.ajoin(timeout=5)

    order, joined = run(main())
    assert order == ["fast", "middle", "slow"]
    assert joined == ["slow", "fast", "middle"]


def test_aiter_completed_times_out(deployment) -> None:
    app, tasks, _worker = deployment

    async def main():
        loop = asyncio.get_running_loop()
        # short enough not to hold up the worker's warm shutdown at the end
        job = group(tasks.nap.s(0.05, "quick"), tasks.nap.s(1.5, "too late"), app=app)
        group_result = await loop.run_in_executor(None, job.apply_async)
        seen = []
        with pytest.raises(ResultTimeout, match="1 of 2 members not ready"):
            async for result in group_result.aiter_completed(timeout=0.7):
                seen.append(result.result)
        return seen

    assert run(main()) == ["quick"]


def _waiting_connections() -> list[tuple[int, int]]:
    """(subscriptions, pending command) of each Redis connection a result waiter opened."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return [(int(c.get("sub", 0)), c.get("cmd", "")) for c in client.client_list()
                if c.get("name") == "fastq-result-waiter"]
    finally:
        client.close()


def test_a_thousand_awaits_take_the_tasks_own_time(deployment, backend_kind) -> None:
    _app, tasks, _worker = deployment
    count, nap = 1000, 1.0
    results = tasks.nap.delay_many([(nap, i) for i in range(count)])

    async def main():
        started = time.monotonic()
        waits = asyncio.gather(*(r.aget(timeout=30) for r in results))
        seen = []
        while not waits.done():
            if backend_kind == "redis":
                seen.append(_waiting_connections())
            await asyncio.sleep(0.05)
        values = await waits
        return values, time.monotonic() - started, seen

    values, elapsed, seen = run(main())
    report = f"\n{backend_kind}: {count} concurrent awaits of {nap}s tasks: {elapsed:.2f}s"
    if backend_kind == "redis":
        report += (f", waiter connections at most {max(len(conns) for conns in seen)}, "
                   f"subscriptions at most {max(sub for conns in seen for sub, _ in conns)}")
    print(report)
    assert values == list(range(count))
    assert elapsed < nap + 3.0, f"1,000 awaits of {nap}s tasks took {elapsed:.2f}s"
    if backend_kind != "redis":
        return  # one poller thread reads them all; no connection to count from outside
    # at most two connections at any time: one subscribed, one for the reads
    assert seen
    assert all(len(conns) <= 2 for conns in seen), seen
    assert max(sub for conns in seen for sub, _cmd in conns) > count // 2, seen
