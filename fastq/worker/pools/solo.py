"""The solo pool: jobs run one after another in the consumer's own thread."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .base import RELEASE, Completion, Pool


class SoloPool(Pool):
    """No concurrency and no hand-off: the lowest overhead per task."""

    synchronous = True

    def __init__(self, executor, concurrency: int = 1) -> None:
        super().__init__(executor, 1)
        self._done: list[Completion] = []
        self.running = None  # the request in progress, for cold shutdown

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
