"""The worker's side of running a request: results stored in batches, follow-up tasks
published, revoked ids honoured; transitions noted for events and runs traced."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..builtins import chain_step_messages, send_chord_body
from ..execution import (
    ACK,
    DEAD_LETTER,
    DEFER,
    REQUEUE,
    Child,
    Execution,
    not_registered_dict,
    revoked_error_dict,
)
from ..result import AsyncResult
from ..states import PROPAGATE_STATES
from ..tracing import Tracing
from .events import value_repr
from .revoked import RevokedSet

if TYPE_CHECKING:
    from ..app import App
    from ..task import Request, Task

logger = logging.getLogger("fastq.worker")


class Executor(Execution):
    """Executes requests for one worker process and collects their results.

    Results wait in ``pending_results`` until the consumer stores them in one batch,
    just before it acks.
    """

    def __init__(self, app: App, hostname: str) -> None:
        super().__init__(app.conf, hostname)
        self.app = app
        self.tasks = app.tasks
        self._flush_lock = threading.Lock()
        self._backend = None
        #: whether the backend sends results to the request's reply_to (rpc://); None
        #: until the backend is first needed, so it is not created for nothing
        self._wants_reply: bool | None = None
        #: the worker's broker when it can carry rpc:// replies with its acks (the
        #: consumer sets it); whether it will is decided with the backend, on first use
        self.reply_broker: Any = None
        self._replies_with_acks: bool | None = None
        # revoke (fastq/worker/control.py): ids the control listener adds; the consumer
        # tests them on receipt, ``run`` again for tasks that waited prefetched
        self.revoked = RevokedSet(self.conf.worker_revokes_max, self.conf.worker_revoke_expires)
        self.revoked_ids = self.revoked.ids
        #: task id -> unix time it started, for tasks running while transitions are
        #: noted (``inspect active``'s ``time_start``)
        self.started_at: dict[str, float] = {}
        #: where task transitions go while noted (``note_transitions``), else None; a
        #: consumer that sets ``consumer_notes_receipts`` appends each receipt here too,
        #: ``("received", unix time, request)``, instead of task events hearing of it
        #: through the ``task_received`` signal (a signal send costs ~1.4 us a task)
        self.record_transition: Callable[[tuple], None] | None = None
        self.consumer_notes_receipts = False
        #: the trace context each task runs in, while tracing is on (fastq/tracing.py);
        #: then the traced ``run`` and ``run_async`` are put on the instance, before a
        #: ``TaskMeter`` or a pool binds them, so that off a task runs the class's code
        self.tracing: Tracing | None = app.tracing
        if self.tracing is not None:
            self.run = self._run_traced  # type: ignore[method-assign]
            self.run_async = self._run_async_traced  # type: ignore[method-assign]

    @property
    def backend(self):
        if self._backend is None:
            self._backend = self.app.backend
        return self._backend

    def store_now(self, task_id: str, state: str, result: Any, tb: str | None = None,
                  request: Request | None = None) -> None:
        super().store_now(task_id, state, result, tb, request)
        if state in PROPAGATE_STATES and request is not None and request.embed and \
                request.embed.get("chord"):
            # revoked, expired or unknown before it ran: its chord fails rather than hangs
            self.pending_chord_parts.append((request, state, result))
        self.flush_results()

    def flush_results(self) -> None:
        pending = self.pending_results
        if not pending and not self.pending_chord_parts:
            return
        with self._flush_lock:
            # the chord members taken before the results: each one's own result is in
            # this batch or an earlier one, so it is stored before its chord is counted
            parts = []
            while self.pending_chord_parts:
                parts.append(self.pending_chord_parts.popleft())
            records = self._take_results()
            if records:
                try:
                    self.backend.store_many(records)
                except Exception:
                    logger.exception("could not store %d result(s); the tasks still ran",
                                     len(records))
            for part, state, result in parts:
                self._chord_part_return(part, state, result)

    def _take_results(self) -> list[tuple]:
        """Every outcome waiting in ``pending_results``, oldest first (under the flush lock)."""
        pending = self.pending_results
        take = pending.popleft
        records = []
        while pending:
            records.append(take())
        return records

    def take_replies(self) -> list[tuple] | None:
        """The pending results as rpc:// replies for the consumer to send with its acks
        (``AMQPBroker.ack_many_with_replies``): one write for both, where the backend
        replies over the worker's own RabbitMQ. None when the results take the usual way
        (``flush_results``): another backend or broker, or chord members to count after
        their results are stored."""
        sends = self._replies_with_acks
        if sends is False or self.pending_chord_parts:
            return None
        pending = self.pending_results
        if not pending:
            return [] if sends else None
        if sends is None:  # the first results: the backend is needed now (not before)
            sends = self._replies_with_acks = self.reply_broker is not None and \
                getattr(self.backend, "broker_url", None) == self.reply_broker.url and \
                hasattr(self.backend, "encode_replies")
            if not sends:
                return None
        with self._flush_lock:
            records = self._take_results()
        if not records:
            return []
        try:
            return self.backend.encode_replies(records)
        except Exception:
            logger.exception("could not store %d result(s); the tasks still ran", len(records))
            return []

    def send_replies(self, replies: list[tuple]) -> None:
        """Send ``take_replies``' messages through the backend's own connection (when the
        broker's could not take them)."""
        try:
            self.backend.send_replies(replies)
        except Exception:
            logger.exception("could not store %d result(s); the tasks still ran", len(replies))

    def _chord_part_return(self, part: Any, state: str, result: Any) -> None:
        """Count a finished chord member; the last one in sends the body. A failure here
        is logged: the member's message is still acked (a redelivery would find the
        same malformed chord), and the worker goes on."""
        parent_id = part.id
        root_id = getattr(part, "root_id", None) or parent_id

        def dispatch(ready: Any) -> None:
            send_chord_body(self.app, ready, parent_id=parent_id, root_id=root_id)
        try:
            self.backend.on_chord_part_return(part, state, result, dispatch)
        except Exception:
            logger.exception("Chord %s: could not count member %s", part.group, part.id)

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
            parent_id = request.headers.get("parent_id")
            if parent_id:  # AsyncResult.parent reads it
                extra["parent_id"] = parent_id
        if wants_reply:
            # a backend that replies to the caller (rpc://) pops these before encoding
            extra = extra or {}
            extra["_reply_to"] = request.reply_to
            extra["_correlation_id"] = request.correlation_id
        children = request._children
        if children:  # the tasks it sent, as Celery stores them (AsyncResult.children)
            extra = extra or {}
            extra["children"] = [child.as_tuple() for child in children]
        return extra

    def send_children(self, request: Request, children: list[Child]) -> None:
        root_id = request.headers.get("root_id") or request.id
        messages = []
        for child in children:
            messages.extend(chain_step_messages(self.app, child.signature, child.prepend,
                                                child.chain, parent_id=request.id,
                                                root_id=root_id))
        self.app.publish_many(messages)
        for message in messages:
            request.add_child(AsyncResult(message.headers["id"], app=self.app))

    def _run_traced(self, task: Task, request: Request) -> tuple[str, Any]:
        with self.tracing.running(request):  # type: ignore[union-attr]
            return Execution.run(self, task, request)

    async def _run_async_traced(self, task: Task, request: Request) -> tuple[str, Any]:
        with self.tracing.running(request):  # type: ignore[union-attr]
            return await Execution.run_async(self, task, request)

    # -- task transitions, noted while task events are on (fastq/worker/events.py) -------
    def note_transitions(self, record: Callable[[tuple], None]) -> None:
        """Hand each task's transitions to ``record`` as raw facts, until
        ``stop_noting``: ``("started", unix time, id)``, ``("succeeded", unix time, id,
        result repr, runtime)``, ``("rejected", unix time, id, requeue)``.

        The noting variants of ``_begin``, ``_succeeded`` and ``_failed`` are put on the
        instance, where they shadow the class's: with nobody noting, a task runs the
        class's code and pays nothing at all; while noting, one tuple per transition.
        Failures, retries and revokes are rare; their events come from the task signals.
        """
        self.record_transition = record
        self._begin = self._begin_noted  # type: ignore[method-assign]
        self._succeeded = self._succeeded_noted  # type: ignore[method-assign]
        self._failed = self._failed_noted  # type: ignore[method-assign]

    def stop_noting(self) -> None:
        for name in ("_begin", "_succeeded", "_failed"):
            self.__dict__.pop(name, None)
        self.record_transition = None
        self.started_at.clear()

    def _begin_noted(self, task: Task, request: Request) -> tuple | None:
        now = time.time()
        begun = Execution._begin(self, task, request)
        if begun is not None:  # not revoked meanwhile
            self.started_at[request.id] = now
            self.record_transition(("started", now, request.id))  # type: ignore[misc]
        return begun

    def _succeeded_noted(self, task: Task, request: Request, value: Any, ignore_result: bool,
                         started: float, previous: Request | None) -> tuple[str, Any]:
        outcome = Execution._succeeded(self, task, request, value, ignore_result, started,
                                       previous)
        runtime = time.perf_counter() - started
        self.started_at.pop(request.id, None)
        # the repr now, in the task's thread: a mutable or lazy result (a Django QuerySet)
        # must not be read from the events thread
        self.record_transition(  # type: ignore[misc]
            ("succeeded", time.time(), request.id, value_repr(value), runtime))
        return outcome

    def _failed_noted(self, task: Task, request: Request, exc: BaseException,
                      ignore_result: bool, hard: float | None, started: float,
                      previous: Request | None) -> tuple[str, Any]:
        outcome = Execution._failed(self, task, request, exc, ignore_result, hard, started,
                                    previous)
        self.started_at.pop(request.id, None)
        action = outcome[0]
        if action == REQUEUE or action == DEAD_LETTER:  # only a Reject ends so
            self.record_transition(  # type: ignore[misc]
                ("rejected", time.time(), request.id, action == REQUEUE))
        return outcome


__all__ = ["Executor", "ACK", "REQUEUE", "DEAD_LETTER", "DEFER",
           "revoked_error_dict", "not_registered_dict"]
