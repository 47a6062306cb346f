"""The consumer loop in pure Python: claim, decode, dispatch, store results, ack in batches."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .. import protocol
from ..app import unknown_task_message
from ..exceptions import MessageRejected
from ..middleware.ratelimit import TokenBucket, parse_rate
from ..result import FAILURE, REVOKED
from ..task import Request
from .control import RevokedSet
from .executor import ACK, DEAD_LETTER, REQUEUE, not_registered_dict, revoked_error_dict
from .lifecycle import finished_before
from .pools.base import RELEASE

if TYPE_CHECKING:
    from ..app import App
    from ..brokers.base import Broker, Delivery
    from .executor import Executor
    from .pools.base import Pool

logger = logging.getLogger("fastq.worker")

#: ETAs closer than this (seconds) run now rather than going back to the broker.
ETA_SLACK = 0.002

#: Longest blocking wait on an idle broker, so stop requests are seen promptly.
IDLE_FETCH_TIMEOUT = 0.5

#: Longest wait on the broker while tasks run elsewhere: their completions (results,
#: acks) wait at most this long to be sent.
BUSY_FETCH_TIMEOUT = 0.005


class Consumer:
    """Pulls deliveries from ``queues`` and runs them on ``pool`` until stopped.

    Acks are sent together every ``ack_batch_size`` tasks or ``ack_interval`` seconds,
    and whenever the broker has nothing more to give; results are stored just before
    the acks that cover them, so an acked task always has its result.
    """

    def __init__(self, app: App, broker: Broker, executor: Executor, pool: Pool,
                 queues: list[str], prefetch: int, *, ack_batch_size: int = 256,
                 ack_interval: float = 0.05, hostname: str = "fastq") -> None:
        self.app = app
        self.broker = broker
        self.executor = executor
        self.pool = pool
        self.queues = queues
        self.prefetch = max(1, prefetch)
        self.ack_batch_size = max(1, ack_batch_size)
        self.ack_interval = ack_interval
        self.hostname = hostname
        self.accept = _resolve_accept(app.conf.accept_content)
        self.max_redeliveries = app.conf.broker_max_redeliveries
        #: the longest wait on an idle broker: stop requests are noticed within it
        self.idle_timeout = max(IDLE_FETCH_TIMEOUT, broker.idle_fetch_timeout or 0.0)
        self.state = "starting"
        self.counters = {"received": 0, "acked": 0, "dead_lettered": 0, "requeued": 0,
                         "released": 0, "deferred": 0}
        self._stop = False
        self._acks: list[Any] = []
        self._oldest_ack = 0.0
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

    def _run_synchronous(self) -> None:
        """The loop for a pool that runs jobs inside ``submit`` (solo)."""
        broker, pool, queues, prefetch = self.broker, self.pool, self.queues, self.prefetch
        prepare = self._prepare
        while not self._stop:
            pending = self._acks or self.executor.pending_results
            batch = broker.fetch(queues, prefetch, 0.0 if pending else self.idle_timeout)
            if not batch:
                if pending:
                    self.flush()
                continue
            self.counters["received"] += len(batch)
            self._in_hand = batch
            jobs = []
            for delivery in batch:
                job = prepare(delivery)
                if job is not None:
                    jobs.append(job)
            if jobs:
                pool.submit(jobs, self.should_stop)
                self._settle(pool.completions())
            self._in_hand = []
            if self._acks and (len(self._acks) >= self._ack_limit()
                               or time.monotonic() - self._oldest_ack >= self.ack_interval):
                self.flush()

    def _run_handing_off(self) -> None:
        """The loop for pools that run jobs elsewhere (threads, greenlets, an event loop):
        keep up to ``prefetch`` messages in hand, settle completions as they come."""
        broker, pool, queues, prefetch = self.broker, self.pool, self.queues, self.prefetch
        prepare, executor, in_flight = self._prepare, self.executor, self._in_flight
        while not self._stop:
            done = pool.completions()
            if done:
                for request, _action, _argument in done:
                    in_flight.pop(request.delivery.tag, None)
                self._settle(done)
            room = prefetch - len(in_flight)
            if room > 0:
                if done or self._acks or executor.pending_results:
                    timeout = 0.0
                elif in_flight:
                    timeout = BUSY_FETCH_TIMEOUT  # completions are not seen while we wait
                else:
                    timeout = self.idle_timeout
                batch = pool.fetch(broker, queues, room, timeout)
                if batch:
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
                elif self._acks or executor.pending_results:
                    self.flush()  # the broker has nothing more: send what is done
            else:
                pool.wait(self.ack_interval if self._acks else IDLE_FETCH_TIMEOUT)
            if self._acks and (len(self._acks) >= self._ack_limit()
                               or time.monotonic() - self._oldest_ack >= self.ack_interval):
                self.flush()

    def _ack_limit(self) -> int:
        """Acks to gather before sending: the batch size, within the broker's window."""
        window = self.broker.ack_window
        return self.ack_batch_size if window is None else min(self.ack_batch_size, window)

    def _settle(self, completions: list) -> None:
        acks = self._acks
        for request, action, argument in completions:
            if type(request) is _EarlyAcked:
                continue  # its ack went out before it ran
            tag = request.delivery.tag
            if action is ACK:
                if not acks:
                    self._oldest_ack = time.monotonic()
                acks.append(tag)
            elif action is RELEASE:
                self.flush()
                self.broker.release_many((tag,))
                self.counters["released"] += 1
            elif action is REQUEUE:
                self.flush()
                self.broker.reject(tag, requeue=True)
                self.counters["requeued"] += 1
            elif action is DEAD_LETTER:
                self.flush()
                self._dead_letter(request.delivery, argument)

    def flush(self) -> None:
        """Store pending results, then ack the tasks they belong to."""
        self.executor.flush_results()
        if self._acks:
            # emptied in place: a _settle in progress keeps appending to this same list
            acks = self._acks[:]
            self._acks.clear()
            self.broker.ack_many(acks)
            self.counters["acked"] += len(acks)

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
                delivery.headers, delivery.properties, delivery.body, self.accept)
        except MessageRejected as exc:
            self._dead_letter(delivery, f"{exc.reason}: {exc.detail}")
            task_id = delivery.headers.get("id")
            if exc.reason == "invalid-eta" and isinstance(task_id, str):
                self.executor.store_now(task_id, FAILURE, {
                    "exc_type": "InvalidTaskError", "exc_message": [exc.detail],
                    "exc_module": "celery.exceptions"})
            return None
        request = Request(headers, args, kwargs, embed, delivery, self.hostname)
        if request.id in self._revoked_ids:  # revoke: not run, REVOKED stored, acked
            self.executor.store_now(request.id, REVOKED, revoked_error_dict("revoked"),
                                    request=request)
            self._ack_now(delivery)
            logger.info("Task %s[%s] revoked: not run", request.name, request.id)
            return None
        task = self.app.tasks.get(request.name)
        if task is None:
            message = unknown_task_message(request.name, self.app.tasks)
            self.executor.store_now(request.id, FAILURE, not_registered_dict(request.name),
                                    request=request)
            self._dead_letter(delivery, f"unknown-task: {message}")
            return None
        if headers.get("expires") is not None or headers.get("eta") is not None:
            if not self._on_time(delivery, request):
                return None
        rate = self._buckets.get(request.name, False)
        if rate is not False or task.rate_limit or self.app.conf.task_default_rate_limit:
            if not self._within_rate(delivery, request, task):
                return None
        acks_late = task.acks_late
        if acks_late is None:
            acks_late = self.app.conf.task_acks_late
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

    def _ack_now(self, delivery: Delivery) -> None:
        if not self._acks:
            self._oldest_ack = time.monotonic()
        self._acks.append(delivery.tag)

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        logger.error("message %s (task %r, id %r) from queue %r moved to the dead letters: %s",
                     delivery.tag, delivery.headers.get("task"), delivery.headers.get("id"),
                     delivery.queue, reason)
        self.broker.dead_letter(delivery.tag, reason)
        self.counters["dead_lettered"] += 1


class _EarlyAcked(Request):
    """A request whose message was acked before it ran (``acks_late=False``)."""

    __slots__ = ()

    def __init__(self, request: Request) -> None:
        for name in Request.__slots__:
            setattr(self, name, getattr(request, name))


def _resolve_accept(accept_content: Any) -> frozenset:
    from ..serialization import resolve_accept

    return resolve_accept(accept_content)
