"""examples/tornado_app.py served on 127.0.0.1 and called with Tornado's HTTP client, with
a real worker process on Redis: a handler awaits a result while the loop serves others."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.integration.redis_support import example_on_redis, redis_prefix  # noqa: F401

pytestmark = pytest.mark.integration

pytest.importorskip("tornado")


@pytest.fixture
def example(redis_prefix, sqlite_env, monkeypatch):  # noqa: F811 - the fixture imported above
    """The example module on this test's broker keys, and a worker for it, not started."""
    with example_on_redis("examples.tornado_app", redis_prefix, sqlite_env, monkeypatch) as parts:
        yield parts


def test_a_handler_awaits_a_result_while_the_loop_serves_others(example):
    from tornado.httpclient import AsyncHTTPClient
    from tornado.httpserver import HTTPServer
    from tornado.testing import bind_unused_port

    module, worker, sent = example

    async def scenario() -> None:
        sock, port = bind_unused_port("127.0.0.1")
        server = HTTPServer(module.make_app())
        server.add_sockets([sock])
        client = AsyncHTTPClient()
        base = f"http://127.0.0.1:{port}/sums"

        async def send(x: int, y: int) -> str:
            answer = await client.fetch(f"{base}?x={x}&y={y}", method="POST", body=b"")
            task_id = json.loads(answer.body)["task_id"]
            sent.append(task_id)
            return task_id

        try:
            first = await send(2, 3)
            waiting = asyncio.ensure_future(client.fetch(f"{base}/{first}?wait=30",
                                                       request_timeout=60))
            # no worker runs yet; the awaiting handler leaves the loop free for this one
            second = await send(10, 20)
            assert not waiting.done()
            await asyncio.to_thread(worker.start)
            assert json.loads((await waiting).body) == {"task_id": first, "value": 5}
            answer = await client.fetch(f"{base}/{second}")
            assert json.loads(answer.body) == {"task_id": second, "value": 30}
            never_sent = await client.fetch(f"{base}/never-sent?wait=0.2", raise_error=False)
            assert never_sent.code == 504
        finally:
            server.stop()
            client.close()

    asyncio.run(scenario())
