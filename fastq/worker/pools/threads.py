"""The threads pool: N threads in the worker process run tasks, for I/O-bound work."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence

from ...exceptions import SoftTimeLimitExceeded
from ...limits import HardTimeLimit, ThreadLimiter
from .base import HandOffPool

logger = logging.getLogger("fastq.worker")

#: tells one thread to exit
_RETIRE = None


class ThreadPool(HandOffPool):
    """Tasks run on ``concurrency`` threads; the consumer stays on the main thread.

    Time limits arrive as exceptions raised asynchronously in the task's thread (see
    ``ThreadLimiter``): a thread cannot be killed, so code blocked in C finishes its call
    before it sees the limit.
    """

    def __init__(self, executor, concurrency: int = 1) -> None:
        super().__init__(executor, concurrency)
        executor.limiter = ThreadLimiter()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._add_threads(self.concurrency)

    def _add_threads(self, n: int) -> None:
        for _ in range(n):
            thread = threading.Thread(target=self._work, daemon=True,
                                      name=f"fastq-task-{len(self._threads) + 1}")
            thread.start()
            self._threads.append(thread)

    def submit(self, jobs: Sequence, should_stop: Callable[[], bool]) -> None:
        put = self._jobs.put
        for job in jobs:
            put(job)

    def _work(self) -> None:
        key = threading.get_ident()
        get, execute = self._jobs.get, self._execute
        while True:
            try:
                job = get()
                if job is _RETIRE:
                    return
                execute(key, job[0], job[1])
            except (SoftTimeLimitExceeded, HardTimeLimit):
                # a limit that fired as its task was returning: the task is over
                logger.debug("a time limit arrived after its task ended; ignored")
            except BaseException:
                logger.exception("a task thread failed outside any task; it carries on")

    def grow(self, n: int = 1) -> None:
        super().grow(n)
        self._add_threads(n)

    def shrink(self, n: int = 1) -> None:
        n = min(n, self.concurrency - 1)
        super().shrink(n)
        for _ in range(n):
            self._jobs.put(_RETIRE)

    def close(self, cold: bool = False) -> None:
        self._accepting = False
        for _ in self._threads:
            self._jobs.put(_RETIRE)  # behind the queued jobs, which complete as RELEASE
        if not cold:
            for thread in self._threads:
                thread.join()
