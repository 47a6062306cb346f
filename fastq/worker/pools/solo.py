"""The solo pool: jobs run one after another in the consumer's own thread."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ...execution import Execution
from ...limits import MainThreadTerminator
from .base import RELEASE, Completion, Pool, logger


class SoloPool(Pool):
    """No concurrency and no hand-off: the lowest overhead per task."""

    synchronous = True

    def __init__(self, executor, concurrency: int = 1) -> None:
        super().__init__(executor, 1)
        self._done: list[Completion] = []
        self.running = None  # the request in progress, for cold shutdown
        self._terminator = MainThreadTerminator(Execution._invoke.__code__, self._running_id)

    def start(self) -> None:
        self._terminator.install()

    def _running_id(self) -> str | None:
        running = self.running
        return None if running is None else running.id

    def terminate(self, task_id: str, signum: int) -> bool:
        if not self._terminator.installed:
            return super().terminate(task_id, signum)
        if self._terminator.terminate(task_id, signum):
            return True
        if self._running_id() == task_id:
            logger.warning("Task %s did not stop when asked to (stuck outside Python?): it "
                           "runs to its end; revoked, it will not run again", task_id)
        return False

    def submit(self, jobs: Sequence, should_stop: Callable[[], bool]) -> None:
        run = self.executor.run
        done = self._done.append
        for index, (task, request) in enumerate(jobs):
            if should_stop():
                for _task, left in jobs[index:]:
                    done((left, RELEASE, None))
                return
            self.running = request
            action, argument = run(task, request)
            self.running = None
            done((request, action, argument))

    def completions(self) -> list[Completion]:
        done, self._done = self._done, []
        return done

    def running_requests(self) -> list:
        return [] if self.running is None else [self.running]

    def grow(self, n: int = 1) -> None:
        raise NotImplementedError("the solo pool runs one task at a time")

    shrink = grow
