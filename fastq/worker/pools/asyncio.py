"""The asyncio pool: ``async def`` tasks as coroutines on one event loop per worker."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ...limits import ThreadLimiter
from .base import RELEASE, HandOffPool

logger = logging.getLogger("fastq.worker")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


_RETIRE = object()


class PlainFunctionThreads:
    """Daemon threads that run the plain (not ``async def``) functions of an asyncio pool.

    Not a ``ThreadPoolExecutor``: the interpreter joins those threads at exit, so a
    terminated task or one a cold shutdown left behind would hold the worker process open
    until its function returned (its outcome is settled already, and nobody waits for it).
    """

    def __init__(self, n: int) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._count = 0
        self.resize(n)

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((future, fn))
        return future

    def resize(self, n: int) -> None:
        """``n`` threads from now on: more start at once, fewer retire after their job."""
        while self._count < n:
            self._count += 1
            threading.Thread(target=self._work, daemon=True,
                             name=f"fastq-sync-task-{self._count}").start()
        while self._count > n:
            self._count -= 1
            self._jobs.put(_RETIRE)

    def shutdown(self) -> None:
        """Retire every thread once it is free; jobs not begun are cancelled."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not _RETIRE:
                job[0].cancel()
        self.resize(0)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _RETIRE:
                return
            future, fn = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # the task's own outcome, raised in the loop
                future.set_exception(exc)


class AsyncioPool(HandOffPool):
    """Up to ``concurrency`` tasks at once on an event loop in its own thread.

    ``async def`` tasks are awaited on the loop, their time limits delivered as
    cancellation; plain functions run in the loop's thread executor (``concurrency``
    threads), so a blocking call cannot stall the coroutines.
    """

    def __init__(self, executor, concurrency: int = 1) -> None:
        super().__init__(executor, concurrency)
        executor.limiter = ThreadLimiter()  # for the plain functions on executor threads
        #: made by start() and closed by the thread that runs it: a pool never started
        #: holds no loop (nor its self-pipe sockets) for the garbage collector to find
        self.loop: asyncio.AbstractEventLoop
        self._thread: threading.Thread | None = None
        self._slots: asyncio.Semaphore | None = None
        self._threads: PlainFunctionThreads | None = None
        self._pending = 0
        self._idle = threading.Event()
        self._idle.set()

    def start(self) -> None:
        ready = threading.Event()
        self.loop = loop = new_event_loop()

        def run_loop() -> None:
            asyncio.set_event_loop(loop)
            self._threads = PlainFunctionThreads(self.concurrency)
            self.executor.run_in_thread = self._threads.submit
            self._slots = asyncio.Semaphore(self.concurrency)
            ready.set()
            try:
                loop.run_forever()
            finally:
                _close_loop(loop, self._threads)

        self._thread = threading.Thread(target=run_loop, name="fastq-asyncio", daemon=True)
        self._thread.start()
        ready.wait()

    def submit(self, jobs: Sequence, should_stop: Callable[[], bool]) -> None:
        self._pending += len(jobs)
        self._idle.clear()
        self.loop.call_soon_threadsafe(self._start_jobs, list(jobs))

    def _start_jobs(self, jobs: list) -> None:
        for task, request in jobs:
            self.loop.create_task(self._job(task, request))

    async def _job(self, task, request) -> None:
        # keyed by its own asyncio task, which terminate() cancels
        key = asyncio.current_task()
        try:
            async with self._slots:
                if not self._accepting:
                    self._finish((request, RELEASE, None))
                    return
                self._running[key] = request
                try:
                    action, argument = await self.executor.run_async(task, request)
                finally:
                    del self._running[key]
                self._finish((request, action, argument))
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and not self._accepting:
                raise  # stop() after a close: the consumer has requeued what was running
            logger.exception("task %s[%s] failed outside its own code; it is requeued",
                             request.name, request.id)
            from ..executor import REQUEUE

            self._finish((request, REQUEUE, None))
        finally:
            self._pending -= 1
            if not self._pending:
                self._idle.set()

    def terminate(self, task_id: str, signum: int) -> bool:
        """Cancel the coroutine running ``task_id``; a plain function on an executor
        thread cannot be stopped: its outcome is REVOKED, its thread runs on to the end."""
        for job, request in list(self._running.items()):
            if request.id == task_id:
                self.executor.terminating[task_id] = signum
                self.loop.call_soon_threadsafe(job.cancel)
                return True
        return False

    def grow(self, n: int = 1) -> None:
        super().grow(n)
        # more slots need as many threads for the plain functions among the tasks
        assert self._threads is not None, "grow() before start()"
        self.loop.call_soon_threadsafe(self._threads.resize, self.concurrency)
        for _ in range(n):
            self.loop.call_soon_threadsafe(self._slots.release)

    def shrink(self, n: int = 1) -> None:
        n = min(n, self.concurrency - 1)
        super().shrink(n)

        async def take() -> None:
            for _ in range(n):
                await self._slots.acquire()

        asyncio.run_coroutine_threadsafe(take(), self.loop)

    def close(self, cold: bool = False) -> None:
        self._accepting = False
        if not cold:
            self._idle.wait()

    def stop(self, cold: bool = False) -> None:
        self._accepting = False
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        try:
            # queued even before run_forever begins, which then returns at once
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:
            pass  # closed already: the thread is on its way out
        thread.join(timeout=5)


def _close_loop(loop: asyncio.AbstractEventLoop, threads: PlainFunctionThreads | None) -> None:
    """Close ``loop`` once it has stopped, as ``asyncio.run`` would: what a cold stop left
    unfinished is cancelled and let unwind first."""
    try:
        leftovers = asyncio.all_tasks(loop)
        for task in leftovers:
            task.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        if threads is not None:
            threads.shutdown()  # a plain function still running is not waited for
        asyncio.set_event_loop(None)
        loop.close()
