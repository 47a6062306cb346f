"""Awaiting results on an event loop: one shared waiter per backend and loop, never a thread per wait.

``Backend.await_ready`` hands each wait to the ``AsyncWaiter`` of its backend on the
running loop. The waiter keeps the futures of every task id awaited there and settles
them all from one place: here, a poller that reads every awaited id in one
``get_many`` call per round, on a single thread of its own (the store's client
blocks; the loop must not), backing off while nothing changes. Stores that can
notify (Redis) bring their own waiter.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .._registry import mask_url
from ..exceptions import DecodeError, ResultTimeout
from ..states import PENDING, READY_STATES

if TYPE_CHECKING:
    from .base import Backend

#: First and longest pause, in seconds, between two rounds of the poller; a new wait
#: brings it back to the first.
ASYNC_POLL_MIN = 0.005
ASYNC_POLL_MAX = 0.1

#: Seconds a waiter with nothing to wait for keeps its thread or connections before
#: closing them; the next wait on the loop starts a new one.
IDLE_CLOSE_SECONDS = 30.0

#: Ids read per ``get_many`` call, so one round never builds an unbounded query.
READ_CHUNK = 1000


class AsyncWaiter:
    """The futures of the task ids awaited on one loop; subclasses settle them.

    ``watch`` registers a future and ``unwatch`` drops it; ``settle`` resolves every
    future of an id with its ready meta document. ``run`` is the subclass's loop, started
    on the first watch and ended once idle (or by cancellation when the loop shuts down).
    """

    def __init__(self, backend: Backend, loop: asyncio.AbstractEventLoop) -> None:
        self.backend = backend
        self.loop = loop
        self.futures: dict[str, list[asyncio.Future[dict]]] = {}
        #: the latest non-ready state seen per awaited id, for the timeout message
        self.last_state: dict[str, str] = {}
        self.new_ids: set[str] = set()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.closed = False

    async def wait(self, task_id: str, timeout: float | None) -> dict:
        """The ready meta document of ``task_id``.

        Raises:
            ResultTimeout: ``timeout`` seconds passed first.
            ConnectionError: the store could not be read while waiting.
        """
        future = self.watch(task_id)
        try:
            if timeout is None:
                return await future
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout)
            except asyncio.TimeoutError:
                if future.done() and not future.cancelled():
                    return future.result()
                state = self.last_state.get(task_id, PENDING)
                raise ResultTimeout(f"task {task_id} is still {state} after {timeout}s") \
                    from None
        finally:
            self.unwatch(task_id, future)

    def watch(self, task_id: str) -> asyncio.Future[dict]:
        future: asyncio.Future[dict] = self.loop.create_future()
        self.futures.setdefault(task_id, []).append(future)
        self.new_ids.add(task_id)
        self.wake.set()
        if self.task is None:
            self.task = self.loop.create_task(self._run_then_forget(),
                                              name=f"fastq-result-waiter-{id(self):x}")
        return future

    def unwatch(self, task_id: str, future: asyncio.Future[dict]) -> None:
        futures = self.futures.get(task_id)
        if futures is None:
            return
        if future in futures:
            futures.remove(future)
        if not futures:
            del self.futures[task_id]
            self.last_state.pop(task_id, None)
            self.forgotten(task_id)

    def forgotten(self, task_id: str) -> None:
        """Nobody awaits ``task_id`` any more (a hook for waiters that subscribe)."""

    def settle(self, task_id: str, meta: dict) -> None:
        """Hand a meta document read for ``task_id`` to its waiters if it is final."""
        if meta["status"] not in READY_STATES:
            if task_id in self.futures:
                self.last_state[task_id] = meta["status"]
            return
        for future in self.futures.get(task_id, ()):
            if not future.done():
                future.set_result(meta)

    def fail(self, task_id: str, exc: BaseException) -> None:
        """Raise ``exc`` in the waiters of ``task_id`` (its stored document is unreadable)."""
        for future in self.futures.get(task_id, ()):
            if not future.done():
                future.set_exception(exc)

    def fail_all(self, exc: BaseException) -> None:
        for futures in self.futures.values():
            for future in futures:
                if not future.done():
                    future.set_exception(exc)

    def awaited_ids(self) -> list[str]:
        """The ids some future still waits for (settled ones leave when their caller
        resumes)."""
        return [task_id for task_id, futures in self.futures.items()
                if any(not future.done() for future in futures)]

    async def _run_then_forget(self) -> None:
        try:
            await self.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.fail_all(ConnectionError(
                f"result backend {mask_url(self.backend.url)}: waiting failed: {exc}"))
        finally:
            # forgotten before anything else is awaited: a wait that starts from here
            # on gets a new waiter instead of one that is going away
            self.closed = True
            self.backend._forget_async_waiter(self)
            await self.close_resources()

    async def run(self) -> None:
        raise NotImplementedError

    async def close_resources(self) -> None:
        """Release what ``run`` opened (connections); called once it ended."""

    async def idle_wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a new watch; return whether one came."""
        try:
            await asyncio.wait_for(self.wake.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


class PollingWaiter(AsyncWaiter):
    """Reads every awaited id in one ``get_many`` per round, on its own single thread."""

    async def run(self) -> None:
        executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="fastq-result-poll")
        try:
            pause = ASYNC_POLL_MIN
            idle_since: float | None = None
            while True:
                self.wake.clear()
                had_new = bool(self.new_ids)
                self.new_ids.clear()
                ids = self.awaited_ids()
                if not ids:
                    idle_since = idle_since or time.monotonic()
                    left = IDLE_CLOSE_SECONDS - (time.monotonic() - idle_since)
                    if left <= 0 or not await self.idle_wait(left):
                        return
                    continue
                idle_since = None
                for chunk in _chunks(ids, READ_CHUNK):
                    await self.loop.run_in_executor(executor, self._read, chunk)
                pause = ASYNC_POLL_MIN if had_new else min(pause * 2, ASYNC_POLL_MAX)
                if not self.awaited_ids() or await self.idle_wait(pause):
                    pause = ASYNC_POLL_MIN
        finally:
            # the thread may be inside a read; it ends once that returns
            executor.shutdown(wait=False)


    def _read(self, task_ids: list[str]) -> None:
        """One round's read, on the poller's thread; settles through the loop."""
        try:
            metas = self.backend.get_many(task_ids)
        except DecodeError:
            # one unreadable document fails its own waiters, not every wait on the loop
            for task_id in task_ids:
                try:
                    meta = self.backend.get(task_id)
                except DecodeError as exc:
                    self.loop.call_soon_threadsafe(self.fail, task_id, exc)
                else:
                    self.loop.call_soon_threadsafe(self.settle, task_id, meta)
            return
        for task_id, meta in zip(task_ids, metas):
            self.loop.call_soon_threadsafe(self.settle, task_id, meta)


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
