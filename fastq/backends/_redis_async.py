"""Awaiting Redis results on an event loop: one subscription and one reading connection for every wait.

Every task id awaited on a loop is subscribed on a single pub/sub connection (the
channel named like its key, where each write is published) and read once on a second
connection after the subscription is confirmed, so a result stored in between is never
missed. Both connections belong to the loop's ``RedisNotifiedWaiter``; subscriptions
and reads go out in batches, so a thousand concurrent awaits cost a few commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import redis.asyncio

from ..exceptions import DecodeError
from ._async_wait import IDLE_CLOSE_SECONDS, READ_CHUNK, AsyncWaiter
from .base import pending_meta

if TYPE_CHECKING:
    from .redis import RedisBackend

logger = logging.getLogger("fastq.backends")

#: The name the waiter's connections give themselves (``CLIENT LIST`` shows it).
CLIENT_NAME = "fastq-result-waiter"

#: Longest single read of the subscription, in seconds, between looks at the clock.
READ_SLICE = 1.0

#: Seconds Redis has to confirm a subscription before waiting counts as failed.
SUBSCRIBE_TIMEOUT = 10.0


class RedisNotifiedWaiter(AsyncWaiter):
    """Settles awaited results from their channels' messages, re-reading every
    ``recheck_interval`` s for writers that store without publishing."""

    backend: RedisBackend

    def __init__(self, backend: RedisBackend, loop: asyncio.AbstractEventLoop,
                 recheck_interval: float) -> None:
        super().__init__(backend, loop)
        self.recheck_interval = recheck_interval
        kwargs = backend._pool.connection_kwargs
        self.pool = redis.asyncio.ConnectionPool.from_url(
            backend.url, socket_connect_timeout=kwargs.get("socket_connect_timeout"),
            client_name=CLIENT_NAME)
        self.client = redis.asyncio.Redis(connection_pool=self.pool)
        self.pubsub = self.client.pubsub()
        self.subscribed: set[str] = set()
        self.unsubscribe_ids: set[str] = set()
        self.reader: asyncio.Task[None] | None = None
        #: the channel whose "subscribe" reply ends the batch in flight, and its future
        self.confirming: tuple[bytes, asyncio.Future[None]] | None = None

    def forgotten(self, task_id: str) -> None:
        if task_id in self.subscribed:
            self.unsubscribe_ids.add(task_id)
            self.wake.set()

    async def run(self) -> None:
        recheck_interval = self.recheck_interval
        next_recheck = time.monotonic() + recheck_interval
        idle_since: float | None = None
        try:
            while True:
                self.wake.clear()
                if self.reader is not None and self.reader.done():
                    self.reader.result()  # its error ends the waiter
                    raise ConnectionError("the subscription's reader stopped")
                awaited = set(self.awaited_ids())
                await self._unsubscribe(self.unsubscribe_ids - awaited)
                new = self.new_ids & awaited
                self.new_ids.clear()
                await self._subscribe(sorted(new - self.subscribed))
                now = time.monotonic()
                if now >= next_recheck:
                    next_recheck = now + recheck_interval
                    await self._read(set(self.awaited_ids()))
                elif new:
                    await self._read(new)
                if self.awaited_ids():
                    idle_since = None
                    await self.idle_wait(max(0.0, next_recheck - time.monotonic()))
                    continue
                idle_since = idle_since or time.monotonic()
                idle_for = time.monotonic() - idle_since
                if idle_for >= IDLE_CLOSE_SECONDS:
                    return
                await self.idle_wait(min(IDLE_CLOSE_SECONDS - idle_for, recheck_interval))
        finally:
            if self.reader is not None:
                self.reader.cancel()
                with contextlib.suppress(BaseException):
                    await self.reader

    async def _subscribe(self, task_ids: list[str]) -> None:
        if not task_ids:
            return
        channels = [self.backend.key(task_id) for task_id in task_ids]
        confirmed: asyncio.Future[None] = self.loop.create_future()
        self.confirming = (channels[-1].encode(), confirmed)
        await self.pubsub.subscribe(*channels)
        if self.reader is None:
            self.reader = self.loop.create_task(self._read_messages(),
                                                name="fastq-redis-result-reader")
        # Redis answers one subscription after another: the last one's reply means
        # every channel of the batch is live, so the read that follows misses nothing
        try:
            await asyncio.wait_for(asyncio.shield(confirmed), SUBSCRIBE_TIMEOUT)
        except asyncio.TimeoutError:
            raise ConnectionError(f"Redis did not confirm a subscription within "
                                  f"{SUBSCRIBE_TIMEOUT}s") from None
        self.subscribed.update(task_ids)

    async def _unsubscribe(self, task_ids: set[str]) -> None:
        self.unsubscribe_ids.clear()
        if task_ids:
            self.subscribed -= task_ids
            await self.pubsub.unsubscribe(*(self.backend.key(t) for t in task_ids))

    async def _read(self, task_ids: set[str]) -> None:
        ids = sorted(task_ids)
        for start in range(0, len(ids), READ_CHUNK):
            chunk = ids[start:start + READ_CHUNK]
            values = await self.client.mget([self.backend.key(t) for t in chunk])
            for task_id, value in zip(chunk, values):
                if value is None:
                    self.settle(task_id, pending_meta(task_id))
                    continue
                try:
                    meta = self.backend.decode_stored(value)
                except DecodeError as exc:
                    self.fail(task_id, exc)
                else:
                    self.settle(task_id, meta)

    async def _read_messages(self) -> None:
        prefix = self.backend.prefix.encode()
        try:
            while True:
                message = await self.pubsub.get_message(timeout=READ_SLICE)
                if message is None:
                    continue
                kind, channel = message["type"], message["channel"]
                if kind == "subscribe":
                    confirming = self.confirming
                    if confirming is not None and confirming[0] == channel:
                        if not confirming[1].done():
                            confirming[1].set_result(None)
                elif kind == "message" and channel.startswith(prefix):
                    try:
                        meta = self.backend.decode_stored(message["data"])
                    except DecodeError as exc:
                        # the next re-read reports it to the waiter; one bad
                        # publish must not end the wait of every other task
                        logger.warning("an undecodable result was published on %r: %s",
                                       channel, exc)
                        continue
                    self.settle(channel[len(prefix):].decode(), meta)
        finally:
            self.wake.set()

    async def close_resources(self) -> None:
        for close in (self.pubsub.aclose, self.client.aclose, self.pool.disconnect):
            with contextlib.suppress(Exception):
                await close()

