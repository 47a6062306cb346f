"""The consumer in pure Python: claim, decode, vet, dispatch, store results, ack in batches.

The compiled consumer (``fastq/_speedups/_consumer.pyx``) is this class with the compiled
builds of its loop (``_consumer_loop.py``) and ack decisions (``_ack_decisions.py``).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .. import protocol, signals
from ..app import unknown_task_message
from ..exceptions import MessageRejected, TaskNotRegistered
from ..middleware.ratelimit import TokenBucket, parse_rate
from ..states import FAILURE, REVOKED
from ..task import Request
from ._ack_decisions import AckBatch
from ._consumer_loop import ConsumerLoop
from .executor import not_registered_dict, revoked_error_dict
from .lifecycle import finished_before
from .prefetch import PrefetchWindow
from .revoked import RevokedSet

if TYPE_CHECKING:
    from ..app import App
    from ..brokers.base import Broker, Delivery
    from .executor import Executor
    from .pools.base import Pool

logger = logging.getLogger("fastq.worker")

# Receivers bound once: ``if _RECEIVED:`` is all a delivery pays when no one listens.
_RECEIVED = signals.task_received.receivers
_REVOKED = signals.task_revoked.receivers

#: ETAs closer than this (seconds) run now rather than going back to the broker.
ETA_SLACK = 0.002

#: Longest blocking wait on an idle broker, so stop requests are seen promptly.
IDLE_FETCH_TIMEOUT = 0.5

#: Longest wait on the broker while tasks run elsewhere: their completions (results,
#: acks) wait at most this long to be sent.
BUSY_FETCH_TIMEOUT = 0.005


class Consumer(ConsumerLoop):
    """Pulls deliveries from ``queues`` and runs them on ``pool`` until stopped.

    Acks are sent together every ``ack_batch_size`` tasks or ``ack_interval`` seconds,
    and whenever the broker has nothing more to give; results are stored just before
    the acks that cover them, so an acked task always has its result. Those decisions
    are ``AckBatch``'s (``_ack_decisions.py``); the loop for solo and the settling of
    completions are ``ConsumerLoop``'s (``_consumer_loop.py``).
    """

    #: The ack decisions' class; the compiled consumer sets their compiled build here.
    ack_batch_type: type[AckBatch] = AckBatch

    def __init__(self, app: App, broker: Broker, executor: Executor, pool: Pool,
                 queues: list[str], prefetch: int | PrefetchWindow, *,
                 ack_batch_size: int = 256,
                 ack_interval: float = 0.05, hostname: str = "fastq") -> None:
        self.app = app
        self.broker = broker
        self.executor = executor
        self.pool = pool
        self.queues = queues
        #: how many messages to hold; an int is a fixed window of that many
        self.window = prefetch if isinstance(prefetch, PrefetchWindow) \
            else PrefetchWindow(1, prefetch)
        self.ack_batch_size = max(1, ack_batch_size)
        self.ack_interval = ack_interval
        self.hostname = hostname
        # the App's registry and settings themselves, which it never replaces: a read
        # through the App, a class with __getattr__, takes CPython's slow path each time
        self._tasks = app.tasks
        self._conf = app.conf
        self.accept = _resolve_accept(app.conf.accept_content)
        self.max_redeliveries = app.conf.broker_max_redeliveries
        self.max_message_size = app.conf.worker_max_message_size
        #: the longest wait on an idle broker: stop requests are noticed within it
        self.idle_timeout = max(IDLE_FETCH_TIMEOUT, broker.idle_fetch_timeout or 0.0)
        self.state = "starting"
        self.counters = {"received": 0, "acked": 0, "dead_lettered": 0, "requeued": 0,
                         "released": 0, "deferred": 0, "bad_signatures": 0}
        self._stop = False
        self._acks = self.ack_batch_type(self.ack_batch_size, ack_interval, _EarlyAcked)
        self._buckets: dict[str, TokenBucket | None] = {}
        self._in_hand: list[Delivery] = []
        #: handing-off pools: deliveries submitted and not yet settled, by tag
        self._in_flight: dict[Any, Delivery] = {}
        self._cold = False
        #: called once the loop starts consuming (the worker writes its health file)
        self.on_consuming: Any = None
        # revoke (fastq/worker/control.py): the executor's set, filled by the control listener
        revoked = getattr(executor, "revoked", None)
        self.revoked = revoked if revoked is not None else RevokedSet()
        self._revoked_ids = self.revoked.ids
        self._revoked_stamps = self.revoked.stamps
        # task events take receipts from _prepare rather than from the task_received signal
        executor.consumer_notes_receipts = True
        # rpc:// results can leave with the acks, in one write (Executor.take_replies)
        if hasattr(broker, "ack_many_with_replies"):
            executor.reply_broker = broker

    # -- control ---------------------------------------------------------------------
    def stop(self, cold: bool = False) -> None:
        """Stop consuming. Warm: running tasks finish, prefetched messages go back
        unprocessed. Cold: running tasks are not waited for; they are requeued."""
        self._stop = True
        self._cold = self._cold or cold

    def should_stop(self) -> bool:
        return self._stop

    # -- the loop --------------------------------------------------------------------
    def run(self) -> None:
        self.state = "consuming"
        if self.on_consuming is not None:
            self.on_consuming()
        try:
            if self.pool.synchronous:
                self._run_synchronous()
            else:
                self._run_handing_off()
        finally:
            self.state = "stopping"
            self._shutdown()
            self.state = "stopped"

    def _run_handing_off(self) -> None:
        """The loop for pools that run jobs elsewhere (threads, greenlets, an event loop):
        keep up to the window's limit of messages in hand, settle completions as they come."""
        broker, pool, window = self.broker, self.pool, self.window
        prepare, executor, in_flight = self._prepare, self.executor, self._in_flight
        acks = self._acks
        adaptive = window.adaptive
        # the adaptive window learns a task's duration from the slot-seconds the pool was
        # busy (tasks held beyond the slots are waiting, not running) per completion
        busy, mark = 0.0, time.monotonic()
        while not self._stop:
            done = pool.completions()
            if done:
                if adaptive:
                    now = time.monotonic()
                    window.ran(len(done),
                               busy + min(len(in_flight), window.slots) * (now - mark))
                    busy, mark = 0.0, now
                for request, _action, _argument in done:
                    in_flight.pop(request.delivery.tag, None)
                self._settle(done)
            room = window.limit - len(in_flight)
            if room > 0:
                if done or len(acks) or executor.pending_results:
                    timeout = 0.0
                elif in_flight:
                    timeout = BUSY_FETCH_TIMEOUT  # completions are not seen while we wait
                else:
                    timeout = self.idle_timeout
                started = time.monotonic() if adaptive else 0.0
                # read at each fetch: add_consumer/cancel_consumer replace the list
                batch = pool.fetch(broker, self.queues, room, timeout)
                if batch:
                    if adaptive:
                        now = time.monotonic()
                        if timeout == 0.0:
                            window.fetched(now - started)
                        busy += min(len(in_flight), window.slots) * (now - mark)
                        mark = now
                    self.counters["received"] += len(batch)
                    jobs = []
                    for delivery in batch:
                        job = prepare(delivery)
                        if job is not None:
                            jobs.append(job)
                            # counted against prefetch either way; an early-acked one has
                            # nothing left to give back at shutdown
                            in_flight[delivery.tag] = (
                                None if type(job[1]) is _EarlyAcked else delivery)
                    if jobs:
                        pool.submit(jobs, self.should_stop)
                elif len(acks) or executor.pending_results:
                    self.flush()  # the broker has nothing more: send what is done
            else:
                pool.wait(self.ack_interval if len(acks) else IDLE_FETCH_TIMEOUT)
            if acks.due(time.monotonic(), broker.ack_window):
                self.flush()

    def _shutdown(self) -> None:
        """Leave nothing behind: flush what finished, give back what never started, and
        requeue what a cold shutdown interrupted."""
        pool = self.pool
        if not pool.synchronous:
            try:
                pool.close(cold=self._cold)  # warm: waits for the running tasks
            except Exception:
                logger.exception("the pool did not close cleanly")
        running = {id(request.delivery) for request in pool.running_requests()}
        completions = pool.completions()
        try:
            self._settle(completions)
            self.flush()
        except Exception:
            logger.exception("could not ack finished tasks on shutdown; they will be redelivered")
        finished = {id(r.delivery) for r, _a, _b in completions}
        unsettled = []
        for delivery in [*self._in_hand, *filter(None, self._in_flight.values())]:
            if id(delivery) in finished:
                continue
            if id(delivery) in running:
                # interrupted mid-task (cold shutdown): it runs again, counted as a delivery
                try:
                    self.broker.reject(delivery.tag, requeue=True)
                    self.counters["requeued"] += 1
                except Exception:
                    logger.exception("could not requeue %r; its lease will expire", delivery)
                continue
            unsettled.append(delivery.tag)
        self._in_hand = []
        self._in_flight.clear()
        if unsettled:
            try:
                self.broker.release_many(unsettled)
                self.counters["released"] += len(unsettled)
            except Exception:
                logger.exception("could not release %d prefetched message(s); their leases "
                                 "will expire and they will be redelivered", len(unsettled))

    # -- per delivery ----------------------------------------------------------------
    def _prepare(self, delivery: Delivery) -> tuple | None:
        """Decode and vet one delivery; the job to run, or None when handled here."""
        if delivery.redeliveries and finished_before(self.executor, delivery):
            self._ack_now(delivery)  # its worker died after the task ended: don't rerun
            return None
        if delivery.redeliveries > self.max_redeliveries:
            self._dead_letter(delivery, f"redelivery-limit: delivered {delivery.redeliveries + 1} "
                                        f"times (broker_max_redeliveries={self.max_redeliveries})")
            return None
        try:
            headers, args, kwargs, embed = protocol.decode_task(
                delivery.headers, delivery.properties, delivery.body, self.accept,
                self.max_message_size)
        except MessageRejected as exc:
            self._dead_letter(delivery, f"{exc.reason}: {exc.detail}")
            task_id = delivery.headers.get("id")
            if exc.reason == "invalid-eta" and isinstance(task_id, str):
                self.executor.store_now(task_id, FAILURE, {
                    "exc_type": "InvalidTaskError", "exc_message": [exc.detail],
                    "exc_module": "celery.exceptions"})
            signals.task_rejected.send(sender=self, message=delivery, exc=exc)
            return None
        request = Request(headers, args, kwargs, embed, delivery, self.hostname)
        # revoke: not run, REVOKED stored, acked; stamps are read only once some are revoked
        if request.id in self._revoked_ids or (
                self._revoked_stamps and self.revoked.stamped(headers)):
            self.executor.store_now(request.id, REVOKED, revoked_error_dict("revoked"),
                                    request=request)
            self._ack_now(delivery)
            logger.info("Task %s[%s] revoked: not run", request.name, request.id)
            if _REVOKED:
                self._send_revoked(request, expired=False)
            return None
        task = self._tasks.get(request.name)
        if task is None:
            message = unknown_task_message(request.name, self.app.tasks)
            self.executor.store_now(request.id, FAILURE, not_registered_dict(request.name),
                                    request=request)
            self._dead_letter(delivery, f"unknown-task: {message}")
            signals.task_unknown.send(sender=self, message=delivery,
                                      exc=TaskNotRegistered(message), name=request.name,
                                      id=request.id)
            return None
        if headers.get("expires") is not None or headers.get("eta") is not None:
            if not self._on_time(delivery, request):
                return None
        rate = self._buckets.get(request.name, False)
        if rate is not False or task.rate_limit or self._conf.task_default_rate_limit:
            if not self._within_rate(delivery, request, task):
                return None
        record = self.executor.record_transition
        if record is not None:  # task events on: the receipt, as a tuple for their thread
            record(("received", time.time(), request))
        if _RECEIVED:
            signals.task_received.send(sender=self, request=request)
        acks_late = task.acks_late
        if acks_late is None:
            acks_late = self._conf.task_acks_late
        if not acks_late:  # at-most-once, as asked: the ack goes out before the task runs
            self.broker.ack_many((delivery.tag,))
            self.counters["acked"] += 1
            return (task, _EarlyAcked(request))
        return (task, request)

    def _on_time(self, delivery: Delivery, request: Request) -> bool:
        now = datetime.now(timezone.utc)
        expires = request.headers.get("expires")
        if expires is not None and protocol.parse_datetime(expires) < now:
            logger.info("Task %s[%s] expired at %s: revoked, not run",
                        request.name, request.id, expires)
            self.executor.store_now(request.id, REVOKED, revoked_error_dict("expired"),
                                    request=request)
            self._ack_now(delivery)
            if _REVOKED:
                self._send_revoked(request, expired=True)
            return False
        eta = request.headers.get("eta")
        if eta is not None:
            due = protocol.parse_datetime(eta).timestamp()
            if due - time.time() > ETA_SLACK:
                self.broker.defer(delivery, due)
                self.counters["deferred"] += 1
                return False
        return True

    def _within_rate(self, delivery: Delivery, request: Request, task: Any) -> bool:
        bucket = self._buckets.get(request.name, False)
        if bucket is False:
            rate = parse_rate(task.rate_limit or self.app.conf.task_default_rate_limit)
            bucket = self._buckets[request.name] = TokenBucket(rate) if rate else None
        if bucket is None:
            return True
        wait = bucket.take()
        if wait == 0.0:
            return True
        # over the limit: back to the broker until a token is due, not held in memory
        self.broker.defer(delivery, time.time() + wait)
        self.counters["deferred"] += 1
        return False

    def _send_revoked(self, request: Request, expired: bool) -> None:
        signals.task_revoked.send(sender=self.app.tasks.get(request.name), request=request,
                                  terminated=False, signum=None, expired=expired)

    def _ack_now(self, delivery: Delivery) -> None:
        self._acks.add(delivery.tag, time.monotonic())

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        logger.error("message %s (task %r, id %r) from queue %r moved to the dead letters: %s",
                     delivery.tag, delivery.headers.get("task"), delivery.headers.get("id"),
                     delivery.queue, reason)
        self.broker.dead_letter(delivery.tag, reason)
        self.counters["dead_lettered"] += 1
        if reason.startswith("signature"):  # worth its own count: someone may be forging
            self.counters["bad_signatures"] += 1


class _EarlyAcked(Request):
    """A request whose message was acked before it ran (``acks_late=False``)."""

    __slots__ = ()

    def __init__(self, request: Request) -> None:
        for name in Request.__slots__:
            setattr(self, name, getattr(request, name))


def _resolve_accept(accept_content: Any) -> frozenset:
    from ..serialization import resolve_accept

    return resolve_accept(accept_content)
