"""The gevent pool: thousands of tasks at once on gevent greenlets, for I/O-bound work."""

from __future__ import annotations

from ...limits import GreenLimiter
from .green import GreenPool


class GeventPool(GreenPool):
    library = "gevent"

    def _limiter(self) -> GreenLimiter:
        import gevent

        return GreenLimiter(gevent.Timeout, starts_itself=False)

    def _spawn(self, fn):
        import gevent

        return gevent.spawn(fn)

    def _sleep(self, seconds: float) -> None:
        import gevent

        gevent.sleep(seconds)

    def _call_in_hub(self, fn, *args) -> None:
        import gevent

        gevent.get_hub().loop.run_callback(fn, *args)

    def _real_thread(self, target) -> None:
        from gevent import monkey

        thread_module = monkey.get_original("_thread", "start_new_thread")
        thread_module(target, ())

    def _real_sleep(self, seconds: float) -> None:
        from gevent import monkey

        monkey.get_original("time", "sleep")(seconds)
