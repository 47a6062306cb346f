"""Running one request, the same way in a worker and in the caller: time limits, retries,
the outcome to store, and the follow-up tasks a workflow asks for. No I/O of its own.

``Execution._invoke`` is the only place a task body is called, by ``run`` or, on an event
loop, ``run_async`` (one prologue, ``_begin``, and one epilogue, ``_succeeded`` or
``_failed``, for both): the worker's ``Executor``
(``fastq/worker/executor.py``) and eager mode (``fastq/eager.py``) subclass it and say
where outcomes go (``pending_results``, drained by the subclass) and what happens to
follow-up tasks (``send_children``: published by a worker, run in place when eager).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import logging
import os
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from types import CoroutineType
from typing import TYPE_CHECKING, Any, NamedTuple

from . import signals
from ._time import parse_datetime
from .backends.base import ChordPart
from .exceptions import Ignore, Reject, Retry, TimeLimitExceeded
from .limits import (
    AlarmLimiter,
    HardTimeLimit,
    TaskTerminated,
    await_limited,
    thread_event_loop,
)
from .states import FAILURE, IGNORED, REJECTED, RETRY, REVOKED, STARTED, SUCCESS

if TYPE_CHECKING:
    from .task import Request, Task

logger = logging.getLogger("fastq.worker")

#: What the consumer does with a delivery once its task is over.
ACK, REQUEUE, DEAD_LETTER, DEFER = "ack", "requeue", "dead_letter", "defer"

# The receivers of the task signals, bound once: each list is only changed in place, so
# ``if _PRERUN:`` is the whole cost of a signal nobody listens to (no call, no allocation).
_PRERUN = signals.task_prerun.receivers
_POSTRUN = signals.task_postrun.receivers
_SUCCESS = signals.task_success.receivers
_FAILURE = signals.task_failure.receivers
_RETRY = signals.task_retry.receivers
_REVOKED = signals.task_revoked.receivers
_INTERNAL = signals.task_internal_error.receivers


class ExceptionInfo:
    """The ``einfo`` given to ``on_failure``, ``on_retry`` and the failure signals: the
    exception, its type, its traceback object and the formatted text (Celery's names)."""

    __slots__ = ("exception", "type", "tb", "traceback")

    def __init__(self, exc: BaseException, text: str | None = None) -> None:
        self.exception = exc
        self.type = type(exc)
        self.tb = exc.__traceback__
        self.traceback = text if text is not None else "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__))

    @property
    def exc_info(self) -> tuple:
        return (self.type, self.exception, self.tb)

    def __str__(self) -> str:
        return self.traceback

    def __repr__(self) -> str:
        return f"<ExceptionInfo: {self.exception!r}>"


class Child(NamedTuple):
    """A task a finished one sets off: a link callback or errback, or the chain's next."""

    #: Celery's signature dict (``task``, ``args``, ``kwargs``, ``options``, ``immutable``)
    signature: dict
    #: arguments put before the signature's own, unless it is immutable
    prepend: tuple
    #: the rest of the chain, stored reversed (the next task last), for the chain's next
    chain: list | None


def revoked_error_dict(reason: str) -> dict:
    # Celery's own class names, so Celery clients re-raise TaskRevokedError too.
    return {"exc_type": "TaskRevokedError", "exc_message": [reason],
            "exc_module": "celery.exceptions"}


def not_registered_dict(name: str) -> dict:
    return {"exc_type": "NotRegistered", "exc_message": [name],
            "exc_module": "celery.exceptions"}


class Execution:
    """Runs requests and collects their outcomes.

    ``run`` returns ``(action, argument)`` (ACK, REQUEUE, DEAD_LETTER + reason); the
    outcomes wait in ``pending_results`` as ``(task_id, state, result, traceback,
    extended)`` until the subclass takes them.
    """

    def __init__(self, conf: Any, hostname: str) -> None:
        self.conf = conf
        self.hostname = hostname
        #: outcomes not yet taken; a deque because pool threads append while another
        #: thread drains it
        self.pending_results: deque[tuple] = deque()
        #: how time limits reach a running task; each pool sets its own
        self.limiter: Any = AlarmLimiter()
        #: ids not to run (a worker's revoked set); tested once more just before a run
        self.revoked_ids: Mapping[str, Any] = {}
        #: log "received" and "succeeded" per task (at -l info); off by default, as they
        #: cost per task. The level is read once, as Celery's tracer reads it.
        self.log_received = self.log_succeeded = logger.isEnabledFor(logging.INFO)
        #: a hook that raises: logged in a worker (the outcome is already recorded),
        #: raised to the caller in eager mode, as Celery does
        self.propagate_hook_errors = False
        #: finished chord members ``(part, state, result)`` to count once their results
        #: are stored (``on_chord_part_return``); the subclass takes them after
        #: ``pending_results``
        self.pending_chord_parts: deque[tuple] = deque()
        #: the tasks errbacks are looked up in (``call_errbacks``): the App's registry
        self.tasks: Mapping[str, Task] = {}
        #: where ``run_async`` runs a plain function (the asyncio pool's own threads);
        #: None: the loop's default executor
        self.run_in_thread: Callable[[Callable[[], Any]], concurrent.futures.Future] | None = None
        #: task id -> signal of the coroutines ``revoke(terminate=True)`` cancels (the
        #: asyncio pool): their CancelledError is a termination, not a worker stopping
        self.terminating: dict[str, int] = {}

    # -- what subclasses provide ---------------------------------------------------------
    def store_now(self, task_id: str, state: str, result: Any, tb: str | None = None,
                  request: Request | None = None) -> None:
        """Record an outcome that must be visible before the task ends (STARTED)."""
        self.pending_results.append((task_id, state, result, tb, self._extended(request)))

    def send_children(self, request: Request, children: list[Child]) -> None:
        """Set off the follow-up tasks of ``request``, each result added to its
        ``children``."""
        raise NotImplementedError

    def _extended(self, request: Request | None) -> dict | None:
        """Extra fields stored with an outcome (``result_extended``, reply routing)."""
        return None

    def call_errbacks(self, request: Request, errbacks: list, exc: BaseException,
                      tb: str | None) -> None:
        """Set off ``link_error`` signatures of a failed request, by Celery's rule
        (``errback_takes_request``): an errback this app knows whose function takes
        ``(request, exc, traceback)`` is called here with them; the others are set off
        like any follow-up task (``send_children``), the failed id before their own
        arguments. Only the sending differs between a worker and eager mode."""
        by_id = []
        for errback in errbacks:
            task = self.tasks.get(errback["task"]) if isinstance(errback, dict) else None
            if task is None or not errback_takes_request(task, errback):
                by_id.append(Child(errback, (request.id,), None))
            else:
                call_errback(task, errback, request, exc, tb)
        if by_id:
            self.send_children(request, by_id)

    # -- running ---------------------------------------------------------------------
    def run(self, task: Task, request: Request) -> tuple[str, Any]:
        """Run ``task`` for ``request``; record its outcome; return how to ack.

        The request is the task's current one from ``task_prerun`` to ``task_postrun``,
        so hooks and receivers see ``task.request``. ``_begin`` is the prologue and
        ``_succeeded``/``_failed`` the epilogue ``run_async`` shares.
        """
        begun = self._begin(task, request)
        if begun is None:  # revoked or expired while it waited: recorded, not run
            return ACK, None
        previous, ignore_result, hard, soft, started = begun
        try:
            if hard or soft:
                value = self.limiter.call(self._invoke, task, request, hard, soft)
            else:
                value = self._invoke(task, request)
        except BaseException as exc:
            return self._failed(task, request, exc, ignore_result, hard, started, previous)
        return self._succeeded(task, request, value, ignore_result, started, previous)

    async def run_async(self, task: Task, request: Request) -> tuple[str, Any]:
        """``run`` for an event loop (the asyncio pool): an ``async def`` task is awaited
        on the running loop, with its time limits as cancellation; a plain function runs
        on ``run_in_thread`` (else the loop's default executor), so it cannot stall the
        other coroutines. A coroutine cancelled by ``terminate`` (its id in
        ``terminating``) ends REVOKED, as a terminated task does."""
        begun = self._begin(task, request)
        if begun is None:
            return ACK, None
        previous, ignore_result, hard, soft, started = begun
        try:
            if inspect.iscoroutinefunction(task.run):
                value = await await_limited(self._invoke(task, request, awaited=True),
                                            hard, soft)
            else:
                value = await self._invoke_in_thread(task, request, hard, soft)
        except BaseException as exc:
            if self.terminating and isinstance(exc, asyncio.CancelledError) \
                    and request.id in self.terminating:
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
                exc = TaskTerminated(self.terminating.pop(request.id))
            return self._failed(task, request, exc, ignore_result, hard, started, previous)
        return self._succeeded(task, request, value, ignore_result, started, previous)

    def _invoke_in_thread(self, task: Task, request: Request, hard: float | None,
                          soft: float | None) -> Awaitable[Any]:
        """The body of a plain function, run off the event loop in a copy of this
        context (the current request, the trace)."""
        context = contextvars.copy_context()
        if hard or soft:
            call = functools.partial(context.run, self.limiter.call, self._invoke, task,
                                     request, hard, soft)
        else:
            call = functools.partial(context.run, self._invoke, task, request)
        loop = asyncio.get_running_loop()
        if self.run_in_thread is None:
            return loop.run_in_executor(None, call)
        return asyncio.wrap_future(self.run_in_thread(call), loop=loop)

    def not_to_run(self, task: Task, request: Request) -> tuple[str, Any] | None:
        """How to ack a request that must not run after all, else None: revoked while
        it waited in hand, or expired meanwhile (checked on arrival too; Celery checks
        again before it runs a task, and so does this)."""
        if request.id in self.revoked_ids:
            return self.skip_revoked(request, task)
        expires = request.headers.get("expires")
        if expires is not None and parse_datetime(expires).timestamp() < time.time():
            return self.skip_revoked(request, task, expired=True)
        return None

    def skip_revoked(self, request: Request, task: Task | None = None,
                     expired: bool = False) -> tuple[str, Any]:
        """Record REVOKED for a revoked (or expired) task instead of running it; its
        message is acked."""
        if expired:
            logger.info("Task %s[%s] expired at %s: revoked, not run", request.name,
                        request.id, request.headers.get("expires"))
        else:
            logger.info("Task %s[%s] revoked: not run", request.name, request.id)
        return self._record_revoked(task, request, "expired" if expired else "revoked",
                                    expired=expired)

    def terminated(self, task: Task, request: Request, signum: int) -> tuple[str, Any]:
        """Record REVOKED (reason "terminated") for a task stopped by
        ``revoke(terminate=True)``; its message is acked, so it is not run again."""
        logger.warning("Task %s[%s] terminated (revoke with terminate=True, signal %s)",
                       request.name, request.id, signum)
        return self._record_revoked(task, request, "terminated", signum=signum)

    def _record_revoked(self, task: Task | None, request: Request, reason: str, *,
                        expired: bool = False, signum: int | None = None) -> tuple[str, Any]:
        error = revoked_error_dict(reason)
        self.pending_results.append((request.id, REVOKED, error, None, self._extended(request)))
        if request.embed and request.embed.get("chord"):  # the chord fails, not hangs
            self.pending_chord_parts.append((request, REVOKED, error))
        if _REVOKED:
            signals.task_revoked.send(sender=task, request=request,
                                      terminated=reason == "terminated", signum=signum,
                                      expired=expired)
        return ACK, None

    def internal_error(self, task: Task, request: Request, exc: BaseException) -> None:
        """Send ``task_internal_error`` for ``exc``, raised by fastq around the task."""
        signals.task_internal_error.send(
            sender=task, task_id=request.id, args=request.args, kwargs=request.kwargs,
            request=request, exception=exc, traceback=exc.__traceback__,
            einfo=ExceptionInfo(exc))

    def _begin(self, task: Task, request: Request) -> tuple[Request | None, bool, float | None,
                                                            float | None, float] | None:
        """The prologue of ``run`` and ``run_async``: None for a request that must not
        run after all (its REVOKED is recorded); else ``request`` made the current one,
        ``task_prerun``, STARTED, and ``(previous request, ignore_result, hard limit,
        soft limit, start time)`` for the epilogue (``_succeeded`` or ``_failed``)."""
        if request.id in self.revoked_ids or request.headers.get("expires") is not None:
            if self.not_to_run(task, request) is not None:  # the rare path: no call otherwise
                return None
        previous = task.push_request(request)
        try:
            if _PRERUN:
                signals.task_prerun.send(sender=task, task_id=request.id, task=task,
                                         args=request.args, kwargs=request.kwargs)
            ignore_result = request.headers.get("ignore_result")
            if ignore_result is None:
                ignore_result = task.ignore_result
                if ignore_result is None:
                    ignore_result = self.conf.task_ignore_result
            if not ignore_result:  # Celery stores nothing for such a task, STARTED neither
                track_started = task.track_started
                if track_started is None:
                    track_started = self.conf.task_track_started
                if track_started:
                    self.store_now(request.id, STARTED,
                                   {"pid": os.getpid(), "hostname": self.hostname},
                                   request=request)
            if self.log_received:
                logger.info("Task %s[%s] received", request.name, request.id)
            hard, soft = time_limits(task, request, self.conf)
        except Exception as exc:
            if _INTERNAL:
                self.internal_error(task, request, exc)
            task.push_request(previous)
            raise
        return previous, ignore_result, hard, soft, time.perf_counter()

    def _invoke(self, task: Task, request: Request, awaited: bool = False) -> Any:
        """The one call of a task's body (the frame the solo and green pools' terminators
        look for). ``awaited``: an ``async def`` body's coroutine is returned for the
        caller's loop to await, not run to the end here."""
        # a plain method, not a static one: CPython 3.11 specializes ``self._invoke`` only
        # for a function, and looks a staticmethod up the slow way at every call
        if not task._plain:
            value = Execution.call_custom(task, request)
        elif task.bind:
            value = task.run(task, *request.args, **request.kwargs)
        else:
            value = task.run(*request.args, **request.kwargs)
        # inspect.iscoroutine without its call: the coroutine type cannot be subclassed
        if type(value) is CoroutineType and not awaited:
            # an ``async def`` task outside the asyncio pool: run it to the end here
            value = thread_event_loop().run_until_complete(value)
        return value

    @staticmethod
    def call_custom(task: Task, request: Request) -> Any:
        """The body of a task whose class overrides a hook or ``__call__``: ``before_start``,
        then ``task(...)`` (so an overridden ``__call__`` runs, as in Celery's worker)."""
        args, kwargs = request.args, request.kwargs
        if task._hooks:
            task.before_start(request.id, args, kwargs)
        if task._custom_call:
            return task(*args, **kwargs)
        if task.bind:
            return task.run(task, *args, **kwargs)
        return task.run(*args, **kwargs)

    def _failed(self, task: Task, request: Request, exc: BaseException, ignore_result: bool,
                hard: float | None, started: float,
                previous: Request | None) -> tuple[str, Any]:
        """The epilogue of a task that raised ``exc``: its outcome recorded, ``previous``
        made the current request again; returns how to ack. Called while ``exc`` is
        being handled."""
        try:
            if isinstance(exc, Retry):
                self._store_failure(request, RETRY, exc.exc or exc, task, ignore_result=False,
                                    retry=exc)
                logger.info("Task %s[%s] retry: %s", request.name, request.id, exc)
                if not task._plain or _RETRY or _POSTRUN:
                    self._report_retry(task, request, exc)
                return ACK, None
            if isinstance(exc, Ignore):
                if _POSTRUN:
                    self._finished(task, request, IGNORED, exc)
                return ACK, None
            if isinstance(exc, Reject):
                logger.info("Task %s[%s] rejected (requeue=%s): %s", request.name, request.id,
                            exc.requeue, exc.reason)
                if _POSTRUN:
                    self._finished(task, request, REJECTED, exc)
                if exc.requeue:
                    return REQUEUE, None
                return DEAD_LETTER, f"rejected: {exc.reason}"
            if isinstance(exc, HardTimeLimit):
                limit_exc = TimeLimitExceeded(hard)
                logger.error("Task %s[%s] killed: hard time limit (%ss) exceeded",
                             request.name, request.id, hard)
                self._store_failure(request, FAILURE, limit_exc, task, ignore_result, tb=None)
                self._errbacks(request, limit_exc, None)
                if not task._plain or _FAILURE or _POSTRUN:
                    self._report_failure(task, request, limit_exc, ExceptionInfo(limit_exc, ""))
                return ACK, None
            if isinstance(exc, TaskTerminated):
                return self.terminated(task, request, exc.signum)
            if not isinstance(exc, Exception):
                # KeyboardInterrupt, SystemExit, a cold shutdown: not the task's outcome
                raise exc
            return self._on_exception(task, request, exc, ignore_result, started)
        except Exception as error:  # fastq's own code around the body (or a hook)
            if _INTERNAL:
                self.internal_error(task, request, error)
            raise
        finally:
            task.push_request(previous)

    def _succeeded(self, task: Task, request: Request, value: Any, ignore_result: bool,
                   started: float, previous: Request | None) -> tuple[str, Any]:
        """The epilogue of a task that returned ``value``: its outcome and follow-ups
        recorded, ``previous`` made the current request again; returns how to ack."""
        try:
            embed = request.embed
            if embed and (embed.get("callbacks") or embed.get("chain")):
                # before its outcome is recorded, which names them among its children
                self._callbacks(request, value)
            if not ignore_result:
                self.pending_results.append((request.id, SUCCESS, value, None,
                                             self._extended(request)))
            if self.log_succeeded:
                logger.info("Task %s[%s] succeeded in %.6fs: %r", request.name, request.id,
                            time.perf_counter() - started, value)
            if embed and embed.get("chord"):
                self.pending_chord_parts.append((request, SUCCESS, value))
            if not task._plain or _SUCCESS or _POSTRUN:
                self._report_success(task, request, value, started)
            return ACK, None
        except Exception as error:  # fastq's own code around the body (or a hook)
            if _INTERNAL:
                self.internal_error(task, request, error)
            raise
        finally:
            task.push_request(previous)

    def _on_exception(self, task: Task, request: Request, exc: Exception,
                      ignore_result: bool, started: float) -> tuple[str, Any]:
        if task.autoretry_for and isinstance(exc, task.autoretry_for) and not (
                task.dont_autoretry_for and isinstance(exc, task.dont_autoretry_for)):
            options = dict(task.retry_kwargs)
            if task.retry_backoff:
                options["countdown"] = task.backoff_countdown(request.retries)
            previous = task.push_request(request)
            try:
                task.retry(exc=exc, **options)
            except Retry as retry:
                self._store_failure(request, RETRY, exc, task, ignore_result=False, retry=retry)
                logger.info("Task %s[%s] retry: %s", request.name, request.id, retry)
                if not task._plain or _RETRY or _POSTRUN:
                    self._report_retry(task, request, retry)
                return ACK, None
            except Reject as reject:
                if _POSTRUN:
                    self._finished(task, request, REJECTED, reject)
                return DEAD_LETTER, f"rejected: {reject.reason}"
            except Exception as final:  # max retries reached: the task fails with it
                exc = final
            finally:
                task.push_request(previous)
        tb = traceback.format_exc()
        logger.error("Task %s[%s] raised %s in %.6fs: %s", request.name, request.id,
                     type(exc).__name__, time.perf_counter() - started, exc)
        self._store_failure(request, FAILURE, exc, task, ignore_result, tb=tb)
        self._errbacks(request, exc, tb)
        if not task._plain or _FAILURE or _POSTRUN:
            self._report_failure(task, request, exc, ExceptionInfo(exc, tb))
        return ACK, None

    # -- hooks and signals: called only when a hook is overridden or a receiver listens --
    def _report_success(self, task: Task, request: Request, value: Any, started: float) -> None:
        if task._hooks:
            self._hook(task, request, task.on_success, value, request.id, request.args,
                       request.kwargs)
        if _SUCCESS:
            signals.task_success.send(sender=task, result=value,
                                      runtime=time.perf_counter() - started)
        self._finished(task, request, SUCCESS, value)

    def _report_failure(self, task: Task, request: Request, exc: BaseException,
                        einfo: ExceptionInfo) -> None:
        if task._hooks:
            self._hook(task, request, task.on_failure, exc, request.id, request.args,
                       request.kwargs, einfo)
        if _FAILURE:
            signals.task_failure.send(sender=task, task_id=request.id, exception=exc,
                                      args=request.args, kwargs=request.kwargs,
                                      traceback=exc.__traceback__, einfo=einfo)
        self._finished(task, request, FAILURE, exc, einfo)

    def _report_retry(self, task: Task, request: Request, retry: Retry) -> None:
        einfo = ExceptionInfo(retry, "")
        if task._hooks:
            self._hook(task, request, task.on_retry, retry.exc, request.id, request.args,
                       request.kwargs, einfo)
        if _RETRY:
            signals.task_retry.send(sender=task, request=request, reason=retry, einfo=einfo)
        self._finished(task, request, RETRY, retry)

    def _finished(self, task: Task, request: Request, state: str, retval: Any,
                  einfo: ExceptionInfo | None = None) -> None:
        """``after_return`` (success and failure only) and ``task_postrun`` (always)."""
        if task._hooks and (state == SUCCESS or state == FAILURE):
            self._hook(task, request, task.after_return, state, retval, request.id,
                       request.args, request.kwargs, einfo)
        if _POSTRUN:
            signals.task_postrun.send(sender=task, task_id=request.id, task=task,
                                      args=request.args, kwargs=request.kwargs,
                                      retval=retval, state=state)

    def _hook(self, task: Task, request: Request, hook: Any, *args: Any) -> None:
        try:
            hook(*args)
        except Exception:
            if self.propagate_hook_errors:
                raise
            # the outcome is stored already: recording another would be a lie
            logger.exception("Task %s[%s] %s raised", request.name, request.id,
                             getattr(hook, "__name__", hook))

    def _store_failure(self, request: Request, state: str, exc: BaseException, task: Task,
                       ignore_result: bool, tb: str | None = "",
                       retry: Retry | None = None) -> None:
        if ignore_result:
            keep = task.store_errors_even_if_ignored
            if keep is None:
                keep = self.conf.task_store_errors_even_if_ignored
            if not keep:
                return
        if tb == "":
            tb = traceback.format_exc()
        self.pending_results.append((request.id, state, exc, tb, self._extended(request)))

    # -- workflows -------------------------------------------------------------------
    def _callbacks(self, request: Request, value: Any) -> None:
        embed = request.embed
        children = [Child(sig, (value,), None) for sig in embed.get("callbacks") or ()]
        chain = embed.get("chain")
        if chain:
            # embed.chain is stored reversed: the next task is last
            children.append(Child(chain[-1], (value,), chain[:-1]))
        if children:
            self.send_children(request, children)

    def _errbacks(self, request: Request, exc: BaseException, tb: str | None) -> None:
        """A failed request's follow-ups: its errbacks; FAILURE for the rest of its chain
        (so nobody waits on a step that will never run); its chord's count."""
        embed = request.embed
        if not embed:
            return
        errbacks = embed.get("errbacks")
        if errbacks:
            try:
                self.call_errbacks(request, errbacks, exc, tb)
            except Exception:
                logger.exception("could not send the errbacks of %s[%s]",
                                 request.name, request.id)
        if embed.get("chord"):
            self.pending_chord_parts.append((request, FAILURE, exc))
        if embed.get("chain"):
            self._fail_chain(embed["chain"], exc, tb)

    def _fail_chain(self, chain: Any, exc: BaseException, tb: str | None) -> None:
        """Store FAILURE for each chain step that has an id, and count a step that is a
        chord member as a failed member, so a chord waiting on the chain fails too."""
        if not isinstance(chain, list):
            return
        for step in chain:
            options = step.get("options") if isinstance(step, dict) else None
            if not isinstance(options, dict) or not options.get("task_id"):
                continue
            task_id = options["task_id"]
            self.pending_results.append((task_id, FAILURE, exc, tb, None))
            if options.get("chord"):
                part = ChordPart(task_id, options.get("group_id"), options.get("group_index"),
                                 {"chord": options["chord"]})
                self.pending_chord_parts.append((part, FAILURE, exc))


#: The ``timelimit`` header of a message sent without time limits.
_NO_LIMITS = [None, None]


def time_limits(task: Task, request: Request, conf: Any) -> tuple[float | None, float | None]:
    """(hard, soft) from the message's ``timelimit`` [hard, soft], else task, else app."""
    limits = request.headers.get("timelimit")
    hard = soft = None
    # Celery sends [None, None] when the caller gave no limit: nothing there to vet
    if limits and limits != _NO_LIMITS and type(limits) in (list, tuple):
        hard = limits[0]
        soft = limits[1] if len(limits) > 1 else None
        # Other clients send strings or junk here now and then: ignore, as Celery does.
        if type(hard) not in (int, float) or hard <= 0:
            hard = None
        if type(soft) not in (int, float) or soft <= 0:
            soft = None
    if hard is None:
        hard = task.time_limit if task.time_limit is not None else conf.task_time_limit
    if soft is None:
        soft = task.soft_time_limit if task.soft_time_limit is not None else conf.task_soft_time_limit
    return hard, soft


def errback_takes_request(task: Task, errback: dict) -> bool:
    """Whether ``task`` is an errback of Celery's new kind: not ``bind=True`` (Celery
    sends those as tasks, so they may retry) and able to take more than one positional
    argument besides those its signature binds (Celery's ``_errback_arity_greater``)."""
    if task.bind:
        return False
    fun = task.run
    own_args, own_kwargs = errback.get("args") or (), errback.get("kwargs") or {}
    try:
        if not errback.get("immutable") and (own_args or own_kwargs):
            try:
                parameters = inspect.signature(
                    functools.partial(fun, *own_args, **own_kwargs)).parameters.values()
            except (TypeError, ValueError):  # arguments the function cannot take
                parameters = inspect.signature(fun).parameters.values()
        else:
            parameters = inspect.signature(fun).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = 0
    for parameter in parameters:
        if parameter.kind is parameter.VAR_POSITIONAL:
            return True
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            positional += 1
    return positional > 1


def call_errback(task: Task, errback: dict, request: Request, exc: BaseException,
                 tb: str | None) -> None:
    """Call errback ``task`` of signature dict ``errback`` here, with ``(request, exc,
    traceback)`` before its own arguments (none when immutable, as Celery's
    ``Signature.__call__``). What it raises is logged: the failure is recorded already."""
    own_args, own_kwargs = errback.get("args") or (), errback.get("kwargs") or {}
    try:
        if errback.get("immutable"):
            task(*own_args, **own_kwargs)
        else:
            task(request, exc, tb, *own_args, **own_kwargs)
    except Exception:
        logger.exception("Errback %s of %s[%s] raised", errback["task"], request.name,
                         request.id)


def child_arguments(child: Child) -> tuple[list, dict]:
    """The args and kwargs ``child`` runs with: its own, after ``prepend`` unless immutable."""
    sig = child.signature
    args = list(sig.get("args") or ())
    if not sig.get("immutable"):
        args = [*child.prepend, *args]
    return args, dict(sig.get("kwargs") or {})


__all__ = ["Execution", "ExceptionInfo", "Child", "ACK", "REQUEUE", "DEAD_LETTER", "DEFER",
           "time_limits", "child_arguments", "errback_takes_request", "call_errback", "revoked_error_dict", "not_registered_dict"]
