"""The Redis result waiter on a private redis-server: subscription, re-reads, idle close, a lost server."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from fastq.backends import _redis_async
from fastq.backends.redis import RedisBackend
from fastq.result import AsyncResult
from tests.integration.redis_support import PrivateRedis

pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]

DOCUMENT = b'{"status": "SUCCESS", "result": %d, "traceback": null, "children": [], ' \
           b'"date_done": "2026-12-07T00:00:00+00:00", "task_id": "%s"}'


@pytest.fixture
def server():
    private = PrivateRedis().start()
    yield private
    private.stop()


@pytest.fixture
def backend(server):
    backend = RedisBackend(server.url)
    yield backend
    backend.close()


def waiter_connections(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return sum(c.get("name") == _redis_async.CLIENT_NAME for c in client.client_list())
    finally:
        client.close()


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def test_a_published_document_settles_the_wait_without_any_read(backend, server) -> None:
    client = redis.Redis.from_url(server.url)

    async def main():
        waiting = asyncio.ensure_future(AsyncResult("pub-only", backend=backend).aget())
        # published, never stored: only the subscription can see it
        for _ in range(200):
            if client.pubsub_numsub(backend.key("pub-only"))[0][1]:
                break
            await asyncio.sleep(0.01)
        client.publish(backend.key("pub-only"), DOCUMENT % (7, b"pub-only"))
        return await waiting

    try:
        assert run(main()) == 7
    finally:
        client.close()


def test_a_document_stored_without_publishing_is_found_by_the_re_read(backend, server) -> None:
    client = redis.Redis.from_url(server.url)

    async def main():
        waiting = asyncio.ensure_future(AsyncResult("set-only", backend=backend).aget())
        await asyncio.sleep(0.1)
        client.set(backend.key("set-only"), DOCUMENT % (8, b"set-only"))
        started = time.monotonic()
        value = await waiting
        return value, time.monotonic() - started

    try:
        value, elapsed = run(main())
    finally:
        client.close()
    assert value == 8
    assert elapsed < 2.0


def test_an_idle_waiter_closes_its_connections(backend, server, monkeypatch) -> None:
    monkeypatch.setattr(_redis_async, "IDLE_CLOSE_SECONDS", 0.2)

    async def main():
        asyncio.get_running_loop().call_later(0.05, backend.store, "idle", "SUCCESS", 1)
        value = await AsyncResult("idle", backend=backend)
        open_while_used = waiter_connections(server.url)
        waiter = backend._async_waiter()
        for _ in range(300):
            if waiter.closed:
                break
            await asyncio.sleep(0.01)
        for _ in range(100):
            if waiter_connections(server.url) == 0:
                break
            await asyncio.sleep(0.01)
        return value, open_while_used, waiter.closed, waiter_connections(server.url)

    assert run(main()) == (1, 2, True, 0)


def test_a_lost_server_ends_the_wait_with_connection_error(backend, server) -> None:
    async def main():
        waiting = asyncio.ensure_future(AsyncResult("lost", backend=backend).aget())
        await asyncio.sleep(0.2)
        server.stop()
        started = time.monotonic()
        with pytest.raises(ConnectionError, match=r"result backend redis://127\.0\.0\.1:\d+/0: "
                                                  r"waiting failed"):
            await waiting
        return time.monotonic() - started

    assert run(main()) < 15
