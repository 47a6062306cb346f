"""examples/fastapi_app.py through httpx's ASGI transport, with a real worker process on
Redis: one endpoint sends a task with ``await adelay``, another awaits its result while
the loop goes on serving requests."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.redis_support import example_on_redis, redis_prefix  # noqa: F401

pytestmark = pytest.mark.integration

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")


@pytest.fixture
def example(redis_prefix, sqlite_env, monkeypatch):  # noqa: F811 - the fixture imported above
    """The example module on this test's broker keys, and a worker for it, not started."""
    with example_on_redis("examples.fastapi_app", redis_prefix, sqlite_env, monkeypatch) as parts:
        yield parts


def test_a_request_awaits_a_result_while_the_loop_serves_others(example):
    module, worker, sent = example

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=module.api)
        async with httpx.AsyncClient(transport=transport, base_url="http://example") as client:
            first = (await client.post("/sums", params={"x": 2, "y": 3})).json()["task_id"]
            sent.append(first)
            waiting = asyncio.create_task(client.get(f"/sums/{first}", params={"wait": 30}))
            # no worker runs yet; the awaiting request leaves the loop free for this one
            second = (await client.post("/sums", params={"x": 10, "y": 20})).json()["task_id"]
            sent.append(second)
            assert not waiting.done()
            await asyncio.to_thread(worker.start)
            answer = await waiting
            assert answer.status_code == 200
            assert answer.json() == {"task_id": first, "value": 5}
            answer = await client.get(f"/sums/{second}")
            assert answer.json() == {"task_id": second, "value": 30}
            never_sent = await client.get("/sums/never-sent", params={"wait": 0.2})
            assert never_sent.status_code == 504

    asyncio.run(scenario())
