"""The eventlet pool: thousands of tasks at once on eventlet greenthreads, for I/O waits."""

from __future__ import annotations

from ...limits import GreenLimiter
from .green import GreenPool


class EventletPool(GreenPool):
    library = "eventlet"

    def _limiter(self) -> GreenLimiter:
        import eventlet

        return GreenLimiter(eventlet.Timeout, starts_itself=True)

    def _spawn(self, fn):
        import eventlet

        return eventlet.spawn(fn)

    def _sleep(self, seconds: float) -> None:
        import eventlet

        eventlet.sleep(seconds)

    def _call_in_hub(self, fn, *args) -> None:
        from eventlet import hubs

        hubs.get_hub().schedule_call_global(0, fn, *args)

    def _real_thread(self, target) -> None:
        from eventlet import patcher

        patcher.original("_thread").start_new_thread(target, ())

    def _real_sleep(self, seconds: float) -> None:
        from eventlet import patcher

        patcher.original("time").sleep(seconds)
