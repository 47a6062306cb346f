"""The prefork pool: child processes that are each a whole solo worker, and the parent
that supervises them (replacement, recycling, autoscaling, the hard time limit backstop).

Shared-nothing: every child has its own broker connection, its own consumer loop (the
compiled one when built) and its own prefetch, so no task crosses a pipe; the parent
holds no broker connection for consuming. Children report over a pipe:

    {"e": "status", "state", "done", "busy", "running", "counters"}  every STATUS_INTERVAL
    {"e": "start", "id", "name", "hard"}   a task with a hard time limit started
    {"e": "end", "id"}                     ... and ended
    {"e": "recycle", "reason"}             stopping at a recycling limit, exits EXIT_RECYCLE

The parent talks back with signals only: SIGTERM (warm stop), SIGQUIT (cold stop),
SIGUSR1 (dump stacks), SIGKILL (the hard limit backstop).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ...supervisor import Worker
from ..base import Completion, Pool
from .autoscale import Autoscaler, parse_autoscale
from .parent import START_METHODS, ChildProcess, PreforkParent


class PreforkPool(Pool):
    """``-P prefork -c N``: N child processes, each a complete solo worker.

    The worker hands control to ``supervise`` instead of running a consumer: this class
    runs no jobs itself, so ``submit``/``completions`` are not for use.
    """

    #: The Worker asks this: a pool that supervises processes gets the whole run.
    supervises_processes = True

    def __init__(self, executor: Any = None, concurrency: int = 1) -> None:
        super().__init__(executor, concurrency)

    def submit(self, jobs: Sequence, should_stop: Callable[[], bool]) -> None:
        raise TypeError("prefork children run their own consumers; nothing is submitted "
                        "to the parent")

    def completions(self) -> list[Completion]:
        return []

    def supervise(self, worker: Worker) -> int:
        """Start the children and supervise them until shut down; the exit code."""
        return PreforkParent(worker).run()


__all__ = ["PreforkPool", "PreforkParent", "ChildProcess", "Autoscaler", "parse_autoscale",
           "START_METHODS"]
