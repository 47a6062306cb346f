"""The consumer's hot path: the loop for synchronous pools (solo), settling, acking.

One file, two builds: ``_consumer_py.Consumer`` inherits this class as it is; ``setup.py``
also compiles the file with Cython as ``fastq._speedups._consumer_loop``, which the
compiled consumer (``fastq/_speedups/_consumer.pyx``) puts first among its bases. Why the
loop is compiled and the per-delivery vetting it calls is not: that file's docstring.
"""

from __future__ import annotations

import time

# absolute: compiled, this module is fastq._speedups._consumer_loop
from fastq.execution import DEAD_LETTER, REQUEUE
from fastq.worker.pools.base import RELEASE


class ConsumerLoop:
    """What every task passes through in ``Consumer`` (whose attributes it uses) with a
    synchronous pool: the loop, the settling of completions, the acks."""

    __slots__ = ()

    def _run_synchronous(self) -> None:
        """The loop for a pool that runs jobs inside ``submit`` (solo)."""
        broker, pool, window = self.broker, self.pool, self.window
        prepare, acks = self._prepare, self._acks
        adaptive = window.adaptive
        started = fetched = 0.0
        while not self._stop:
            pending = len(acks) or self.executor.pending_results
            if adaptive:
                started = time.monotonic()
            # self.queues is read at each fetch: add_consumer/cancel_consumer replace it
            batch = broker.fetch(self.queues, window.limit,
                                 0.0 if pending else self.idle_timeout)
            if not batch:
                if pending:
                    self.flush()
                continue
            if adaptive:
                fetched = time.monotonic()
                if pending:  # a fetch that did not wait for messages: a round trip
                    window.fetched(fetched - started)
            self.counters["received"] += len(batch)
            self._in_hand = batch
            jobs = []
            for delivery in batch:
                job = prepare(delivery)
                if job is not None:
                    jobs.append(job)
            if jobs:
                pool.submit(jobs, self.should_stop)
                if adaptive:
                    window.ran(len(jobs), time.monotonic() - fetched)
                self._settle(pool.completions())
            self._in_hand = []
            if acks.due(time.monotonic(), broker.ack_window):
                self.flush()

    def _settle(self, completions: list) -> None:
        """Gather the acks of finished tasks; release, requeue or dead-letter the others,
        each after the acks gathered before it."""
        for tags, request, action, argument in self._acks.settle(completions, time.monotonic()):
            self._send_acks(tags)
            tag = request.delivery.tag
            if action is RELEASE:
                self.broker.release_many((tag,))
                self.counters["released"] += 1
            elif action is REQUEUE:
                self.broker.reject(tag, requeue=True)
                self.counters["requeued"] += 1
            elif action is DEAD_LETTER:
                self._dead_letter(request.delivery, argument)

    def flush(self) -> None:
        """Store pending results, then ack the tasks they belong to."""
        self._send_acks(self._acks.take())

    def _send_acks(self, tags: list) -> None:
        replies = self.executor.take_replies()
        if replies is None:
            self.executor.flush_results()  # first: an acked task always has its result
            if tags:
                self.broker.ack_many(tags)
        elif replies or tags:
            # the results go first; without the broker's connection, by the backend's own
            if not self.broker.ack_many_with_replies(tags, replies) and replies:
                self.executor.send_replies(replies)
        if tags:
            self.counters["acked"] += len(tags)
