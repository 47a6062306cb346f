"""What the gevent and eventlet pools share: greenlets per job, hub-friendly fetch, a watchdog."""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ... import _green
from ...execution import Execution
from ...limits import TERMINATE_PATIENCE, GreenLimiter, TaskTerminated, runs_code
from .base import HandOffPool

logger = logging.getLogger("fastq.worker")

#: the frame of a task's own code: a termination is raised only while it is on the stack
_BODY_CODE = Execution._invoke.__code__
#: how often the hub proves it is alive, and how long it may go quiet before we say so
HUB_TICK = 0.1
BLOCKED_AFTER = 1.0


class GreenPool(HandOffPool):
    """Jobs run on greenlets, one spawned per job up to ``concurrency`` at once.

    The process is monkey-patched first thing (``fastq worker -P gevent``), so the
    brokers' sockets, sleeps and locks yield to the hub. A broker whose driver waits in C
    (rabbitmq-c) is waited on through its socket's file descriptor instead. A task that
    blocks the hub is reported by a watchdog on a real OS thread.
    """

    library = ""

    def __init__(self, executor, concurrency: int = 1) -> None:
        if _green.patched != self.library:
            logger.warning("-P %s without monkey-patching at start (set in the config, not on "
                           "the command line?): patching now", self.library)
            _green.patch(self.library)
        super().__init__(executor, concurrency)
        executor.limiter = self._limiter()
        self._jobs: deque = deque()
        self._greenlets = 0
        self._keys = itertools.count()
        #: the greenlet of each ``_work`` loop, by the key its jobs run under
        self._greenlet_of: dict[int, Any] = {}
        self._last_tick = time.monotonic()
        self._watching = True

    # the library-specific parts
    def _limiter(self) -> GreenLimiter:
        raise NotImplementedError

    def _spawn(self, fn: Callable[[], Any]) -> Any:
        raise NotImplementedError

    def _sleep(self, seconds: float) -> None:
        raise NotImplementedError

    def _call_in_hub(self, fn: Callable[..., None], *args: Any) -> None:
        """Call ``fn(*args)`` from the hub's own greenlet, on its next turn."""
        raise NotImplementedError

    def _real_thread(self, target: Callable[[], None]) -> None:
        """Start ``target`` on an OS thread the library has not turned into a greenlet."""
        raise NotImplementedError

    def _join_all(self) -> None:
        while self._greenlets:
            self._sleep(0.01)

    def start(self) -> None:
        self._spawn(self._tick)
        self._real_thread(self._watch_hub)

    def submit(self, jobs: Sequence, should_stop: Callable[[], bool]) -> None:
        self._jobs.extend(jobs)
        while self._greenlets < self.concurrency and self._jobs:
            self._greenlets += 1
            self._spawn(self._work)

    def _work(self) -> None:
        jobs, execute = self._jobs, self._execute
        from greenlet import getcurrent  # installed with gevent and eventlet alike

        key = next(self._keys)
        self._greenlet_of[key] = getcurrent()
        try:
            while jobs:
                task, request = jobs.popleft()
                execute(key, task, request)
        except BaseException:
            logger.exception("a task greenlet failed outside any task")
        finally:
            del self._greenlet_of[key]
            self._greenlets -= 1

    def terminate(self, task_id: str, signum: int) -> bool:
        """Raise TaskTerminated in the greenlet running ``task_id``, where it waits; True
        once raised. Asked from another greenlet (the control listener's), so this waits
        cooperatively; a task between its body's frames (starting, storing its outcome)
        is asked again until TERMINATE_PATIENCE runs out."""
        found = [(key, request) for key, request in list(self._running.items())
                 if request.id == task_id]
        if not found:
            return False
        key, request = found[0]
        thrown: list[bool] = []
        deadline = time.monotonic() + TERMINATE_PATIENCE
        while not thrown and self._running.get(key) is request \
                and time.monotonic() < deadline:
            self._call_in_hub(self._throw_into_body, key, request, signum, thrown)
            self._sleep(0.05)
        return bool(thrown)

    def _throw_into_body(self, key: int, request: Any, signum: int,
                         thrown: list[bool]) -> None:
        # in the hub: nothing runs between this check and the throw, so the exception
        # lands in the task it names and inside its body, never in fastq's bookkeeping
        greenlet = self._greenlet_of.get(key)
        if thrown or greenlet is None or self._running.get(key) is not request \
                or not runs_code(greenlet.gr_frame, _BODY_CODE):
            return
        thrown.append(True)
        greenlet.throw(TaskTerminated(signum))

    def fetch(self, broker, queues, limit, timeout):
        fd = broker.blocking_fd()
        if fd is None:  # the broker's own waits are patched: they yield to the hub
            return broker.fetch(queues, limit, timeout)
        batch = broker.fetch(queues, limit, 0.0)
        if batch or timeout <= 0:
            return batch
        _green.wait_readable(fd, timeout)  # the hub runs other greenlets meanwhile
        return broker.fetch(queues, limit, 0.0)

    def close(self, cold: bool = False) -> None:
        self._accepting = False
        if not cold:
            self._join_all()

    def stop(self, cold: bool = False) -> None:
        self._watching = False

    # -- the blocked-hub watchdog --------------------------------------------------------
    def _tick(self) -> None:
        while self._watching:
            self._last_tick = time.monotonic()
            self._sleep(HUB_TICK)

    def _watch_hub(self) -> None:
        reported = 0.0
        while self._watching:
            self._real_sleep(HUB_TICK)
            quiet = time.monotonic() - self._last_tick
            if quiet >= BLOCKED_AFTER and self._last_tick != reported:
                reported = self._last_tick
                names = ", ".join(f"{r.name}[{r.id}]" for r in self.running_requests()) or "none"
                logger.error("the %s hub has been blocked for %.1fs: a task is blocking "
                             "without yielding (running: %s); use cooperative libraries or "
                             "another pool for CPU-bound work", self.library, quiet, names)

    def _real_sleep(self, seconds: float) -> None:
        raise NotImplementedError
