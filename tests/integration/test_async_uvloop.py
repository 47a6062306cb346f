"""The async client API on uvloop's event loop, against a real worker process: sending
with ``adelay``, awaiting values and failures, ``aiter_completed``, on the Redis result
store (its pub/sub waiter runs on the loop) and SQLite (a poller thread wakes the loop)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.apps.async_app import Boom
from tests.integration.test_async_results import backend_kind, deployment  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]

uvloop = pytest.importorskip("uvloop")


def test_the_async_api_runs_on_uvloop(deployment):  # noqa: F811 - the fixture imported above
    from fastq import group

    app, tasks, _worker = deployment

    async def main():
        loop = asyncio.get_running_loop()
        assert isinstance(loop, uvloop.Loop)
        first = await tasks.add.adelay(2, 3)
        failed = await tasks.fail.adelay("on uvloop")
        naps = [await tasks.nap.adelay(0.2, i) for i in range(100)]
        values = await asyncio.gather(*(r.aget(timeout=30) for r in naps))
        # awaited before it is sent, by the same loop: a wait that blocked the loop would
        # keep the send from happening and end in a ResultTimeout
        task_id = str(uuid.uuid4())
        waiting = asyncio.ensure_future(app.AsyncResult(task_id).aget(timeout=30))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await tasks.add.aapply_async((20, 22), task_id=task_id)
        sent_later = await waiting
        with pytest.raises(Boom, match="on uvloop"):
            await failed
        job = group(tasks.nap.s(0.6, "slow"), tasks.nap.s(0.05, "fast"), app=app)
        group_result = await loop.run_in_executor(None, job.apply_async)
        order = [r.result async for r in group_result.aiter_completed(timeout=30)]
        return await first, values, sent_later, order

    first, values, sent_later, order = uvloop.run(asyncio.wait_for(main(), 60))
    assert first == 5
    assert values == list(range(100))
    assert sent_later == 42
    assert sorted(order) == ["fast", "slow"]  # the order is test_async_results' concern
