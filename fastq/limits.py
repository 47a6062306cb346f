"""Time limits for each kind of pool: how a soft limit reaches a task and a hard one ends it."""

from __future__ import annotations

import asyncio
import ctypes
import heapq
import itertools
import logging
import signal
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

from .exceptions import SoftTimeLimitExceeded

logger = logging.getLogger("fastq.worker")

#: ``fn(task, request)``: the call a limiter guards
Invoke = Callable[[Any, Any], Any]


class HardTimeLimit(BaseException):
    """Raised at a hard limit; a BaseException so that ``except Exception`` in a task
    cannot swallow it."""


class TaskTerminated(BaseException):
    """Raised in a running task by ``revoke(terminate=True)``; ``signum`` is the signal
    the request named. A BaseException for the same reason as HardTimeLimit."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


#: The signal that carries ``revoke(terminate=True)`` to the main thread. Not the one the
#: request names: SIGTERM (its default) already means "warm shutdown" to a worker process,
#: and the process must survive to ack the message and store the outcome itself.
TERMINATE_SIGNAL = signal.SIGUSR2
#: How long ``MainThreadTerminator.terminate`` keeps signalling a task that is between
#: its body's frames (starting, or storing its outcome), in seconds.
TERMINATE_PATIENCE = 2.0


def _soft_error(soft: float) -> SoftTimeLimitExceeded:
    return SoftTimeLimitExceeded(f"soft time limit ({soft}s) exceeded")


def _plan(hard: float | None, soft: float | None) -> tuple[float | None, float | None]:
    """(soft, hard) deadlines in seconds from the start; a soft limit at or past the hard
    one is pointless and dropped. Both count from the start of the task, as in Celery."""
    if soft and hard and soft >= hard:
        soft = None
    return soft or None, hard or None


class AlarmLimiter:
    """SIGALRM on the main thread (solo pool, prefork children): the handler raises in the
    task's frame, even inside ``time.sleep``; code stuck in C sees it when it returns."""

    def call(self, fn: Invoke, task: Any, request: Any, hard: float | None,
             soft: float | None) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return _NO_LIMITS.call(fn, task, request, hard, soft)
        soft, hard = _plan(hard, soft)
        started = time.monotonic()
        state = {"soft_done": soft is None}

        def on_alarm(signum: int, frame: Any) -> None:
            if state["soft_done"]:
                raise HardTimeLimit()
            state["soft_done"] = True
            if hard:
                signal.setitimer(signal.ITIMER_REAL, max(started + hard - time.monotonic(), 1e-3))
            raise _soft_error(soft)

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, soft or hard)
        try:
            return fn(task, request)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


class NoLimits:
    """Where no limit can be enforced: the task runs unbounded, and the log says so once."""

    def __init__(self) -> None:
        self._warned = False

    def call(self, fn: Invoke, task: Any, request: Any, hard: float | None,
             soft: float | None) -> Any:
        if not self._warned:
            self._warned = True
            logger.warning("time limits cannot be enforced here (task %s): it runs unbounded",
                           getattr(task, "name", task))
        return fn(task, request)


_NO_LIMITS = NoLimits()


class _Watch:
    __slots__ = ("thread_id", "active")

    def __init__(self, thread_id: int) -> None:
        self.thread_id = thread_id
        self.active = True


class ThreadLimiter:
    """Limits for tasks on worker threads, raised asynchronously by a watchdog thread.

    Python cannot stop a thread from outside: the exception is delivered when the thread
    next runs Python bytecode. A task looping in Python stops at once; one blocked in C
    (``time.sleep``, a socket read) sees the exception only when that call returns.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Watch, str, float]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def call(self, fn: Invoke, task: Any, request: Any, hard: float | None,
             soft: float | None) -> Any:
        soft, hard = _plan(hard, soft)
        watch = _Watch(threading.get_ident())
        now = time.monotonic()
        with self._cond:
            for limit, kind in ((soft, "soft"), (hard, "hard")):
                if limit:
                    heapq.heappush(self._heap, (now + limit, next(self._order), watch, kind, limit))
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="fastq-time-limits",
                                                 daemon=True)
                self._thread.start()
            self._cond.notify()
        try:
            return fn(task, request)
        finally:
            with self._cond:
                watch.active = False  # from here on the watchdog leaves this thread alone

    def _watch(self) -> None:
        cond, heap = self._cond, self._heap
        with cond:
            while True:
                if not heap:
                    cond.wait()
                    continue
                due, _order, watch, kind, limit = heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    cond.wait(wait)
                    continue
                heapq.heappop(heap)
                if watch.active:
                    error = HardTimeLimit if kind == "hard" else SoftTimeLimitExceeded
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(
                        ctypes.c_ulong(watch.thread_id), ctypes.py_object(error))


class GreenLimiter:
    """Limits for greenlets: the library's Timeout raises inside the task at its next
    switch to the hub (gevent.Timeout, eventlet.Timeout); CPU-bound code without switches
    cannot be interrupted, which the blocked-hub warning reports."""

    def __init__(self, timeout_class: Any, starts_itself: bool) -> None:
        self._timeout_class = timeout_class
        self._starts_itself = starts_itself

    def call(self, fn: Invoke, task: Any, request: Any, hard: float | None,
             soft: float | None) -> Any:
        soft, hard = _plan(hard, soft)
        timers = []
        if soft:
            timers.append(self._timeout_class(soft, _soft_error(soft)))
        if hard:
            timers.append(self._timeout_class(hard, HardTimeLimit()))
        if not self._starts_itself:
            for timer in timers:
                timer.start()
        try:
            return fn(task, request)
        finally:
            for timer in timers:
                timer.cancel()


class MainThreadTerminator:
    """Interrupts the task running on the main thread (solo pool, prefork children) from
    another thread: a signal to the main thread, whose handler raises TaskTerminated.

    The handler raises only while ``body_code`` (the frame that calls the task's body) is
    on the stack and ``running()`` names the target, so fastq's own code around the task
    (bookkeeping, acks) is never interrupted; this costs nothing per task. Like a time
    limit, the exception cuts ``time.sleep`` and socket waits short; code stuck in C sees
    it when it returns to Python.
    """

    def __init__(self, body_code: Any, running: Callable[[], str | None]) -> None:
        self._body_code = body_code
        self._running = running
        self._target: tuple[str, int] | None = None
        self._raised = threading.Event()
        self.installed = False

    def install(self) -> bool:
        """Take TERMINATE_SIGNAL; only the main thread may (a worker in a test thread
        cannot terminate tasks)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        signal.signal(TERMINATE_SIGNAL, self._on_signal)
        self.installed = True
        return True

    def terminate(self, task_id: str, signum: int) -> bool:
        """Interrupt ``task_id`` if it runs; True once TaskTerminated was raised in it."""
        if not self.installed or self._running() != task_id:
            return False
        self._raised.clear()
        self._target = (task_id, signum)
        try:
            deadline = time.monotonic() + TERMINATE_PATIENCE
            while self._running() == task_id and time.monotonic() < deadline:
                signal.pthread_kill(threading.main_thread().ident, TERMINATE_SIGNAL)
                if self._raised.wait(0.05):
                    return True
            return False
        finally:
            self._target = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        target = self._target
        if target is None or self._running() != target[0]:
            return
        if runs_code(frame, self._body_code):
            self._target = None
            self._raised.set()
            raise TaskTerminated(target[1])


def runs_code(frame: Any, code: Any) -> bool:
    """Whether ``code`` is on the stack that ends at ``frame`` (None: an empty stack):
    a task is interrupted only inside its body, never in fastq's code around it."""
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


async def await_limited(coroutine: Coroutine, hard: float | None, soft: float | None) -> Any:
    """Await ``coroutine`` with limits. At the soft limit the task is cancelled: it sees
    ``asyncio.CancelledError`` and may clean up; if that ends it, the outcome is
    SoftTimeLimitExceeded. At the hard limit we stop waiting (TimeLimitExceeded), even
    for a coroutine that swallows its cancellation."""
    soft, hard = _plan(hard, soft)
    if not soft and not hard:
        return await coroutine
    loop = asyncio.get_running_loop()
    child = asyncio.ensure_future(coroutine)
    soft_timer = loop.call_later(soft, child.cancel, "soft time limit") if soft else None
    try:
        done, _pending = await asyncio.wait({child}, timeout=hard)
    except asyncio.CancelledError:  # the worker is stopping: take the task down with us
        child.cancel()
        raise
    finally:
        if soft_timer is not None:
            soft_timer.cancel()
    if not done:
        child.cancel()
        raise HardTimeLimit()
    if child.cancelled():
        raise _soft_error(soft) from None
    return child.result()


class _ThreadLoop:
    """An event loop kept in a thread's locals, closed when they are dropped: when the
    thread (or greenlet, under monkey-patching) ends, or at exit for the main thread.
    Left to the garbage collector, an open loop and its self-pipe sockets each raise a
    ResourceWarning in whatever code happens to be running then."""

    __slots__ = ("loop", "__weakref__")

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        weakref.finalize(self, self.loop.close)


_loops = threading.local()


def thread_event_loop() -> asyncio.AbstractEventLoop:
    """This thread's own event loop, for running an ``async def`` task outside asyncio."""
    held = getattr(_loops, "held", None)
    if held is None or held.loop.is_closed():
        held = _loops.held = _ThreadLoop()
    return held.loop
