"""Per-task bookkeeping of a supervised worker process: tasks done, busy time, recycling
limits, and the check that keeps a redelivered, already finished task from running again."""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..execution import time_limits
from ..states import READY_STATES

if TYPE_CHECKING:
    from ..brokers.base import Delivery
    from ..task import Request, Task
    from .executor import Executor

logger = logging.getLogger("fastq.worker")

#: Exit status of a worker process that stopped because it reached a recycling limit
#: (EX_TEMPFAIL): its supervisor replaces it without calling it a crash.
EXIT_RECYCLE = 75

#: Seconds between two resident-size checks; reading it costs a few microseconds, too
#: much to pay after every no-op task.
MEMORY_CHECK_INTERVAL = 0.1

_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024 if hasattr(os, "sysconf") else 4


def resident_kib() -> int:
    """This process's resident set size now, in KiB (its peak where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE_KIB
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak // 1024 if sys.platform == "darwin" else peak  # macOS counts bytes


class TaskObserver:
    """Callbacks of whoever supervises this process (the prefork parent's pipe)."""

    def task_started(self, task_id: str, name: str, hard_limit: float) -> None:
        """A task with a hard time limit started."""

    def task_ended(self, task_id: str) -> None:
        """The task last reported by ``task_started`` ended."""


class TaskMeter:
    """Counts the tasks ``executor`` runs and the time it spends in them, and calls
    ``on_limit(reason)`` once, after the task that reaches ``max_tasks`` or leaves the
    process above ``max_memory_kib``.

    It wraps ``executor.run`` on the instance, so every pool that runs jobs through the
    executor is metered without knowing about it; install it before the pool is built.
    """

    def __init__(self, executor: Executor, *, max_tasks: int | None = None,
                 max_memory_kib: int | None = None,
                 on_limit: Callable[[str], None] | None = None,
                 observer: TaskObserver | None = None) -> None:
        self.done = 0
        self.busy_seconds = 0.0
        #: monotonic start of the task in progress, 0.0 when idle, and its id
        self.running_since = 0.0
        self.running_id: str | None = None
        self.max_tasks = max_tasks or None
        self.max_memory_kib = max_memory_kib or None
        self.on_limit = on_limit
        self.observer = observer
        self.limit_reached: str | None = None
        self._has_limits = self.max_tasks is not None or self.max_memory_kib is not None
        self._conf = executor.conf
        self._next_memory_check = 0.0
        self._run = executor.run
        executor.run = self.run  # type: ignore[method-assign]
        self._run_async = executor.run_async
        executor.run_async = self.run_async  # type: ignore[method-assign]

    def busy_now(self) -> float:
        """Seconds spent running tasks so far, the one in progress included."""
        since = self.running_since
        return self.busy_seconds + (time.monotonic() - since if since else 0.0)

    def run(self, task: Task, request: Request) -> tuple[str, Any]:
        observer = self.observer
        hard = None
        if observer is not None:
            limits = request.headers.get("timelimit")
            # the full lookup only when some hard limit may apply: most tasks have none
            if (limits and type(limits) in (list, tuple) and limits[0]) \
                    or task.time_limit is not None or self._conf.task_time_limit is not None:
                hard = time_limits(task, request, self._conf)[0]
                if hard:
                    observer.task_started(request.id, request.name, hard)
        self.running_id = request.id
        started = self.running_since = time.monotonic()
        try:
            return self._run(task, request)
        finally:
            ended = time.monotonic()
            self.running_since = 0.0
            self.running_id = None
            self.busy_seconds += ended - started
            self.done += 1
            if hard:
                observer.task_ended(request.id)  # type: ignore[union-attr]
            if self._has_limits and self.limit_reached is None:
                self._check_limits(ended)

    async def run_async(self, task: Task, request: Request) -> tuple[str, Any]:
        """``run`` for the asyncio pool: counted, limits checked; several run at once, so
        no single running task is tracked."""
        try:
            return await self._run_async(task, request)
        finally:
            self.done += 1
            if self._has_limits and self.limit_reached is None:
                self._check_limits(time.monotonic())

    def _check_limits(self, now: float) -> None:
        reason = None
        if self.max_tasks is not None and self.done >= self.max_tasks:
            reason = f"{self.done} tasks done (max-tasks-per-child={self.max_tasks})"
        elif self.max_memory_kib is not None and now >= self._next_memory_check:
            self._next_memory_check = now + MEMORY_CHECK_INTERVAL
            rss = resident_kib()
            if rss > self.max_memory_kib:
                reason = (f"resident size {rss} KiB after {self.done} tasks "
                          f"(max-memory-per-child={self.max_memory_kib} KiB)")
        if reason is not None:
            self.limit_reached = reason
            if self.on_limit is not None:
                self.on_limit(reason)


def finished_before(executor: Executor, delivery: Delivery) -> str | None:
    """The ready state already stored for a redelivered message's task, else None.

    A worker killed after its task ended (or killed by its supervisor at the hard time
    limit, which stores TimeLimitExceeded) leaves the message unacked; it comes back, and
    must be acked, not run again. Only asked for redeliveries, so first deliveries pay
    nothing; backends that cannot be read by task id (rpc://) always say None.
    """
    task_id = delivery.headers.get("id")
    if not isinstance(task_id, str) or executor.app.backend_url is None:
        return None
    try:
        backend = executor.backend
        if "reply_to" in backend.capabilities:
            return None
        state = backend.get(task_id)["status"]
    except Exception:
        logger.warning("could not read the stored state of redelivered task %s; running it",
                       task_id, exc_info=True)
        return None
    if state in READY_STATES:
        logger.info("Task %s[%s] redelivered but already %s: acked, not run again",
                    delivery.headers.get("task"), task_id, state)
        return state
    return None
