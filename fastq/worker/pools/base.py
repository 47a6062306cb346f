"""The Pool interface: where requests run, and the stream of their completions."""

from __future__ import annotations

import abc
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...brokers.base import Broker, Delivery
    from ...task import Request, Task
    from ..executor import Executor

logger = logging.getLogger("fastq.worker")

#: A finished job: the request, the ack action (executor.ACK, ...) and its argument.
Completion = tuple["Request", str, Any]

#: Action for a job the pool never started (warm shutdown): release it unprocessed.
RELEASE = "release"


class Pool(abc.ABC):
    """Runs ``(task, request)`` jobs with ``executor`` and reports what to ack.

    ``submit`` may run jobs before it returns (``synchronous`` pools: solo) or hand them
    to workers; either way ``completions`` returns the jobs finished since the last call,
    in any order, and the consumer acks from them.
    """

    #: submit runs the jobs before returning; the consumer then needs no waiting
    synchronous = False

    def __init__(self, executor: Executor, concurrency: int = 1) -> None:
        self.executor = executor
        self.concurrency = concurrency

    def start(self) -> None:  # noqa: B027 - optional
        """Start workers (processes, threads); solo has none."""

    @abc.abstractmethod
    def submit(self, jobs: Sequence[tuple[Task, Request]],
               should_stop: Callable[[], bool]) -> None:
        """Run or schedule ``jobs``; jobs not started once ``should_stop()`` turns true
        (or the pool is closing) complete with the RELEASE action."""

    @abc.abstractmethod
    def completions(self) -> list[Completion]:
        """The jobs that finished since the last call."""

    def wait(self, timeout: float) -> None:  # noqa: B027 - synchronous pools never wait
        """Block until a job may have finished, or ``timeout`` seconds."""

    def fetch(self, broker: Broker, queues: list[str], limit: int,
              timeout: float) -> list[Delivery]:
        """Take deliveries from ``broker``; green pools wait through their hub instead."""
        return broker.fetch(queues, limit, timeout)

    def running_requests(self) -> list[Request]:
        """The requests executing right now (a cold shutdown requeues them)."""
        return []

    def terminate(self, task_id: str, signum: int) -> bool:
        """Interrupt ``task_id`` if it runs here (``revoke(terminate=True)``); True if
        it was. Pools that cannot interrupt a task say so and let it finish; its revoke
        stays, so it does not run again."""
        if any(request.id == task_id for request in self.running_requests()):
            logger.warning("Task %s cannot be interrupted by the %s: it runs to its "
                           "end (revoked: it will not run again). Terminating needs -P "
                           "prefork, solo, gevent, eventlet or asyncio.", task_id,
                           type(self).__name__)
        return False

    def grow(self, n: int = 1) -> None:
        """Run ``n`` more jobs at once."""
        self.concurrency += n

    def shrink(self, n: int = 1) -> None:
        """Run ``n`` fewer jobs at once (never fewer than one)."""
        self.concurrency = max(1, self.concurrency - n)

    def close(self, cold: bool = False) -> None:  # noqa: B027 - optional
        """Start no more jobs (queued ones complete with RELEASE); warm waits for the
        running ones to finish, cold returns at once."""

    def stop(self, cold: bool = False) -> None:  # noqa: B027 - optional
        """Release the pool's resources (threads, event loops) once the consumer is done."""


class HandOffPool(Pool):
    """Base of the pools whose jobs run elsewhere (threads, greenlets, an event loop):
    finished jobs are queued for the consumer, which is woken through ``_wakeup``."""

    def __init__(self, executor: Executor, concurrency: int = 1) -> None:
        super().__init__(executor, concurrency)
        self._done: deque[Completion] = deque()
        self._running: dict[int, Request] = {}
        self._accepting = True
        self._wakeup = self._make_event()

    def _make_event(self) -> Any:
        return threading.Event()

    def _execute(self, key: int, task: Task, request: Request) -> None:
        """Run one job in the calling worker and queue its completion."""
        if not self._accepting:
            self._finish((request, RELEASE, None))
            return
        self._running[key] = request
        try:
            action, argument = self.executor.run(task, request)
        finally:
            del self._running[key]
        self._finish((request, action, argument))

    def _finish(self, completion: Completion) -> None:
        self._done.append(completion)
        self._wakeup.set()

    def completions(self) -> list[Completion]:
        done = self._done
        out = []
        while done:  # popleft is atomic: workers may append meanwhile
            out.append(done.popleft())
        return out

    def wait(self, timeout: float) -> None:
        if not self._done:
            self._wakeup.wait(timeout)
        self._wakeup.clear()

    def running_requests(self) -> list[Request]:
        return list(self._running.values())
