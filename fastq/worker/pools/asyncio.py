"""The asyncio pool: ``async def`` tasks as coroutines on one event loop per worker."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Sequence

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
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending = 0
        self._idle = threading.Event()
        self._idle.set()

    def start(self) -> None:
        ready = threading.Event()
        self.loop = loop = new_event_loop()

        def run_loop() -> None:
            asyncio.set_event_loop(loop)
            self._use_threads(self.concurrency)
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

    def _use_threads(self, n: int) -> None:
        """Plain functions run on ``n`` threads from now on (called in the loop's thread);
        the previous executor's threads finish what they run, then end."""
        previous = self._threads
        self._threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=n, thread_name_prefix="fastq-sync-task")
        self.loop.set_default_executor(self._threads)
        if previous is not None:
            previous.shutdown(wait=False)

    def grow(self, n: int = 1) -> None:
        super().grow(n)
        # more slots need as many threads for the plain functions among the tasks
        self.loop.call_soon_threadsafe(self._use_threads, self.concurrency)
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


def _close_loop(loop: asyncio.AbstractEventLoop,
                threads: concurrent.futures.ThreadPoolExecutor) -> None:
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
        # a plain function still blocking one of these threads is not waited for
        threads.shutdown(wait=False, cancel_futures=True)
        asyncio.set_event_loop(None)
        loop.close()
