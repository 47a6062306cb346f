"""Runs one Request: time limits, retries, result storage, callbacks; says how to ack."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import os
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..exceptions import (
    Ignore,
    Reject,
    Retry,
    TimeLimitExceeded,
)
from ..result import FAILURE, RETRY, REVOKED, STARTED, SUCCESS, EagerResult
from ..task import Request, Task
from .control import RevokedSet
from .limits import AlarmLimiter, HardTimeLimit, await_limited, thread_event_loop

if TYPE_CHECKING:
    from ..app import App

logger = logging.getLogger("fastq.worker")

#: What the consumer does with a delivery once its task is over.
ACK, REQUEUE, DEAD_LETTER, DEFER = "ack", "requeue", "dead_letter", "defer"

#: Options a signature may carry that ``App.build_message`` understands.
_SIGNATURE_OPTIONS = frozenset({
    "task_id", "countdown", "eta", "expires", "queue", "priority", "headers",
    "ignore_result", "serializer", "compression", "time_limit", "soft_time_limit",
    "link", "link_error", "shadow", "group_id", "group_index", "reply_to",
})


def revoked_error_dict(reason: str) -> dict:
    # Celery's own class names, so Celery clients re-raise TaskRevokedError too.
    return {"exc_type": "TaskRevokedError", "exc_message": [reason],
            "exc_module": "celery.exceptions"}


def not_registered_dict(name: str) -> dict:
    return {"exc_type": "NotRegistered", "exc_message": [name],
            "exc_module": "celery.exceptions"}


class Executor:
    """Executes requests for one worker process and collects their results.

    ``run`` returns ``(action, argument)`` for the consumer (ACK, REQUEUE,
    DEAD_LETTER + reason); results wait in ``pending_results`` until the consumer
    stores them in one batch, just before it acks.
    """

    def __init__(self, app: App, hostname: str) -> None:
        self.app = app
        self.hostname = hostname
        self.conf = app.conf
        #: outcomes waiting to be stored in one batch; a deque because pool threads append
        #: while the consumer drains it
        self.pending_results: deque[tuple] = deque()
        self._flush_lock = threading.Lock()
        self._backend = None
        #: whether the backend sends results to the request's reply_to (rpc://); None
        #: until the backend is first needed, so it is not created for nothing
        self._wants_reply: bool | None = None
        #: how time limits reach a running task; each pool sets its own
        self.limiter: Any = AlarmLimiter()
        #: log "received" per task (at -l info); off by default, it costs per task
        self.log_received = logger.isEnabledFor(logging.INFO)
        # revoke (fastq/worker/control.py): ids the control listener adds; the consumer
        # tests them on receipt, ``run`` again for tasks that waited prefetched
        self.revoked = RevokedSet(self.conf.worker_revokes_max, self.conf.worker_revoke_expires)

    @property
    def backend(self):
        if self._backend is None:
            self._backend = self.app.backend
        return self._backend

    def store_now(self, task_id: str, state: str, result: Any, tb: str | None = None,
                  request: Request | None = None) -> None:
        self.pending_results.append((task_id, state, result, tb, self._extended(request)))
        self.flush_results()

    def flush_results(self) -> None:
        pending = self.pending_results
        if not pending:
            return
        with self._flush_lock:
            records = []
            take = pending.popleft
            while pending:
                records.append(take())
            if not records:
                return
            try:
                self.backend.store_many(records)
            except Exception:
                logger.exception("could not store %d result(s); the tasks still ran",
                                 len(records))

    def _extended(self, request: Request | None) -> dict | None:
        if request is None:
            return None
        wants_reply = self._wants_reply
        if wants_reply is None:
            wants_reply = self._wants_reply = "reply_to" in self.backend.capabilities
        extra = None
        if self.conf.result_extended:
            extra = {"name": request.name, "args": request.args, "kwargs": request.kwargs,
                     "worker": self.hostname, "retries": request.retries,
                     "queue": request.delivery.queue if request.delivery else None}
        if wants_reply:
            # a backend that replies to the caller (rpc://) pops these before encoding
            extra = extra or {}
            extra["_reply_to"] = request.reply_to
            extra["_correlation_id"] = request.correlation_id
        return extra

    # -- running ---------------------------------------------------------------------
    def run(self, task: Task, request: Request) -> tuple[str, Any]:
        """Run ``task`` for ``request``; store its outcome; return how to ack."""
        if request.id in self.revoked.ids:  # revoke: held prefetched while it was revoked
            return self.skip_revoked(request)
        ignore_result, hard, soft = self._begin(task, request)
        started = time.perf_counter()
        previous = task.push_request(request)
        try:
            if hard or soft:
                value = self.limiter.call(self._invoke, task, request, hard, soft)
            else:
                value = self._invoke(task, request)
        except BaseException as exc:
            return self._failed(task, request, exc, ignore_result, hard, started)
        finally:
            task.push_request(previous)
        return self._succeeded(task, request, value, ignore_result, started)

    async def run_async(self, task: Task, request: Request) -> tuple[str, Any]:
        """``run`` for an event loop: an ``async def`` task is awaited on the running loop,
        with its time limits as cancellation; a plain function runs in the loop's default
        thread executor, so it cannot stall the other coroutines."""
        if request.id in self.revoked.ids:  # revoke: held prefetched while it was revoked
            return self.skip_revoked(request)
        ignore_result, hard, soft = self._begin(task, request)
        started = time.perf_counter()
        previous = task.push_request(request)
        try:
            if inspect.iscoroutinefunction(task.run):
                value = await await_limited(self._coroutine(task, request), hard, soft)
            else:
                loop = asyncio.get_running_loop()
                context = contextvars.copy_context()
                if hard or soft:
                    call = functools.partial(context.run, self.limiter.call, self._invoke,
                                             task, request, hard, soft)
                else:
                    call = functools.partial(context.run, self._invoke, task, request)
                value = await loop.run_in_executor(None, call)
        except BaseException as exc:
            return self._failed(task, request, exc, ignore_result, hard, started)
        finally:
            task.push_request(previous)
        return self._succeeded(task, request, value, ignore_result, started)

    def skip_revoked(self, request: Request) -> tuple[str, Any]:
        """Store REVOKED for a revoked task instead of running it; its message is acked."""
        logger.info("Task %s[%s] revoked: not run", request.name, request.id)
        self.pending_results.append((request.id, REVOKED, revoked_error_dict("revoked"), None,
                                     self._extended(request)))
        return ACK, None

    def _begin(self, task: Task, request: Request) -> tuple[bool, float | None, float | None]:
        ignore_result = request.headers.get("ignore_result")
        if ignore_result is None:
            ignore_result = task.ignore_result
            if ignore_result is None:
                ignore_result = self.conf.task_ignore_result
        track_started = task.track_started
        if track_started is None:
            track_started = self.conf.task_track_started
        if track_started:
            self.store_now(request.id, STARTED, {"pid": os.getpid(), "hostname": self.hostname},
                           request=request)
        if self.log_received:
            logger.info("Task %s[%s] received", request.name, request.id)
        hard, soft = _time_limits(task, request, self.conf)
        return ignore_result, hard, soft

    @staticmethod
    def _invoke(task: Task, request: Request) -> Any:
        if task.bind:
            value = task.run(task, *request.args, **request.kwargs)
        else:
            value = task.run(*request.args, **request.kwargs)
        if inspect.iscoroutine(value):
            # an ``async def`` task outside the asyncio pool: run it to the end here
            value = thread_event_loop().run_until_complete(value)
        return value

    @staticmethod
    def _coroutine(task: Task, request: Request) -> Any:
        if task.bind:
            return task.run(task, *request.args, **request.kwargs)
        return task.run(*request.args, **request.kwargs)

    def _failed(self, task: Task, request: Request, exc: BaseException, ignore_result: bool,
                hard: float | None, started: float) -> tuple[str, Any]:
        """How to ack a task that raised ``exc``; called while ``exc`` is being handled."""
        if isinstance(exc, Retry):
            self._store_failure(request, RETRY, exc.exc or exc, task, ignore_result=False)
            logger.info("Task %s[%s] retry: %s", request.name, request.id, exc)
            return ACK, None
        if isinstance(exc, Ignore):
            return ACK, None
        if isinstance(exc, Reject):
            logger.info("Task %s[%s] rejected (requeue=%s): %s", request.name, request.id,
                        exc.requeue, exc.reason)
            return (REQUEUE, None) if exc.requeue else (DEAD_LETTER, f"rejected: {exc.reason}")
        if isinstance(exc, HardTimeLimit):
            limit_exc = TimeLimitExceeded(hard)
            logger.error("Task %s[%s] killed: hard time limit (%ss) exceeded",
                         request.name, request.id, hard)
            self._store_failure(request, FAILURE, limit_exc, task, ignore_result, tb=None)
            self._errbacks(request)
            return ACK, None
        if not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt, SystemExit, a cold shutdown: not the task's outcome
        return self._on_exception(task, request, exc, ignore_result, started)

    def _succeeded(self, task: Task, request: Request, value: Any, ignore_result: bool,
                   started: float) -> tuple[str, Any]:
        if not ignore_result:
            self.pending_results.append((request.id, SUCCESS, value, None,
                                         self._extended(request)))
        if logger.isEnabledFor(logging.INFO):
            logger.info("Task %s[%s] succeeded in %.6fs: %r", request.name, request.id,
                        time.perf_counter() - started, value)
        embed = request.embed
        if embed and (embed.get("callbacks") or embed.get("chain")):
            self._callbacks(request, value)
        return ACK, None

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
                self._store_failure(request, RETRY, exc, task, ignore_result=False)
                logger.info("Task %s[%s] retry: %s", request.name, request.id, retry)
                return ACK, None
            except Reject as reject:
                return DEAD_LETTER, f"rejected: {reject.reason}"
            except Exception as final:  # max retries reached: the task fails with it
                exc = final
            finally:
                task.push_request(previous)
        tb = traceback.format_exc()
        logger.error("Task %s[%s] raised %s in %.6fs: %s", request.name, request.id,
                     type(exc).__name__, time.perf_counter() - started, exc)
        self._store_failure(request, FAILURE, exc, task, ignore_result, tb=tb)
        self._errbacks(request)
        return ACK, None

    def _store_failure(self, request: Request, state: str, exc: BaseException, task: Task,
                       ignore_result: bool, tb: str | None = "") -> None:
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
        messages = []
        for sig in embed.get("callbacks") or ():
            messages.append(self._child_message(sig, request, (value,)))
        chain = embed.get("chain")
        if chain:
            nxt = chain[-1]  # embed.chain is stored reversed: the next task is last
            messages.append(self._child_message(nxt, request, (value,), chain=chain[:-1]))
        if messages:
            self.app.publish_many(messages)

    def _errbacks(self, request: Request) -> None:
        errbacks = request.embed.get("errbacks") if request.embed else None
        if errbacks:
            try:
                self.app.publish_many([self._child_message(sig, request, (request.id,))
                                       for sig in errbacks])
            except Exception:
                logger.exception("could not publish the errbacks of %s[%s]",
                                 request.name, request.id)

    def _child_message(self, sig: dict, request: Request, prepend: Iterable,
                       chain: list | None = None):
        options = {k: v for k, v in (sig.get("options") or {}).items()
                   if k in _SIGNATURE_OPTIONS}
        args = list(sig.get("args") or ())
        if not sig.get("immutable"):
            args = [*prepend, *args]
        return self.app.build_message(
            sig["task"], args, sig.get("kwargs") or {}, chain=chain or None,
            parent_id=request.id, root_id=request.headers.get("root_id") or request.id,
            **options)


def _time_limits(task: Task, request: Request, conf: Any) -> tuple[float | None, float | None]:
    """(hard, soft) from the message's ``timelimit`` [hard, soft], else task, else app."""
    limits = request.headers.get("timelimit")
    hard = soft = None
    if limits and type(limits) in (list, tuple):
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


def run_eager(app: App, task: Task, args: Iterable | None, kwargs: dict | None,
              **options: Any) -> EagerResult:
    """Run a task in the caller as a worker would; retries run again at once."""
    task_id = options.get("task_id") or str(uuid.uuid4())
    retries = 0
    while True:
        headers = {"id": task_id, "task": task.name, "retries": retries, "root_id": task_id,
                   "parent_id": None, "eta": None, "expires": None, "timelimit": [None, None],
                   **(options.get("headers") or {})}
        request = Request(headers, list(args or ()), dict(kwargs or {}), {},
                          hostname="eager", is_eager=True)
        previous = task.push_request(request)
        try:
            value = task(*request.args, **request.kwargs)
        except Retry:
            retries += 1
            continue
        except Exception as exc:
            if app.conf.task_eager_propagates:
                raise
            meta = {"status": FAILURE, "result": _exc_dict(exc),
                    "traceback": traceback.format_exc(), "task_id": task_id}
            return EagerResult(task_id, meta, app=app)
        finally:
            task.push_request(previous)
        meta = {"status": SUCCESS, "result": value, "traceback": None, "task_id": task_id,
                "date_done": datetime.now(timezone.utc).isoformat()}
        return EagerResult(task_id, meta, app=app)


def _exc_dict(exc: BaseException) -> dict:
    from ..backends.base import exception_to_dict

    return exception_to_dict(exc)


__all__ = ["Executor", "ACK", "REQUEUE", "DEAD_LETTER", "DEFER", "REVOKED",
           "revoked_error_dict", "not_registered_dict", "run_eager"]
