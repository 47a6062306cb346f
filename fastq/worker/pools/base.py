"""The Pool interface: where requests run, and the stream of their completions."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...task import Request, Task
    from ..executor import Executor

#: A finished job: the request, the ack action (executor.ACK, ...) and its argument.
Completion = tuple["Request", str, Any]

#: Action for a job the pool never started (warm shutdown): release it unprocessed.
RELEASE = "release"


class Pool(abc.ABC):
    """Runs ``(task, request)`` jobs with ``executor`` and reports what to ack.

    ``submit`` may run jobs before it returns (solo) or hand them to workers; either way
    ``completions`` returns the jobs finished since the last call, in any order.
    """

    def __init__(self, executor: Executor, concurrency: int = 1) -> None:
        self.executor = executor
        self.concurrency = concurrency

    def start(self) -> None:  # noqa: B027 - optional
        """Start workers (processes, threads); solo has none."""

    @abc.abstractmethod
    def submit(self, jobs: Sequence[tuple[Task, Request]],
               should_stop: Callable[[], bool]) -> None:
        """Run or schedule ``jobs``; jobs not started once ``should_stop()`` turns true
        complete with the RELEASE action."""

    @abc.abstractmethod
    def completions(self) -> list[Completion]:
        """The jobs that finished since the last call."""

    def free_slots(self) -> int:
        """How many more jobs could start now."""
        return self.concurrency

    def stop(self, cold: bool = False) -> None:  # noqa: B027 - optional
        """Stop workers: warm waits for running jobs, cold ends them."""
