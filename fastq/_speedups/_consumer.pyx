# cython: language_level=3
"""The consumer loop compiled with Cython; its pure-Python twin is fastq/worker/_consumer_py.py.

The class extends the twin and replaces only the per-batch loop of synchronous pools
(solo: the hot path) and the settling of completions, with C-typed locals and no attribute lookups per delivery; every decision
about a single delivery (``_prepare``: redelivery limit, decoding, unknown tasks,
expiry, ETA, rate limits) is the twin's own, so both implementations agree by
construction and the shared tests run against both.
"""

import time

from fastq.worker import _consumer_py
from fastq.worker._consumer_py import _EarlyAcked
from fastq.worker.executor import ACK, DEAD_LETTER, REQUEUE
from fastq.worker.pools.base import RELEASE

cdef object _monotonic = time.monotonic
cdef object _EARLY = _EarlyAcked
cdef object _ACK = ACK
cdef object _RELEASE = RELEASE
cdef object _REQUEUE = REQUEUE
cdef object _DEAD_LETTER = DEAD_LETTER


class Consumer(_consumer_py.Consumer):
    """``fastq.worker._consumer_py.Consumer`` with its hot loop compiled."""

    def _run_synchronous(self):
        cdef list batch, jobs, acks
        cdef dict counters = self.counters
        cdef Py_ssize_t ack_batch_size
        cdef double ack_interval = self.ack_interval
        cdef int prefetch = self.prefetch
        cdef double idle_timeout = self.idle_timeout
        cdef object delivery, job
        broker, pool, queues, executor = self.broker, self.pool, self.queues, self.executor
        prepare = self._prepare
        fetch = broker.fetch
        submit = pool.submit
        completions = pool.completions
        should_stop = self.should_stop
        settle = self._settle
        while not self._stop:
            pending = self._acks or executor.pending_results
            batch = fetch(queues, prefetch, 0.0 if pending else idle_timeout)
            if not batch:
                if pending:
                    self.flush()
                continue
            counters["received"] += len(batch)
            self._in_hand = batch
            jobs = []
            for delivery in batch:
                job = prepare(delivery)
                if job is not None:
                    jobs.append(job)
            if jobs:
                submit(jobs, should_stop)
                settle(completions())
            self._in_hand = []
            acks = self._acks
            ack_batch_size = self._ack_limit()
            if acks and (len(acks) >= ack_batch_size
                         or _monotonic() - self._oldest_ack >= ack_interval):
                self.flush()

    def _settle(self, completions):
        cdef list acks = self._acks
        cdef tuple item
        for item in completions:
            request, action, argument = item
            if type(request) is _EARLY:
                continue  # its ack went out before it ran
            if action is _ACK:
                if not acks:
                    self._oldest_ack = _monotonic()
                acks.append(request.delivery.tag)
            elif action is _RELEASE:
                self.flush()
                self.broker.release_many((request.delivery.tag,))
                self.counters["released"] += 1
            elif action is _REQUEUE:
                self.flush()
                self.broker.reject(request.delivery.tag, requeue=True)
                self.counters["requeued"] += 1
            elif action is _DEAD_LETTER:
                self.flush()
                self._dead_letter(request.delivery, argument)
